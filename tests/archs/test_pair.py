"""derain.default's form, ``prn_pair``: each image goes to the light- or the heavy-rain network by a classifier on
its rain features, decided once per image (tiles never disagree), and a mixed batch equals its images one by one."""

from __future__ import annotations

import torch

import derain
from derain.archs.prenet import rain_features


def _pair() -> torch.nn.Module:
    torch.manual_seed(0)
    pair = derain.create_model("prn_pair", stages=2, channels=8).eval()
    pair.router_weight.zero_()
    pair.router_weight[1] = 1.0          # heavy when the mean 1x7 row excess is above the mean
    pair.router_mean[1] = 0.05
    pair.router_scale.fill_(0.01)
    return pair


def test_features_and_routing() -> None:
    pair = _pair()
    flat = torch.full((1, 3, 40, 60), 0.4)
    streaks = flat.clone()
    streaks[..., ::4] = 1.0               # bright one-pixel columns: rain-like excess across rows
    assert rain_features(torch.cat([flat, streaks])).shape == (2, 9)
    assert pair.route(torch.cat([flat, streaks])).tolist() == [False, True]


def test_mixed_batch_equals_one_by_one() -> None:
    pair = _pair()
    x = torch.rand(3, 3, 24, 32)
    heavy = torch.tensor([True, False, True])
    with torch.no_grad():
        both = pair(x, heavy=heavy).image
        for i in range(3):
            alone = (pair.heavy if heavy[i] else pair.light)(x[i:i + 1]).image
            torch.testing.assert_close(both[i:i + 1], alone)


def test_tiles_of_one_image_share_one_decision() -> None:
    pair = _pair()
    restorer = derain.Restorer(pair, name="pair", device="cpu")
    calls: list[object] = []
    real_route = pair.route
    pair.route = lambda x: calls.append(x.shape) or real_route(x)  # type: ignore[method-assign]
    seen: list[object] = []
    hook = pair.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("heavy")), with_kwargs=True)
    try:
        restorer(torch.rand(1, 3, 96, 130), tile=48, overlap=16, scale=1)
    finally:
        hook.remove()
    assert calls == [torch.Size([1, 3, 96, 130])]     # decided once, on the whole image
    assert len(seen) > 1 and all(s is not None and torch.equal(s, seen[0]) for s in seen)


def _gated_pair(strength: float) -> torch.nn.Module:
    """A pair whose gate gives every image ``strength`` (bias only), so the expected output is known."""
    pair = _pair()
    pair.gate_bias.fill_(float(torch.logit(torch.tensor(strength, dtype=torch.float64))))
    return pair


def test_gate_off_leaves_the_output_and_old_pairs_load_with_it_off(tmp_path) -> None:
    from derain.weights.store import load_weights, write_weights

    pair = _pair()
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        out = pair(x).image.clamp(0, 1)
        assert pair.strength(x, out).tolist() == [1.0, 1.0]
        assert pair.gated(x, out) is out
    # a pair written before the gate existed: no gate_* keys; it loads strictly, with the gate off
    old = {k: v for k, v in pair.state_dict().items() if not k.startswith("gate_")}
    write_weights(tmp_path / "old.safetensors", model="prn_pair", options={"stages": 2, "channels": 8},
                  state_dict=old, name="old")
    loaded = load_weights(tmp_path / "old.safetensors").build()
    assert float(loaded.gate_bias) == 30.0 and not loaded.gate_weight.any()
    assert derain.Restorer(loaded, name="old", device="cpu")(x, scale=1).equal(
        derain.Restorer(pair, name="new", device="cpu")(x, scale=1))


def test_gate_removes_its_share_of_the_rain_layer_once_per_image() -> None:
    pair = _gated_pair(0.25)
    restorer = derain.Restorer(pair, name="pair", device="cpu")
    x = torch.rand(1, 3, 96, 130)
    with torch.no_grad():
        full = pair(x).image.clamp(0, 1)
    got = restorer(x, scale=1)
    torch.testing.assert_close(got, x + 0.25 * (full - x), atol=1e-6, rtol=0)
    # tiled: the gate sees the whole tiled output once, not each tile (a feature-dependent gate would differ)
    calls: list[object] = []
    real = pair.share
    pair.share = lambda a, b: calls.append(a.shape) or real(a, b)  # type: ignore[method-assign]
    restorer(x, tile=48, overlap=16, scale=1)
    assert calls == [torch.Size([1, 3, 96, 130])]
    # a number overrides the gate: that share of the network's whole rain layer
    assert torch.equal(restorer(x, scale=1, strength=1), full)
    torch.testing.assert_close(restorer(x, scale=1, strength=0.5), x + 0.5 * (full - x), atol=2e-6, rtol=0)
    assert torch.equal(restorer(x, scale=1, strength="auto"), got)


