"""JDNet contracts: official key layout and parameter count, forward/backward at odd sizes, the pairwise
self-attention against a literal per-pixel evaluation of its definition, band (row-chunk) invariance, ablations."""

from __future__ import annotations

import math

import pytest
import torch

from derain.archs.jdnet import PRESETS, JDNet
from derain.nn.pairwise import PairwiseSelfAttention, position_grid
from derain.types import DerainOutput
from tests.conftest import official_jdnet_state

PARAMS = 4_681_859


def _tiny(**kw: object) -> JDNet:
    return JDNet(units=2, **kw)  # type: ignore[arg-type]


def test_parameter_count() -> None:
    assert sum(p.numel() for p in JDNet().parameters()) == PARAMS


def test_official_keys_load_strictly() -> None:
    """A state dict built from jdnet_keys.txt (DataParallel names, random values) loads strictly once unprefixed."""
    official = official_jdnet_state()
    assert len(official) == 2084 and all(k.startswith("module.") for k in official)
    state = {k.removeprefix("module."): v for k, v in official.items()}
    model = JDNet()
    assert list(model.state_dict()) == list(state)
    model.load_state_dict(state, strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_forward_backward_odd_size_tiny() -> None:
    torch.manual_seed(0)
    model = _tiny()
    x = torch.rand(2, 3, 19, 23, requires_grad=True)
    out = model(x)
    assert isinstance(out, DerainOutput) and out.image.shape == x.shape and out.attention == ()
    out.image.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_default_config_forward_backward_at_67x45() -> None:
    """The released configuration (32 units, 4,681,859 parameters) forward and backward at an odd size; the
    inference path (no autograd) gives the same image."""
    torch.manual_seed(0)
    model = JDNet()
    x = torch.rand(1, 3, 45, 67, requires_grad=True)
    out = model(x)
    assert out.image.shape == (1, 3, 45, 67) and torch.isfinite(out.image).all()
    out.image.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model(x).image, out.image.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (3, 9), (4, 4), (17, 33)])
def test_any_size(size: tuple[int, int]) -> None:
    model = _tiny().eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, *size)).image.shape == (1, 3, *size)


def test_output_is_input_minus_rain() -> None:
    model = _tiny().eval()
    with torch.no_grad():
        model.exitBlock[0].weight.zero_()
        model.exitBlock[0].bias.fill_(-1.0)  # R = lrelu(-1) = -0.2 everywhere
        x = torch.rand(1, 3, 8, 9)
        torch.testing.assert_close(model(x).image, x + 0.2)


def test_ablation_presets() -> None:
    keys = {name: set(JDNet(units=1, **opts).state_dict()) for name, opts in PRESETS.items()}
    assert any(".san." in k for k in keys["jdnet"]) and any(".scn." in k for k in keys["jdnet"])
    assert not any(".san." in k or ".scn." in k for k in keys["jdnet_r1"])
    assert not any(".san." in k for k in keys["jdnet_r2"]) and any(".scn." in k for k in keys["jdnet_r2"])
    for opts in PRESETS.values():
        model = JDNet(units=1, **opts).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 3, 7, 6)).image.shape == (1, 3, 7, 6)


def test_rejects_unsupported_widths() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        JDNet(channels=16)


def _reflect(i: int, n: int) -> int:
    if i < 0:
        return -i
    if i >= n:
        return 2 * (n - 1) - i
    return i


