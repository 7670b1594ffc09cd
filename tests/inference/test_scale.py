"""Deraining at the rain's scale: images at the training scale are untouched by ``auto``; a rain layer found at a
coarser scale is removed at full resolution; the scale is chosen once per video; bad scales are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import derain
from derain.cli import main
from derain.inference.scale import (
    check_scale,
    derain_scaled,
    downsample,
    estimate_scale,
    guided_upsample,
    largest_scale,
)
from derain.io import read_image, write_image
from derain.weights.store import write_weights


@pytest.fixture(scope="module")
def restorer(tmp_path_factory: pytest.TempPathFactory) -> derain.Restorer:
    torch.manual_seed(0)
    model = derain.create_model("prn", channels=4, stages=2)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    write_weights(path, model="prn", options={"channels": 4, "stages": 2}, state_dict=model.state_dict())
    return derain.load(path, device="cpu")


@pytest.mark.parametrize("size", [(321, 481), (481, 321), (320, 480), (641, 900), (64, 2000), (1, 1)])
def test_auto_keeps_images_up_to_twice_the_training_size_exact(restorer, size: tuple[int, int]) -> None:
    x = torch.rand(1, 3, *size)
    assert estimate_scale(x) == 1
    assert torch.equal(restorer(x), restorer(x, scale=1))
    assert torch.equal(restorer(x, scale="auto"), restorer(x, scale=1))


def test_auto_follows_the_size_of_larger_images() -> None:
    assert [largest_scale(h, w) for h, w in [(642, 963), (963, 1443), (1280, 1920), (2848, 4288), (4000, 6000)]] \
        == [2, 3, 3, 8, 12]
    assert largest_scale(10**6, 10**6) == 16


def test_a_layer_found_at_a_coarser_scale_is_removed_at_full_resolution() -> None:
    torch.manual_seed(1)
    clean = F.interpolate(torch.rand(1, 3, 8, 12), size=(96, 144), mode="bicubic", align_corners=False).clamp(0, 1)
    haze = torch.full_like(clean, 0.1)
    rainy = (clean * 0.9 + haze).clamp(0, 1)

    def oracle(t: torch.Tensor) -> torch.Tensor:  # a "model" that knows the (smooth) layer exactly
        return ((t - 0.1) / 0.9).clamp(0, 1)

    out = derain_scaled(oracle, rainy, 4, upsample="bicubic")
    assert out.shape == rainy.shape
    assert (out - clean).abs().mean() < 0.01 < (rainy - clean).abs().mean()
    assert torch.equal(derain_scaled(oracle, rainy, 1), oracle(rainy))
    untouched = rainy.clone()
    derain_scaled(oracle, rainy, 3)
    assert torch.equal(rainy, untouched)  # the input is never written


def test_guided_upsampling_follows_the_full_resolution_edges() -> None:
    """A layer that is exactly ``a * image + b`` comes back exactly, with the full-resolution image's detail."""
    torch.manual_seed(2)
    full = torch.rand(1, 3, 64, 96)
    low = downsample(full, 4)
    layer_low = 0.5 * low + 0.1
    back = guided_upsample(layer_low, low, full, radius=2, eps=1e-6)
    torch.testing.assert_close(back, 0.5 * full + 0.1, atol=2e-3, rtol=0)
    bicubic = F.interpolate(layer_low, size=full.shape[-2:], mode="bicubic", align_corners=False)
    assert (bicubic - (0.5 * full + 0.1)).abs().mean() > 10 * (back - (0.5 * full + 0.1)).abs().mean()


@pytest.mark.parametrize("bad", [0, 17, -1, 2.5, "x", True, None])
def test_bad_scales_are_clear_errors(bad: object) -> None:
    with pytest.raises(derain.InputError, match="scale must be 'auto' or a whole number from 1 to 16"):
        check_scale(bad)
    assert check_scale("3") == 3 and check_scale("auto") == "auto"


def test_run_and_eval_take_scale(restorer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "big.png"
    write_image(src, F.interpolate(read_image(derain.sample_paths()[0]).image, scale_factor=3, mode="bicubic",
                                   align_corners=False).clamp(0, 1))
    weights = str(restorer.weights.source)
    assert main(["run", str(src), "-o", str(tmp_path / "auto.png"), "-w", weights]) == 0
    assert main(["run", str(src), "-o", str(tmp_path / "one.png"), "-w", weights, "--scale", "1"]) == 0
    x = read_image(src).image
    assert estimate_scale(x) > 1
    auto, one = read_image(tmp_path / "auto.png").image, read_image(tmp_path / "one.png").image
    assert not torch.equal(auto, one)
    assert main(["run", str(src), "-o", str(tmp_path / "bad.png"), "-w", weights, "--scale", "zero"]) == 1
    assert "scale must be" in capsys.readouterr().err
    assert main(["run", str(src), "-o", str(tmp_path / "st.png"), "-w", weights, "--save-stages"]) == 1
    assert "pass --scale 1" in capsys.readouterr().err


def test_video_chooses_its_scale_once(restorer, monkeypatch: pytest.MonkeyPatch) -> None:
    from derain.inference import batch

    frames = [torch.rand(1, 3, 700, 990) for _ in range(5)]
    frames[3] = torch.rand(1, 3, 700, 990) * 0.1  # any frame-wise estimate could differ on such a frame
    seen: list[object] = []

    class Writer:
        def __init__(self, *a, **k) -> None:
            self.count = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def write(self, frame) -> None:
            self.count += 1

    class Info:
        fps, width, height, audio_streams, frames, rotation = 25, 990, 700, 0, 5, 0

    monkeypatch.setattr(batch, "probe", lambda src: Info)
    monkeypatch.setattr(batch, "frames", lambda src: iter(frames))
    monkeypatch.setattr(batch, "VideoWriter", Writer)
    real_call = derain.Restorer.__call__

    def spy(self, x, **kw):
        seen.append(kw.get("scale"))
        return real_call(self, x, **kw)

    monkeypatch.setattr(derain.Restorer, "__call__", spy)
    count = batch.derain_video(restorer, "in.mp4", "out.mp4", batch=2, scale="auto")
    assert count == 5 and seen == [2, 2, 2]  # three batches, one integer scale chosen from the first frame
