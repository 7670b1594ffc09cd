"""SPANet's real-rain method: clean images from static rain sequences, the dataset builder and review decisions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from derain.cli import main
from derain.data import PairedFolder
from derain.data.rainbuild import (
    Decision,
    SequenceEntry,
    Source,
    build_dataset,
    build_sequence,
    decide,
    read_decisions,
    read_json,
    read_manifest,
)
from derain.data.realrain import clean_from_frames, frame_shift, frames_for_density, rain_density
from derain.errors import InputError
from derain.io import read_image, write_image
from derain.metrics import psnr
from tests.conftest import frames_folder, synthetic_video, video_background


@pytest.mark.parametrize("kind", ["normal", "dense"])
def test_our_clean_image_beats_mean_median_and_mode(kind: str) -> None:
    bg = video_background()[None]
    est = clean_from_frames(synthetic_video(kind), limit=100)

    def score(x: torch.Tensor) -> float:
        return float(psnr(x[None], bg, data_range=1.0))

    ours = score(est.clean)
    assert ours > max(score(est.mean), score(est.median), score(est.mode)), kind
    if kind == "normal":
        assert ours >= 45.0
    assert 0 < est.p <= 1 and est.frames == 100


def test_density_picks_n() -> None:
    assert frames_for_density(rain_density(synthetic_video("normal", 20))) == 100
    assert frames_for_density(rain_density(synthetic_video("dense", 20))) == 200
    assert frames_for_density(0.0) == 20


def test_frame_shift() -> None:
    a = video_background(96, 96)
    assert frame_shift(a, a) == (0, 0)
    assert frame_shift(a, torch.roll(a, shifts=(4, -6), dims=(1, 2))) == (4, -6)


def test_build_review_and_list(tmp_path: Path) -> None:
    static = frames_folder(tmp_path / "street", synthetic_video("normal", 30))
    moving = frames_folder(tmp_path / "pan", [torch.roll(f, shifts=2 * k, dims=3)
                                                for k, f in enumerate(synthetic_video("normal", 30))])
    out = tmp_path / "ds"
    assert main(["build-dataset", str(static), str(moving), "-o", str(out), "--frames", "24"]) == 0
    manifest = read_json(out / "manifest.json")
    assert manifest["street"]["status"] == "built" and manifest["street"]["frames_used"] == 24
    assert manifest["pan"]["status"] == "moving camera" and "camera moves" in manifest["pan"]["reason"]
    assert not (out / "pan").exists()  # never a blurry "clean" image of a moving camera
    assert (out / "real_world.txt").read_text() == ""  # nothing accepted yet
    decide(out, "street", "accepted")
    pairs = PairedFolder(out / "real_world.txt")
    assert len(pairs) == 24 and pairs[0].clean.shape == (3, 64, 80)
    # decisions survive a restart: a new build keeps them and the list
    build_dataset([static], out, frames=24)
    assert read_json(out / "decisions.json")["street"] == {"decision": "accepted"}
    assert len(PairedFolder(out / "real_world.txt")) == 24
    assert main(["review", str(out), "--reject", "street"]) == 0
    assert (out / "real_world.txt").read_text() == ""  # a rejected sequence never reaches the list
    assert main(["review", str(out), "--rebuild", "street", "--more", "10"]) == 0
    build_dataset([static], out, frames=18)
    assert read_json(out / "manifest.json")["street"]["frames_used"] == 28
    with pytest.raises(InputError, match="no sequence named 'nope'"):
        decide(out, "nope", "accepted")


def test_bad_sequences_get_one_line_errors(tmp_path: Path) -> None:
    short = frames_folder(tmp_path / "short", synthetic_video("normal", 5))
    mixed = frames_folder(tmp_path / "mixed", synthetic_video("normal", 4))
    write_image(mixed / "f999.png", torch.rand(1, 3, 10, 10))
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    out = tmp_path / "ds"
    manifest = build_dataset([short, mixed], out, frames=8)
    assert "fewer than the 8 needed" in manifest["short"].reason and manifest["short"].status == "failed"
    assert "all frames must have one size" in manifest["mixed"].reason
    pytest.importorskip("av", reason="video input needs PyAV")
    assert main(["build-dataset", str(tmp_path / "broken.mp4"), "-o", str(out)]) == 0
    assert "not a readable video" in read_json(out / "manifest.json")["broken"]["reason"]


def test_manifest_and_decisions_are_typed_records(tmp_path: Path) -> None:
    static = frames_folder(tmp_path / "street", synthetic_video("normal", 12))
    out = tmp_path / "ds"
    manifest = build_dataset([static], out, frames=10, patch=32)
    assert read_manifest(out) == manifest  # what is written is what was returned, field for field
    entry = manifest["street"]
    assert entry.built and entry.frames_used == 10 and len(entry.pairs) == 10 and entry.patch == 32
    assert SequenceEntry.from_json(entry.to_json(), where="x") == entry
    assert read_decisions(out) == {}
    assert decide(out, "street", "rebuild", more=20) == Decision("rebuild", 20)
    assert read_decisions(out) == {"street": Decision("rebuild", 20)}
    assert read_json(out / "decisions.json") == {"street": {"decision": "rebuild", "more": 20}}  # the file format
    failed = SequenceEntry(source="a.mp4", status="failed", reason="why")
    assert failed.to_json() == {"source": "a.mp4", "status": "failed", "reason": "why"} and not failed.built
    (out / "manifest.json").write_text('{"street": {"status": "built"}}')
    with pytest.raises(InputError, match=r"manifest\.json: street: not a sequence entry"):
        read_manifest(out)
    (out / "decisions.json").write_text('{"street": {"decision": "rebuild", "more": "lots"}}')
    with pytest.raises(InputError, match="more must be a number"):
        read_decisions(out)


def test_patches_for_training(tmp_path: Path) -> None:
    static = frames_folder(tmp_path / "street", synthetic_video("normal", 12))
    out = tmp_path / "ds"
    command = ["build-dataset", str(static), "-o", str(out), "--frames", "10", "--patch", "32", "--stride", "24"]
    assert main(command) == 0
    entry = read_json(out / "manifest.json")["street"]
    # 64x80 frames: rows start at 0, 24 and 32 (flush with the border), columns at 0, 24 and 48
    assert entry["patches"] == [f"{y:04d}_{x:04d}" for y in (0, 24, 32) for x in (0, 24, 48)]
    clean = read_image(out / "street" / "clean.png").image
    crop = read_image(out / "street" / "patches" / "clean" / "0024_0048.png").image
    assert torch.equal(crop, clean[..., 24:56, 48:80])
    rain = read_image(out / "street" / "rain" / "0003.png").image
    assert torch.equal(read_image(out / "street" / "patches" / "rain" / "0003_0032_0024.png").image,
                       rain[..., 32:64, 24:56])
    assert (out / "real_world_patches.txt").read_text() == ""  # nothing accepted yet
    decide(out, "street", "accepted")
    pairs = PairedFolder(out / "real_world_patches.txt")
    assert len(pairs) == 10 * 9 and pairs[0].rainy.shape == (3, 32, 32)
    decide(out, "street", "rejected")
    assert (out / "real_world_patches.txt").read_text() == ""
    porch = Source("porch", frames_folder(tmp_path / "porch", synthetic_video("normal", 4)))
    with pytest.raises(InputError, match="patches of 100x100 do not fit frames of 80x64"):
        build_sequence(porch, tmp_path / "ds2", frames=3, patch=100)


def test_build_dataset_reads_a_phone_video_upright(tmp_path: Path) -> None:
    from tests.conftest import phone_video

    upright = synthetic_video("normal", 24)  # a 64x80 static scene in rain, as the person filming saw it
    clip = phone_video(tmp_path / "porch.mp4", upright, rotation=-90)  # stored 80x64, turned by players
    out = tmp_path / "ds"
    assert main(["build-dataset", str(clip), "-o", str(out), "--frames", "20"]) == 0
    assert read_json(out / "manifest.json")["porch"]["status"] == "built"
    clean = read_image(out / "porch" / "clean.png").image
    assert clean.shape == (1, 3, 64, 80)  # upright, not the stored 80x64
    assert float(psnr(clean, video_background()[None], data_range=1.0)) > 35
    rain = sorted((out / "porch" / "rain").iterdir())
    assert len(rain) == 20 and read_image(rain[0]).image.shape == (1, 3, 64, 80)