def test_the_cli_applies_the_gate_on_every_path(tmp_path) -> None:
    """``derain run`` with a gated pair: the plain path, the one that also saves the stages (one forward, then
    ``Restorer.finish``) and ``--strength 1`` (the network's whole output)."""
    import numpy as np

    from derain.cli import main
    from derain.io import read_image, write_image
    from derain.weights.store import write_weights

    pair = _gated_pair(0.25)
    weights = tmp_path / "pair.safetensors"
    write_weights(weights, model="prn_pair", options={"stages": 2, "channels": 8}, state_dict=pair.state_dict(),
                  name="gated")
    x = (torch.rand(1, 3, 40, 56) * 255).round() / 255
    write_image(tmp_path / "in.png", x)
    with torch.no_grad():
        full = pair(x).image.clamp(0, 1)
    runs = {"auto": [], "stages": ["--save-stages"], "one": ["--strength", "1"]}
    for name, extra in runs.items():
        assert main(["run", str(tmp_path / "in.png"), "-o", str(tmp_path / name), "-w", str(weights),
                     "--device", "cpu", "--scale", "1", *extra]) == 0
    got = {name: read_image(tmp_path / name / "in.png").image for name in runs}
    assert torch.equal(got["auto"], got["stages"])
    want = {"auto": x + 0.25 * (full - x), "one": full}
    for name, image in want.items():
        assert float((got[name] - image).abs().max()) <= 0.5 / 255 + 1e-6, name
    assert not np.array_equal(got["auto"].numpy(), got["one"].numpy())


def test_gate_depends_on_what_was_removed() -> None:
    """A gate that weighs the mean magnitude of the removed layer: removing more from the same input raises the
    strength; removing nothing gives the bias alone."""
    from derain.archs.prenet import gate_features, residual_features

    pair = _pair()
    pair.gate_weight.zero_()
    pair.gate_weight[9] = 1.0               # feature 9: mean |x - out| (residual_features' first)
    pair.gate_scale.fill_(0.01)
    pair.gate_bias.fill_(-2.0)
    x = torch.full((3, 3, 20, 30), 0.5)
    outs = torch.stack([x[0], x[1] - 0.01, x[2] - 0.05])
    assert residual_features(x, outs).shape == (3, 7) and gate_features(x, outs).shape == (3, 16)
    s = pair.strength(x, outs)
    assert s[0] == torch.sigmoid(torch.tensor(-2.0)) and s[0] < s[1] < s[2]


def test_a_local_gate_starts_as_the_image_level_gate_and_bands_are_exact(tmp_path) -> None:
    """``local_gate=True``: a per-pixel logit added to the image-level gate's. Untrained (its last convolution at
    zero) it changes nothing; trained, the share varies across the image, tall images done in bands of rows equal
    the whole image, and the file records the option, so the pair loads as it was written."""
    from derain.archs.prenet import LocalGate
    from derain.weights.store import load_weights, write_weights

    plain = _gated_pair(0.25)
    local = derain.create_model("prn_pair", stages=2, channels=8, local_gate=True).eval()
    local.load_state_dict({**plain.state_dict(), **{f"local.{k}": v for k, v in local.local.state_dict().items()}})
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        out = plain(x).image.clamp(0, 1)
        assert local.share(x, out).shape == (1, 1, 40, 56)
        torch.testing.assert_close(local.gated(x, out), plain.gated(x, out), atol=1e-6, rtol=0)
        torch.nn.init.normal_(local.local.body[-1].weight, std=5.0)
        share = local.share(x, out)
        assert float(share.std()) > 0.01  # it varies across the image now
        torch.testing.assert_close(local.gated(x, out), x + share * (out - x))
        tall, tall_out = torch.rand(1, 3, 2 * LocalGate.BAND + 50, 24), torch.rand(1, 3, 2 * LocalGate.BAND + 50, 24)
        # the same sums up to float rounding (a convolution's order of summation depends on the shape)
        torch.testing.assert_close(local.local(tall, tall_out), local.local(tall, tall_out, banded=False),
                                   atol=1e-5, rtol=0)
    write_weights(tmp_path / "local.safetensors", model="prn_pair",
                  options={"stages": 2, "channels": 8, "local_gate": True}, state_dict=local.state_dict(),
                  name="local")
    loaded = load_weights(tmp_path / "local.safetensors").build()
    assert isinstance(loaded.local, LocalGate)
    restorer = derain.Restorer(local, name="local", device="cpu")
    assert torch.equal(derain.Restorer(loaded, name="loaded", device="cpu")(x, scale=1), restorer(x, scale=1))
    torch.testing.assert_close(restorer(x, scale=1), (x + share * (out - x)).clamp(0, 1), atol=1e-6, rtol=0)


def test_evaluate_measures_what_run_writes(tmp_path) -> None:
    """``derain.evaluate`` (``derain eval``) measures a gated pair with its gate, as ``derain run`` writes it,
    not the networks' raw output; the saved images are the measured ones."""
    from types import SimpleNamespace

    from derain.io import read_image
    from derain.metrics import measure

    pair = _gated_pair(0.25)
    restorer = derain.Restorer(pair, name="pair", device="cpu")
    g = torch.Generator().manual_seed(3)
    data = [SimpleNamespace(name=f"{i}.png", rainy=torch.rand(3, 40, 56, generator=g),
                            clean=torch.rand(3, 40, 56, generator=g)) for i in range(2)]
    report = derain.evaluate(restorer, data, protocol="matlab-y", quantize="round", save_images=tmp_path / "out")
    for item, score in zip(data, report.per_image, strict=True):
        gated = restorer(item.rainy[None], scale=1)
        want = float(measure(gated, item.clean[None], protocol="matlab-y", quantize="round")[0][0])
        raw = float(measure(pair(item.rainy[None]).image.clamp(0, 1), item.clean[None], protocol="matlab-y",
                            quantize="round")[0][0])
        assert abs(score.psnr - want) < 1e-6 and abs(score.psnr - raw) > 0.01
        saved = read_image(tmp_path / "out" / item.name).image
        assert float((saved - gated).abs().max()) <= 0.5 / 255 + 1e-6
