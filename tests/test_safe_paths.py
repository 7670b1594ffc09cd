"""Issue 32, items 5-7: nothing is written outside ``-o``, an output folder inside an input folder is not read back
as input, and SIGTERM cleans up like Ctrl+C (``derain run`` on images and video, ``derain build-dataset``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from derain.data.rainbuild import build_dataset, find_sources, read_json
from derain.errors import InputError
from derain.inference.batch import derain_files
from derain.io import write_image
from tests.conftest import REPO, frames_folder, synthetic_video


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def frames() -> list[torch.Tensor]:
    return [f[..., :24, :32].contiguous() for f in synthetic_video("normal", 3)]


def test_build_dataset_names_sequences_from_the_resolved_path(tmp_path: Path, frames, monkeypatch) -> None:
    """``frames/sub/..`` and ``.`` (from inside the frames folder, ``-o ../ds``) once wrote clean.png and rain/ into
    the dataset's parent and root: the name was the path's last part, ``..`` or empty."""
    seq = frames_folder(tmp_path / "frames", frames)
    (seq / "sub").mkdir()
    build_dataset([str(seq / "sub" / "..")], tmp_path / "ds", frames=2)
    assert read_json(tmp_path / "ds" / "manifest.json")["frames"]["status"] == "built"
    outside = {p.name for p in tmp_path.iterdir()}
    assert outside == {"frames", "ds"}, outside  # nothing beside the dataset: no clean.png, rain/, mask/
    assert (tmp_path / "ds" / "frames" / "clean.png").is_file()
    assert not (tmp_path / "ds" / "clean.png").exists()

    monkeypatch.chdir(seq)
    before = _files(seq)
    build_dataset(["."], "../ds2", frames=2)
    assert _files(seq) == before  # the input folder is not written to
    root = tmp_path / "ds2"
    assert sorted(p.name for p in root.iterdir()) == ["decisions.json", "frames", "manifest.json", "real_world.txt"]
    assert (root / "frames" / "rain" / "0001.png").is_file()


def test_sequence_names_that_cannot_be_a_folder_are_refused(tmp_path: Path, frames) -> None:
    named = frames_folder(tmp_path / "manifest.json", frames)  # would collide with the dataset's own file
    with pytest.raises(InputError, match="cannot name a sequence"):
        find_sources([named])
    with pytest.raises(InputError, match="cannot name a sequence"):
        find_sources(["/"])
    assert not (tmp_path / "ds").exists()
    with pytest.raises(InputError, match="cannot name a sequence"):
        build_dataset([named], tmp_path / "ds", frames=2)
    assert not (tmp_path / "ds").exists()  # refused before anything was written


class _Identity:
    """A stand-in restorer: returns its input (the file handling is what is tested)."""

    name = "identity"

    def __call__(self, x: torch.Tensor, **kwargs: object) -> torch.Tensor:
        return x


def test_run_does_not_read_its_output_folder_inside_the_input(tmp_path: Path, frames) -> None:
    """``derain run photos -o photos/out`` run twice once derained its own outputs into photos/out/out/."""
    photos = tmp_path / "photos"
    for k in range(2):
        write_image(photos / f"p{k}.png", frames[k])
    first = derain_files(_Identity(), [photos], photos / "out")
    assert len(first.done) == 2
    second = derain_files(_Identity(), [photos], photos / "out")
    assert (len(second.done), len(second.skipped), len(second.failed)) == (0, 2, 0)
    assert not (photos / "out" / "out").exists()
    assert "not read as input (it is the output folder)" in second.line()
    assert _files(photos) == {"p0.png", "p1.png", "out/p0.png", "out/p1.png"}


# --- SIGTERM: a subprocess, since on old code the signal kills the process where it stands -----------------------

_RUNNER = """
import signal, sys
import derain, derain.data.rainbuild as rb, derain.inference.batch as batch
from derain.cli import main

calls = 0

class Stops:  # returns its input; the second call gets SIGTERM, as from kill or a scheduler
    name = "stops"
    def __call__(self, x, **kwargs):
        global calls
        calls += 1
        if calls == 2:
            signal.raise_signal(signal.SIGTERM)
        return x

derain.load = batch.load = lambda *a, **k: Stops()  # derain run loads through derain.inference.batch
mask = rb.rain_mask_from
def stopping_mask(*a, **k):
    Stops()(None)
    return mask(*a, **k)
rb.rain_mask_from = stopping_mask
sys.exit(main(sys.argv[1:]))
"""


def _run_until_sigterm(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "runner.py"
    script.write_text(textwrap.dedent(_RUNNER))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)


def _hidden(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*"))


def test_sigterm_cleans_up_derain_run_images_and_video(tmp_path: Path, frames) -> None:
    pytest.importorskip("av", reason='video needs the video extra: pip install -e ".[video]"')
    from derain.io.video import VideoWriter

    video = tmp_path / "in" / "clip.mp4"
    video.parent.mkdir()
    with VideoWriter(video, fps=12, width=32, height=24) as writer:
        for k in range(12):
            writer.write(frames[k % 3])
    done = _run_until_sigterm(tmp_path, "run", str(video), "-o", str(tmp_path / "out"))
    assert done.returncode == 130, done.stderr  # as for Ctrl+C
    assert "Traceback" not in done.stderr
    assert _hidden(tmp_path / "out") == [] and not (tmp_path / "out" / "clip.mp4").exists()

    photos = tmp_path / "photos"
    for k in range(3):
        write_image(photos / f"p{k}.png", frames[k])
    done = _run_until_sigterm(tmp_path, "run", str(photos), "-o", str(tmp_path / "derained"))
    assert done.returncode == 130, done.stderr  # as for Ctrl+C
    assert _files(tmp_path / "derained") == {"p0.png"} and _hidden(tmp_path / "derained") == []


def test_sigterm_cleans_up_build_dataset(tmp_path: Path, frames) -> None:
    seq = frames_folder(tmp_path / "frames", frames)
    done = _run_until_sigterm(tmp_path, "build-dataset", str(seq), "-o", str(tmp_path / "ds"), "--frames", "3")
    assert done.returncode == 130, done.stderr  # as for Ctrl+C
    assert "Traceback" not in done.stderr
    assert _hidden(tmp_path / "ds") == []
    assert "frames" not in read_json(tmp_path / "ds" / "manifest.json")  # the unfinished sequence is not listed
