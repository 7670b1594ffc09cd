"""The inference product: the Restorer's input kinds, tiling, and derain run over a corpus of bad inputs."""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import derain
from derain.inference.tiling import run_tiled, tile_starts
from derain.io import read_image, write_image
from derain.weights.store import write_weights
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = derain.create_model("prn", channels=4, stages=2)
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    write_weights(path, model="prn", options={"channels": 4, "stages": 2}, state_dict=model.state_dict())
    return path


@pytest.fixture(scope="module")
def restorer(tiny_weights: Path) -> derain.Restorer:
    return derain.load(tiny_weights, device="cpu")


def test_input_kinds_come_back_as_they_went_in(restorer: derain.Restorer) -> None:
    rng = np.random.default_rng(0)
    x = torch.rand(1, 3, 21, 34)
    ref = restorer(x)
    assert ref.shape == x.shape and ref.dtype == torch.float32 and 0 <= float(ref.min()) <= float(ref.max()) <= 1
    assert torch.equal(restorer(x[0]), ref[0])
    rgba = (rng.random((21, 34, 4)) * 255).astype(np.uint8)
    out = restorer(rgba)
    assert out.shape == rgba.shape and out.dtype == np.uint8 and np.array_equal(out[..., 3], rgba[..., 3])
    assert np.abs(out[..., :3].astype(int) - np.asarray(derain.io.from_tensor(
        restorer(derain.io.to_tensor(rgba[..., :3])))).astype(int)).max() == 0
    grey16 = (rng.random((21, 34)) * 65535).astype(np.uint16)
    out = restorer(grey16)
    assert out.shape == grey16.shape and out.dtype == np.uint16
    floats = rng.random((21, 34, 3)).astype(np.float32)
    out = restorer(floats)
    assert out.dtype == np.float32 and out.shape == floats.shape
    pil = Image.fromarray(rgba, "RGBA")
    out = restorer(pil)
    assert isinstance(out, Image.Image) and out.mode == "RGBA" and out.size == pil.size
    assert isinstance(restorer(Image.fromarray(rgba[..., 0], "L")), Image.Image)
    with pytest.raises(derain.InputError, match=r"cannot derain a list"):
        restorer([1, 2, 3])
    with pytest.raises(derain.InputError, match=r"expected \(H, W\) or \(H, W, C\)"):
        restorer(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(derain.InputError, match=r"expected \[0, 1\] \(divide 8-bit data by 255"):
        restorer(torch.full((1, 3, 8, 8), 255.0))


def test_tile_layout_and_blending_is_exact_for_pointwise_models() -> None:
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    assert tile_starts(30, 40, 10) == [0]
    x = torch.rand(2, 3, 53, 77)
    out = run_tiled(lambda t: t * 0.5 + 0.1, x, tile=24, overlap=8)
    assert torch.allclose(out, x * 0.5 + 0.1, atol=1e-6)  # weights normalise to 1 everywhere
    with pytest.raises(derain.InputError, match="overlap must be in"):
        run_tiled(lambda t: t, x, tile=16, overlap=16)


def test_tiled_close_to_untiled_with_receptive_field_overlap(restorer: derain.Restorer) -> None:
    x = read_image(derain.sample_paths()[0]).image
    whole = restorer(x)
    tiled = restorer(x, tile=128, overlap=48)  # 2 stages x 13 convs: a receptive-field radius of 26
    assert float((whole - tiled).abs().max()) <= 2 / 255


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _corpus(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Good inputs (name -> expected output name) and bad ones (name -> why) in ``folder``."""
    rng = np.random.default_rng(1)
    rgb = (rng.random((24, 30, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "plain.png")
    Image.fromarray(rgb).save(folder / "photo.jpg", quality=90)
    Image.fromarray(rgb[:1, :1]).save(folder / "one_pixel.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    write_image(folder / "deep.png", torch.rand(1, 3, 20, 20), bit_depth=16)
    Image.fromarray((rng.random((20, 22, 4)) * 255).astype(np.uint8), "RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb[..., 0], "L").save(folder / "grey.png")
    Image.fromarray(rgb).save(folder / "really_a_jpeg.png", format="JPEG")  # wrong extension, good content
    os.makedirs(folder / "nested" / "deeper")
    Image.fromarray(rgb).save(folder / "nested" / "deeper" / "inside.png")
    Image.fromarray(rgb).save(os.fsencode(folder) + b"/caf\xe9.png", format="PNG")  # not UTF-8
    good = {"plain.png": "plain.png", "photo.jpg": "photo.jpg", "one_pixel.png": "one_pixel.png",
            "cmyk.jpg": "cmyk.jpg", "deep.png": "deep.png", "alpha.png": "alpha.png", "grey.png": "grey.png",
            "really_a_jpeg.png": "really_a_jpeg.png", "nested/deeper/inside.png": "nested/deeper/inside.png",
            "caf\\xe9.png": "caf\\xe9.png"}
    full = (folder / "plain.png").read_bytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 2])
    (folder / "empty.png").write_bytes(b"")
    corrupt = bytearray((folder / "photo.jpg").read_bytes())
    corrupt[200:260] = b"\x00" * 60
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + bytes(40))
    (folder / "text.jpg").write_text("this is not an image\n")
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0))
    (folder / "bomb.png").write_bytes(bomb + _png_chunk(b"IEND", b""))
    (folder / "dangling.png").symlink_to(folder / "gone.png")
    bad = {"truncated.png": "truncated", "empty.png": "empty", "corrupt.jpg": "corrupt", "text.jpg": "not an image",
           "bomb.png": "exceeds the limit", "dangling.png": "broken symbolic link"}
    return good, bad


def _digest(folder: Path) -> dict[bytes, str]:
    out = {}
    for root, _, files in os.walk(os.fsencode(folder)):
        for name in files:
            p = os.path.join(root, name)
            if not os.path.exists(p):
                continue
            with open(p, "rb") as f:
                out[p] = hashlib.sha256(f.read()).hexdigest()
    return out


def test_run_over_a_corpus_of_bad_inputs(tiny_weights: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    good, bad = _corpus(src)
    before = _digest(src)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "derain", "run", str(src), str(tmp_path / "missing.png"),
                           "-o", str(out), "-w", str(tiny_weights), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for name, why in bad.items():
        lines = [line for line in proc.stderr.splitlines() if name in line]
        assert lines and why in lines[0], (name, proc.stderr)
    assert "missing.png: no such file or folder" in proc.stderr
    assert f"{len(good)} done, 0 skipped" in proc.stdout and f"{len(bad) + 1} failed" in proc.stdout
    assert _digest(src) == before  # no input touched
    made = {os.fsdecode(p.relative_to(out)).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            for p in out.rglob("*") if p.is_file()}
    assert made == set(good.values())
    deep = read_image(out / "deep.png")
    alpha = read_image(out / "alpha.png")
    assert deep.bit_depth == 16 and alpha.alpha is not None
    assert torch.equal(alpha.alpha, read_image(src / "alpha.png").alpha)
    # a second run skips what exists and still reports the bad files
    again = subprocess.run([sys.executable, "-m", "derain", "run", str(src), "-o", str(out), "-w", str(tiny_weights),
                            "--device", "cpu"], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert f"0 done, {len(good)} skipped" in again.stdout and again.returncode == 1
    assert _digest(src) == before


def test_run_single_file_compare_and_no_overwrite_of_inputs(tiny_weights: Path, tmp_path: Path) -> None:
    from derain.cli import main

    src = tmp_path / "rain.png"
    write_image(src, read_image(derain.sample_paths()[0]).image[..., :64, :96])
    original = src.read_bytes()
    assert main(["run", str(src), "-o", str(tmp_path / "clean.jpg"), "-w", str(tiny_weights), "--compare",
                 "--save-stages", "--device", "cpu"]) == 0
    assert read_image(tmp_path / "clean.jpg").image.shape == (1, 3, 64, 96)
    assert (tmp_path / "clean_compare.png").exists() and (tmp_path / "clean_stage2.png").exists()
    assert main(["run", str(src), "-o", str(src), "-w", str(tiny_weights), "--overwrite", "--device", "cpu"]) == 1
    assert main(["run", str(tmp_path), "-o", str(tmp_path), "-w", str(tiny_weights), "--overwrite",
                 "--device", "cpu"]) == 1
    assert src.read_bytes() == original
    assert main(["run", str(src), "-o", str(tmp_path / "o"), "-w", str(tiny_weights), "--format", "gif"]) == 1
    assert main(["run", str(src), "-o", str(tmp_path / "o"), "-w", str(tiny_weights), "--half",
                 "--device", "cpu"]) == 1


def test_save_stages_runs_the_model_once(restorer: derain.Restorer, tmp_path: Path) -> None:
    from derain.inference.batch import RunOptions, derain_files

    src = tmp_path / "in" / "rain.png"
    write_image(src, read_image(derain.sample_paths()[0]).image[..., :48, :64])
    calls = []
    hook = restorer.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        summary = derain_files(restorer, [src], tmp_path / "stages", options=RunOptions(save_stages=True))
        assert len(summary.done) == 1 and len(calls) == 1  # one forward gives the image and its stages
        derain_files(restorer, [src], tmp_path / "plain")
    finally:
        hook.remove()
    image = read_image(tmp_path / "stages" / "rain.png").image
    assert torch.equal(image, read_image(tmp_path / "plain" / "rain.png").image)
    assert torch.equal(image, read_image(tmp_path / "stages" / "rain_stage2.png").image)  # the last stage


def test_an_unreadable_folder_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from derain.inference import batch

    locked = tmp_path / "in" / "locked"
    locked.mkdir(parents=True)
    write_image(tmp_path / "in" / "ok.png", torch.rand(1, 3, 8, 8))
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads any folder: make the walk fail the way a permission error does
        real_walk = os.walk

        def walk(top, onerror=None, **kw):  # type: ignore[no-untyped-def]
            for root, dirs, files in real_walk(top, onerror=onerror, **kw):
                if Path(root) == locked:
                    onerror(PermissionError(13, "Permission denied", str(locked)))
                    continue
                yield root, dirs, files
        monkeypatch.setattr(batch.os, "walk", walk)
    try:
        jobs, failed = batch.plan([tmp_path / "in"], tmp_path / "out")
    finally:
        locked.chmod(0o755)
    assert [src.name for src, _ in jobs] == ["ok.png"]
    assert failed and failed[0][0].endswith("locked") and "cannot read the folder" in failed[0][1]


def _make_clip(path: Path, *, frames: int = 12) -> None:
    from fractions import Fraction

    av = pytest.importorskip("av", reason="video tests need PyAV (pip install 'derain[video]')")
    out = av.open(str(path), "w")
    video = out.add_stream("libx264", rate=Fraction(24000, 1001))
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    audio = out.add_stream("aac", rate=44100)
    audio.layout = "mono"
    rng = np.random.default_rng(0)
    for _ in range(frames):
        img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
        for packet in video.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(packet)
    samples = 44100 * frames * 1001 // 24000
    pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 44100)).astype(np.float32)[None]
    for k in range(0, samples, 1024):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, k:k + 1024]), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 44100, k
        for packet in audio.encode(frame):
            out.mux(packet)
    for stream in (video, audio):
        for packet in stream.encode():
            out.mux(packet)
    out.close()


def test_video_round_trip_keeps_frames_fps_and_audio(tiny_weights: Path, tmp_path: Path) -> None:
    from derain.cli import main
    from derain.io.video import probe

    av = pytest.importorskip("av", reason="video tests need PyAV (pip install 'derain[video]')")
    clip = tmp_path / "rain.mp4"
    _make_clip(clip)
    original = clip.read_bytes()
    assert main(["run", str(clip), "-o", str(tmp_path / "clean.mp4"), "-w", str(tiny_weights), "--device", "cpu"]) == 0
    src, out = probe(clip), probe(tmp_path / "clean.mp4")
    assert (out.width, out.height, out.fps, out.audio_streams) == (src.width, src.height, src.fps, 1)

    def count_and_audio(path: Path) -> tuple[int, float]:
        with av.open(str(path)) as c:
            a = c.streams.audio[0]
            seconds = float(a.duration * a.time_base)
            return sum(1 for _ in c.decode(video=0)), seconds

    assert count_and_audio(tmp_path / "clean.mp4") == count_and_audio(clip)
    assert count_and_audio(clip)[0] == 12
    assert clip.read_bytes() == original
    assert not list(tmp_path.glob(".*partial*"))
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    assert main(["run", str(tmp_path / "broken.mp4"), "-o", str(tmp_path / "o"), "-w", str(tiny_weights)]) == 1
    assert not (tmp_path / "o" / "broken.mp4").exists()


def test_torchrun_splits_the_files(tiny_weights: Path, tmp_path: Path) -> None:
    import socket

    src = tmp_path / "in"
    for k in range(5):
        write_image(src / f"img{k}.png", torch.rand(1, 3, 16, 20))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "derain", "run", str(src),
                           "-o", str(tmp_path / "out"), "-w", str(tiny_weights), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = sorted(line for line in proc.stdout.splitlines() if line.startswith("[rank"))
    assert len(lines) == 2 and "3 done" in lines[0] and "2 done" in lines[1]  # none twice, none left out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"img{k}.png" for k in range(5)]


def test_strength_zero_returns_the_input_exactly_and_between_is_a_blend(restorer: derain.Restorer,
                                                                          tiny_weights: Path, tmp_path: Path) -> None:
    from derain.cli import main

    rng = np.random.default_rng(3)
    x = torch.rand(1, 3, 21, 34)
    full = restorer(x)
    assert not torch.equal(full, x)  # the model changes the image, so the blends below say something
    assert torch.equal(restorer(x, strength=0), x) and torch.equal(restorer(x, strength=1.0), full)
    half = restorer(x, strength=0.5)
    assert torch.allclose(half, (x + full) / 2, atol=1e-6)
    quarter = restorer(x, strength=0.25)
    assert torch.allclose(quarter - x, 0.25 * (full - x), atol=1e-6)
    rgba16 = (rng.random((21, 34, 4)) * 65535).astype(np.uint16)
    assert np.array_equal(restorer(rgba16, strength=0), rgba16)
    for bad in (-0.1, 1.5, float("nan"), "a lot"):
        with pytest.raises(derain.InputError, match="strength must be"):
            restorer(x, strength=bad)

    src = tmp_path / "x.png"
    write_image(src, read_image(derain.sample_paths()[0]).image[..., :40, :56])
    for strength in ("0", "0.5", "1"):
        assert main(["run", str(src), "-o", str(tmp_path / f"s{strength}.png"), "-w", str(tiny_weights),
                     "--device", "cpu", "--strength", strength]) == 0
    with Image.open(src) as a, Image.open(tmp_path / "s0.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))  # the input's pixels, exactly
    rain, mid, out = (read_image(tmp_path / f).image for f in ("x.png", "s0.5.png", "s1.png"))
    assert (mid - (rain + out) / 2).abs().max() <= 1 / 255 + 1e-6  # half the rain layer, up to 8-bit rounding
    assert main(["run", str(src), "-o", str(tmp_path / "bad.png"), "-w", str(tiny_weights),
                 "--strength", "2"]) == 1
    assert not (tmp_path / "bad.png").exists()


def _portrait_scene(t: int = 0) -> torch.Tensor:
    """A 48x32 (portrait) frame that shows which way is up: a red band along the top, a blue one down the left."""
    x = torch.full((1, 3, 48, 32), 0.5)
    x[:, :, :8] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    x[:, :, 8:, :6] = torch.tensor([0.1, 0.1, 0.9])[:, None, None]
    x[:, 1, 20:28, 12:20] = 0.2 + 0.05 * (t % 4)
    return x


@pytest.mark.parametrize("rotation", [-90, 180])
def test_phone_videos_reach_the_model_upright_and_play_as_the_input(tiny_weights: Path, tmp_path: Path,
                                                                     rotation: int) -> None:
    from derain.cli import main
    from derain.io.video import frames, probe
    from tests.conftest import phone_video

    scenes = [_portrait_scene(t) for t in range(6)]
    clip = phone_video(tmp_path / "phone.mp4", scenes, rotation=rotation)
    info = probe(clip)
    assert info.rotation == rotation and info.upright_size == (32, 48)
    upright = list(frames(clip))
    assert all(f.shape == (1, 3, 48, 32) and (f - s).abs().mean() < 0.02 for f, s in zip(upright, scenes, strict=True))
    assert next(frames(clip, upright=False)).shape[-2:] == ((32, 48) if rotation == -90 else (48, 32))

    seen: list[tuple[int, ...]] = []
    restorer = derain.load(tiny_weights, device="cpu")
    hook = restorer.model.register_forward_hook(lambda _m, args, _o: seen.append(tuple(args[0].shape[-2:])))
    try:
        from derain.inference.batch import derain_video

        assert derain_video(restorer, clip, tmp_path / "clean.mp4") == 6
    finally:
        hook.remove()
    assert seen and set(seen) == {(48, 32)}  # the model saw the scene upright
    out = probe(tmp_path / "clean.mp4")
    assert (out.rotation, out.width, out.height) == (rotation, info.width, info.height)  # the input's geometry

    # strength 0 leaves every frame as it was: the output, turned as players turn it, is the input scene
    assert main(["run", str(clip), "-o", str(tmp_path / "same.mp4"), "-w", str(tiny_weights), "--device", "cpu",
                 "--strength", "0"]) == 0
    again = list(frames(tmp_path / "same.mp4"))
    assert len(again) == 6 and all((a - s).abs().mean() < 0.03 for a, s in zip(again, scenes, strict=True))