def _attention_by_definition(sam: PairwiseSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Literal per-pixel evaluation: explicit reflected indices, subtraction relation, position encoding,
    softmax over the k*k footprint, value channel c weighted by weight map c % Cw."""
    batch, _, height, width = x.shape
    ksz, half = sam.kernel_size, sam.kernel_size // 2
    q, k, v = sam.conv1(x), sam.conv2(x), sam.conv3(x)
    ys = torch.linspace(-1, 1, height, dtype=x.dtype)
    xs = torch.linspace(-1, 1, width, dtype=x.dtype)
    grid = torch.stack([xs.view(1, width).expand(height, width), ys.view(height, 1).expand(height, width)])
    pe = torch.einsum("oc,chw->ohw", sam.conv_p.weight[:, :, 0, 0], grid) + sam.conv_p.bias.view(2, 1, 1)
    w1, w2, b2 = sam.conv_w[1].weight[:, :, 0, 0], sam.conv_w[2].weight[:, :, 0, 0], sam.conv_w[2].bias
    maps = w2.shape[0]
    out = torch.zeros(batch, v.shape[1], height, width, dtype=x.dtype)
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                logits = torch.zeros(maps, ksz * ksz, dtype=x.dtype)
                taps = []
                for t in range(ksz * ksz):
                    ni, nj = _reflect(i + t // ksz - half, height), _reflect(j + t % ksz - half, width)
                    taps.append((ni, nj))
                    feat = torch.cat([q[b, :, i, j] - k[b, :, ni, nj], pe[:, i, j] - pe[:, ni, nj]])
                    hidden = w1 @ torch.nn.functional.leaky_relu(feat, 0.2)
                    logits[:, t] = w2 @ hidden + b2
                weights = torch.softmax(logits, dim=1)
                for c in range(v.shape[1]):
                    out[b, c, i, j] = sum(weights[c % maps, t] * v[b, c, ni, nj] for t, (ni, nj) in enumerate(taps))
    return out


def _attention_by_unfold(sam: PairwiseSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """The unfold formulation of specs/jdnet.md (footprints gathered with F.unfold on reflection-padded maps)."""
    batch, _, height, width = x.shape
    ksz, half = sam.kernel_size, sam.kernel_size // 2

    def unfold(t: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(t, (half,) * 4, mode="reflect")
        return torch.nn.functional.unfold(padded, ksz).view(t.shape[0], t.shape[1], ksz * ksz, height * width)

    q, k, v = sam.conv1(x), sam.conv2(x), sam.conv3(x)
    pe = sam.conv_p(position_grid(height, width, dtype=x.dtype, device=x.device))
    rel = q.view(batch, q.shape[1], 1, -1) - unfold(k)
    prel = (pe.view(1, 2, 1, -1) - unfold(pe)).expand(batch, -1, -1, -1)
    w = torch.softmax(sam.conv_w(torch.cat([rel, prel], 1)), dim=2)  # the 1x1 convs on the 4-D tensor
    out = (w.repeat(1, v.shape[1] // w.shape[1], 1, 1) * unfold(v)).sum(2)
    return out.view(batch, v.shape[1], height, width)


def test_pairwise_attention_matches_its_definition() -> None:
    torch.manual_seed(0)
    # two weight maps (share 2 of 4 value channels) to exercise the c % Cw tiling; a 5x6 image so that the 7x7
    # footprint reflects on every side
    sam = PairwiseSelfAttention(in_channels=5, rel_channels=2, out_channels=4, share_channels=2).double()
    for p in sam.parameters():
        p.data.normal_(0, 0.7)
    x = torch.randn(2, 5, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        fast, literal, unfolded = sam(x), _attention_by_definition(sam, x), _attention_by_unfold(sam, x)
    torch.testing.assert_close(unfolded, literal, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast, literal, rtol=1e-10, atol=1e-12)


def test_row_bands_do_not_change_the_result() -> None:
    torch.manual_seed(0)
    whole = PairwiseSelfAttention(chunk_rows=10_000).double()
    x = torch.randn(2, 32, 11, 9, dtype=torch.float64, requires_grad=True)
    ref = whole(x)
    (gx_ref,) = torch.autograd.grad(ref.sum(), x)
    for rows in (1, 2, 4):
        banded = PairwiseSelfAttention(chunk_rows=rows).double()
        banded.load_state_dict(whole.state_dict())
        got = banded(x)
        (gx,) = torch.autograd.grad(got.sum(), x)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
        torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)
    assert whole.band_rows(1, 2000, 3000) == 10_000
    assert 1 <= PairwiseSelfAttention().band_rows(1, 2000, 3000) < math.ceil(2000 / 4)
    # training (gradients tracked) takes larger bands: a JDNet training batch in one band, inference in several
    attention = PairwiseSelfAttention()
    assert attention.band_rows(12, 64, 64, training=True) == 64 > attention.band_rows(12, 64, 64)


def test_jdnet_chunk_rows_option_is_passed_down() -> None:
    torch.manual_seed(0)
    a, b = _tiny().eval(), _tiny(chunk_rows=3).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 10, 8)
    with torch.no_grad():
        torch.testing.assert_close(a(x).image, b(x).image, rtol=1e-6, atol=1e-6)
    assert all(m.chunk_rows == 3 for m in b.modules() if isinstance(m, PairwiseSelfAttention))


@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_path_equals_autograd_path(channels_last: bool) -> None:
    """Without autograd the dense fusion runs as matrix products over one feature buffer: same result as the
    concatenating path that training uses, in both memory formats and for a batch of two."""
    torch.manual_seed(0)
    model = JDNet(units=3).eval()
    x = torch.rand(2, 3, 21, 26)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast = model(x).image
    slow = model(x).image.detach()
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("whole_image", [False, True])
def test_mixed_precision_training_is_as_close_as_the_concatenating_path(whole_image: bool) -> None:
    """Under autocast the dense fusion sees low-precision features and float32 weights, forward and backward (a
    mixed-dtype matrix product used to fail there). Against the float32 result, its values and gradients are as
    close as those of the official formulation under the same autocast; also with the attention's whole-image
    form (what training on a GPU runs)."""
    import copy

    import derain.archs.jdnet as jd

    torch.manual_seed(0)
    model = JDNet(units=3).train()
    reference = copy.deepcopy(model)
    jd.use_reference(reference)
    for module in model.modules():
        if isinstance(module, PairwiseSelfAttention):
            module.whole_image_training = whole_image
    x = torch.rand(2, 3, 20, 24)
    exact = _grads(reference, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast, slow = _grads(model, x), _grads(reference, x)
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in fast[1][1:])

    def error(got: tuple[torch.Tensor, list[torch.Tensor]]) -> tuple[float, float]:
        flat = torch.cat([(a.float() - b).flatten() for a, b in zip(got[1], exact[1], strict=True)])
        return float((got[0].float() - exact[0]).abs().max()), float(torch.linalg.norm(flat))

    (out_fast, grad_fast), (out_slow, grad_slow) = error(fast), error(slow)
    assert out_fast <= 1.5 * out_slow + 1e-3 and grad_fast <= 1.5 * grad_slow + 1e-6, (error(fast), error(slow))


def test_joint_unit_equals_the_official_cat_then_convolve() -> None:
    """The per-level 1x1 (applied before nearest up-sampling) gives the official concat -> conv11 result."""
    import torch.nn.functional as F

    from derain.archs.jdnet import JointUnit

    torch.manual_seed(0)
    unit = JointUnit(channels=32)
    x = torch.randn(2, 32, 23, 37)
    with torch.no_grad():
        t = unit.san(x)
        levels, r = [t], t
        for block in unit.res_list:
            r = block(r)
            levels.append(F.interpolate(r, size=t.shape[2:], mode="nearest"))
        expected = unit.scn(unit.conv11(torch.cat(levels, dim=1)) + t)
        torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)


def _grads(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x = x.detach().requires_grad_()
    out = model(x)
    image = out.image if isinstance(out, DerainOutput) else out
    weights = torch.linspace(-1, 1, image.numel(), dtype=image.dtype).view_as(image)  # a non-uniform upstream gradient
    return image.detach(), list(torch.autograd.grad((image * weights).sum(), [x, *model.parameters()]))


@pytest.mark.parametrize(("shape", "rows"), [((2, 32, 11, 9), None), ((2, 32, 11, 9), 4), ((3, 32, 16, 20), 5)])
def test_attention_backward_equals_autograd_through_the_windows(shape: tuple[int, ...], rows: int | None) -> None:
    """The hand-written backward (training's path) against autograd through the k*k shifted windows: the same
    values and the same gradients for the input and every parameter, whole or in bands, in float64."""
    torch.manual_seed(0)
    sam = PairwiseSelfAttention(chunk_rows=rows).double()
    for p in sam.parameters():
        p.data.normal_(0, 0.7)
    x = torch.randn(*shape, dtype=torch.float64)
    sam.reference_backward = True
    ref_out, ref_grads = _grads(sam, x)
    sam.reference_backward = False
    out, grads = _grads(sam, x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for (name, _), got, want in zip([("x", None), *sam.named_parameters()], grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=name)


def test_whole_image_training_form_has_the_windows_gradients() -> None:
    """Training on an accelerator runs the whole-image form (one-hot footprint convolution, autograd): the same
    values and gradients as the banded window loop, in float64; chosen automatically off the CPU only."""
    torch.manual_seed(0)
    sam = PairwiseSelfAttention(chunk_rows=4).double()
    for p in sam.parameters():
        p.data.normal_(0, 0.7)
    x = torch.randn(2, 32, 11, 9, dtype=torch.float64)
    sam.reference_backward = True
    ref_out, ref_grads = _grads(sam, x)
    sam.reference_backward, sam.whole_image_training = False, True
    out, grads = _grads(sam, x)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for (name, _), got, want in zip([("x", None), *sam.named_parameters()], grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=name)
    sam.whole_image_training = None
    assert sam._whole_image_training(torch.empty(1, device="meta"))
    assert not sam._whole_image_training(torch.empty(1))


def test_attention_backward_passes_gradcheck() -> None:
    from derain.nn.pairwise import _PairwiseBand

    torch.manual_seed(0)
    sam = PairwiseSelfAttention(in_channels=5, rel_channels=2, out_channels=4, share_channels=2).double()
    x = torch.randn(1, 5, 5, 6, dtype=torch.float64, requires_grad=True)
    calls = []
    original = _PairwiseBand.apply

    def counting(*args: object) -> torch.Tensor:
        calls.append(1)
        return original(*args)

    _PairwiseBand.apply = counting  # type: ignore[method-assign]
    try:
        assert torch.autograd.gradcheck(sam, (x,), eps=1e-6, atol=1e-7)
    finally:
        _PairwiseBand.apply = original  # type: ignore[method-assign]
    assert calls, "the hand-written backward was not exercised"


@pytest.mark.parametrize(("size", "channels_last"), [((21, 26), False), ((32, 48), False), ((32, 48), True),
                                                     ((9, 12), False)])
def test_jdnet_training_path_equals_the_reference_formulation(size: tuple[int, int], channels_last: bool) -> None:
    """Training's fast path (dense buffer with its own backward, the attention's own backward, broadcast nearest
    up-sampling) against the plain autograd formulations (torch.cat, window-by-window autograd, F.interpolate):
    values and every gradient, float64, sizes that divide the scale levels and sizes that do not."""
    import derain.archs.jdnet as jd

    torch.manual_seed(0)
    model = JDNet(units=3).double()
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    out, grads = _grads(model, x)
    jd.use_reference(model)
    fast_path = jd._plus_nearest_up
    jd._plus_nearest_up = lambda full, part, inplace=False: full + torch.nn.functional.interpolate(  # type: ignore
        part, size=full.shape[2:], mode="nearest")
    try:
        ref_out, ref_grads = _grads(model, x)
    finally:
        jd._plus_nearest_up = fast_path
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    for (name, _), got, want in zip([("x", None), *model.named_parameters()], grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("full", "part"), [((16, 24), (4, 6)), ((16, 24), (8, 12)), ((17, 24), (5, 6)),
                                             ((16, 24), (16, 24))])
def test_plus_nearest_up_equals_interpolate(full: tuple[int, int], part: tuple[int, int], channels_last: bool) -> None:
    from derain.archs.jdnet import _plus_nearest_up

    torch.manual_seed(0)
    a, b = torch.randn(2, 3, *full, dtype=torch.float64), torch.randn(2, 3, *part, dtype=torch.float64)
    if channels_last:
        a = a.contiguous(memory_format=torch.channels_last)
    want = a + torch.nn.functional.interpolate(b, size=full, mode="nearest")
    torch.testing.assert_close(_plus_nearest_up(a, b), want, rtol=0, atol=0)
    torch.testing.assert_close(_plus_nearest_up(a.clone(), b, inplace=True), want, rtol=0, atol=0)
