"""The derain command: eval, convert and list work as the README shows; bad input ends in one line, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from derain.cli import main
from tests.conftest import REPO, require_shared

SIAN_L = ("weights", "official", "sian", "rain100l.pth")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "derain", *args], capture_output=True, text=True, env=env,
                          check=False, timeout=600)


def test_eval_prints_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    saved = tmp_path / "saved"
    proc = run_cli("eval", "--weights", str(require_shared(*SIAN_L)), "--data", str(require_shared("data", "rain100L")),
                   "--limit", "2", "--json", str(out), "--save-images", str(saved), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "sian.rain100l" in proc.stdout and "matlab-y" in proc.stdout
    report = json.loads(out.read_text())
    assert report["images"] == 2 and report["quantize"] == "round"
    assert [r["name"] for r in report["per_image"]] == ["001.png", "002.png"]
    assert abs(report["per_image"][0]["psnr"] - 38.7827) < 0.02
    assert abs(report["psnr"] - sum(r["psnr"] for r in report["per_image"]) / 2) < 1e-9
    assert sorted(p.name for p in saved.iterdir()) == ["001.png", "002.png"]


def test_convert_then_eval_converted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = require_shared("weights", "official", "prenet", "Rain100L", "PRN6_r", "net_latest.pth")
    out = tmp_path / "prn_r.safetensors"
    assert main(["convert", str(src), "-o", str(out)]) == 0
    assert "prn_r.rain100l" in capsys.readouterr().out
    assert main(["eval", "-w", str(out), "-d", str(require_shared("data", "rain100L")), "--limit", "1",
                 "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "prn_r.rain100l" in table and "quantize floor" in table


def test_list_shows_models_and_weights(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "sian.rain100l" in text and "prenet_gru" in text


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    data = str(require_shared("data", "rain100L"))
    weights = str(require_shared(*SIAN_L))
    unpaired = tmp_path / "unpaired"
    (unpaired / "rain").mkdir(parents=True)
    (unpaired / "norain").mkdir()
    src = require_shared("data", "rain100L", "rain", "001.png")
    (unpaired / "rain" / "001.png").write_bytes(src.read_bytes())
    (unpaired / "rain" / "002.png").write_bytes(src.read_bytes())
    (unpaired / "norain" / "001.png").write_bytes(src.read_bytes())
    corrupt = tmp_path / "corrupt"
    (corrupt / "rain").mkdir(parents=True)
    (corrupt / "norain").mkdir()
    (corrupt / "rain" / "001.png").write_bytes(src.read_bytes()[:5000])
    (corrupt / "norain" / "001.png").write_bytes(src.read_bytes())
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, other)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    return {
        "missing folder": (["-w", weights, "-d", str(tmp_path / "nope")], "nope"),
        "unpairable files": (["-w", weights, "-d", str(unpaired)], "002.png"),
        "corrupt image": (["-w", weights, "-d", str(corrupt)], "001.png"),
        "unknown layout": (["-w", str(other), "-d", data], "unknown checkpoint layout"),
        "not a checkpoint": (["-w", str(text), "-d", data], "not a PyTorch checkpoint"),
        "unknown weights name": (["-w", "sian.nope", "-d", data], "unknown weights"),
    }


@pytest.mark.parametrize("case", ["missing folder", "unpairable files", "corrupt image", "unknown layout",
                                  "not a checkpoint", "unknown weights name"])
def test_bad_eval_input_is_one_line_error(tmp_path: Path, case: str) -> None:
    args, expected = _bad_cases(tmp_path)[case]
    proc = run_cli("eval", *args, "--device", "cpu")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]


def test_choices_come_from_the_library(capsys: pytest.CaptureFixture) -> None:
    """No vocabulary of its own: the CLI's help lists the library's tuples, and a bad value is one line naming them,
    the library's own message (the library checks every choice, before anything is read or downloaded)."""
    import typer

    from derain.cli import app
    from derain.cli import main as cli
    from derain.data.paired import LAYOUTS
    from derain.data.synthetic import STYLE_NAMES
    from derain.device import DEVICES
    from derain.metrics import protocol_names

    group = typer.main.get_command(app)
    helps = {(c, p.name): p.help or "" for c, cmd in group.commands.items() for p in cmd.params}  # type: ignore[attr-defined]
    for key, valid in ((("eval", "protocol"), protocol_names()), (("eval", "layout"), LAYOUTS),
                       (("run", "device"), DEVICES), (("synth", "style"), STYLE_NAMES)):
        assert "|".join(valid) in helps[key], (key, helps[key])
    for args, message in (
            (["eval", "-w", "derain.default", "-d", "nope", "--protocol", "nope"],
             f"unknown protocol 'nope'; valid names: {', '.join(protocol_names())}"),
            (["eval", "-w", "derain.default", "-d", "nope", "--protocol", "torch-rgb", "--quantize", "round"],
             "protocol 'torch-rgb' does not quantise outputs"),
            (["eval", "-w", "derain.default", "-d", "nope", "--quantize", "ceil"], "unknown quantize mode 'ceil'"),
            (["eval", "-w", "derain.default", "-d", "nope", "--device", "tpu"], "unknown device 'tpu'"),
            (["eval", "-w", "derain.default", "-d", "nope", "--layout", "spa"],
             f"unknown layout 'spa'; valid: {', '.join(LAYOUTS)}"),
            (["run", "x.png", "-o", "out", "--device", "tpu"],
             f"unknown device 'tpu'; use one of {', '.join(DEVICES)}"),
            (["demo", "--device", "tpu"], "unknown device 'tpu'"),
            (["web", "--device", "tpu"], "unknown device 'tpu'"),
            (["synth", "nope", "-o", "out", "--style", "drizzle"],
             f"unknown rain style 'drizzle'; valid styles: {', '.join(STYLE_NAMES)}"),
            (["export", "-o", "m.onnx", "--format", "tflite"], "unknown export format 'tflite'; valid: onnx"),
            (["weights", "verify", "sian.nope"], "unknown weights 'sian.nope'; valid names: "),
            (["weights", "fetch"], "name the weights to fetch"),
            (["data", "fetch", "rain200"], "unknown data set 'rain200'; known sets: "),
            (["data", "verify", "rain200"], "unknown data set 'rain200'; known sets: ")):
        assert cli(args) == 1, args
        err = capsys.readouterr().err
        assert err.startswith(f"derain: error: {message}") and err.count("\n") == 1, (args, err)


def test_train_time_limit_takes_seconds_or_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from derain.cli import _duration

    assert [_duration(t) for t in ("540", "540s", "90m", "2h", "1h30m", "1.5h", "1m30s")] == \
        [540, 540, 5400, 7200, 5400, 5400, 90]
    # A duration that parses reaches the command (which then says the run folder is missing) ...
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--time-limit", "90m"]) == 1
    assert "no checkpoint.pt to resume from" in capsys.readouterr().err
    # ... one that does not is a usage error that says what to write.
    for bad in ("ninety", "90 min", "m", "0.2s", "-5"):
        assert main(["train", "--resume", str(tmp_path / "nothing"), "--time-limit", bad]) == 2
        err = capsys.readouterr().err
        assert "is not a duration: write seconds" in err or "is under a second" in err, err
