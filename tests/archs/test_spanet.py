"""SPANet contracts: official layout and parameter count, forward/backward at an odd size, strict loading of the
official checkpoint, scan == loop with the official weights on a real crop, and a reference number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from derain.archs.spanet import SPANet
from derain.types import DerainOutput

PARAMS = 283_716


def _official(shared_dir: Path) -> dict[str, torch.Tensor]:
    path = shared_dir / "weights" / "official" / "spanet" / "latest.pth"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return torch.load(path, map_location="cpu", weights_only=True)["net"]


def _bgr(path: Path) -> torch.Tensor:
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)[None]  # the network was trained on cv2 BGR


def _y_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR on the BT.601 luma of BGR images in [0, 1] (8-bit rounding, as the reference numbers)."""
    a, b = (torch.round(t.clamp(0, 1) * 255) / 255 for t in (a, b))
    coef = torch.tensor([24.966, 128.553, 65.481]).view(1, 3, 1, 1) / 255
    ya, yb = (a * coef).sum(1), (b * coef).sum(1)
    return float(10 * torch.log10(1 / (ya - yb).square().mean()))


def test_parameter_count_and_keys(shared_dir: Path) -> None:
    model = SPANet()
    assert sum(p.numel() for p in model.parameters()) == PARAMS
    listing = shared_dir / "specs" / "keys" / "spanet_keys.txt"
    expected = [line.split()[0] for line in listing.read_text().splitlines() if line.startswith("  ")]
    assert list(model.state_dict()) == expected
    shapes = {line.split()[0]: line.split("(")[1].split(")")[0] for line in listing.read_text().splitlines()
              if line.startswith("  ")}
    for key, tensor in model.state_dict().items():
        assert tuple(tensor.shape) == tuple(int(v) for v in shapes[key].split(",") if v.strip()), key


def test_forward_backward_odd_size() -> None:
    torch.manual_seed(0)
    model = SPANet()
    x = torch.rand(1, 3, 37, 53, requires_grad=True)
    out = model(x)
    assert isinstance(out, DerainOutput) and out.image.shape == x.shape and out.stages == (out.image,)
    assert len(out.attention) == 4
    assert all(a.shape == (1, 1, 37, 53) and bool(((a > 0) & (a < 1)).all()) for a in out.attention)
    (out.image.mean() + out.attention[0].mean()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    sam = model.SAM1
    assert sam.irnn1.up_weight.weight.grad is not None and sam.conv_out.weight.grad is not None
    assert sam.attention_layer.conv1.weight.grad is None  # inert branch, as in the official code


def test_options_change_only_what_they_should() -> None:
    torch.manual_seed(1)
    base = SPANet().eval()
    x = torch.rand(1, 3, 12, 10)
    others = {
        "boundary_relu": SPANet(boundary_relu=False),
        "direction_attention": SPANet(direction_attention=True),
        "loop": SPANet(irnn_method="loop"),
    }
    with torch.no_grad():
        ref = base(x).image
        for name, model in others.items():
            model.load_state_dict(base.state_dict(), strict=True)
            got = model.eval()(x).image
            if name == "loop":
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
            else:
                assert not torch.allclose(got, ref), name


def test_official_checkpoint_loads_strictly(shared_dir: Path) -> None:
    state = _official(shared_dir)
    assert len(state) == 79
    SPANet().load_state_dict(state, strict=True)


def test_official_weights_scan_equals_loop_and_derain_a_crop(shared_dir: Path) -> None:
    state = _official(shared_dir)
    data = shared_dir / "data" / "rain100L"
    rain = _bgr(data / "rain" / "001.png")[:, :, 150:214, 150:211]
    clean = _bgr(data / "norain" / "001.png")[:, :, 150:214, 150:211]
    outputs = []
    for method in ("scan", "loop"):
        model = SPANet(irnn_method=method).eval()
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            outputs.append(model(rain))
    torch.testing.assert_close(outputs[0].image, outputs[1].image, rtol=1e-5, atol=1e-5)
    for a, b in zip(outputs[0].attention, outputs[1].attention, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    gain = _y_psnr(outputs[0].image, clean) - _y_psnr(rain, clean)
    assert gain > 1.0, f"derained crop is not closer to the clean image (gain {gain:.2f} dB)"


@pytest.mark.slow
def test_official_weights_reproduce_reference_psnr(shared_dir: Path) -> None:
    """Full Rain100L 001.png against the per-image reference (boundary_relu=True, the official CUDA IRNN)."""
    state = _official(shared_dir)
    table = shared_dir / "reference" / "perimg_rain100L_spanet_latest_round.tsv"
    reference = {row.split("\t")[0]: float(row.split("\t")[1]) for row in table.read_text().splitlines()[1:]}
    data = shared_dir / "data" / "rain100L"
    model = SPANet().eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model(_bgr(data / "rain" / "001.png")).image
    assert _y_psnr(out, _bgr(data / "norain" / "001.png")) == pytest.approx(reference["001.png"], abs=2e-3)
