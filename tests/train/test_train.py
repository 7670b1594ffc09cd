"""Training: typed config, every recipe runs, a tiny overfit, bit-exact resume, and DDP with 2 processes."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import derain
from derain.cli import main
from derain.errors import InputError
from derain.io import write_image
from derain.train import fit, load_config, loop
from derain.train.config import apply_overrides, config_from_dict, save_config
from derain.train.loop import full_precision, optimizer_step
from derain.train.model import compiled, cxx_compiler
from derain.types import DerainOutput
from tests.conftest import REPO, require_shared

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
TINY = ["data.crop=32", "data.batch=2", "data.workers=0", "data.val_count=1", "data.val_size=32",
        "train.log_every=1", "train.val_every=2", "train.ckpt_every=100"]


@pytest.fixture(scope="module")
def clean_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six small crops of real clean photos (BSDS500, not Rain100 ground truths)."""
    from derain.data.training import center_crop, clean_files
    from derain.io import read_image

    folder = tmp_path_factory.mktemp("clean")
    files = clean_files(require_shared("data", "bsds500", "clean"),
                        exclude=require_shared("data", "bsds500", "overlap_with_Rain100.tsv"))
    for path in files[:6]:
        write_image(folder / (path.stem + ".png"), center_crop(read_image(path).image[0], 48))
    return folder


def _tiny(config: Path | None, folder: Path, *extra: str, textures: bool = False) -> derain.train.Config:
    more = [f"data.root={folder}", "data.exclude=null"] + ([] if textures else ["data.textures=null"])
    return load_config(config, [*TINY, *more, *extra])


def test_config_round_trip_and_errors(tmp_path: Path) -> None:
    cfg = load_config(REPO / "configs" / "sian_light.yaml", ["optim.lr=1e-4", "data.crop=48"])
    assert cfg.optim.lr == 1e-4 and cfg.data.crop == 48 and cfg.optim.betas == (0.0, 0.999)
    assert cfg.model.init == "normal" and cfg.loss == "neg_ssim_stages"
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(InputError, match=r"unknown config key\(s\): optim.learning_rate"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(InputError, match=r"data.crop: expected int, got 'big'"):
        load_config(None, ["data.crop=big"])
    with pytest.raises(InputError, match=r"data.style: 'drizzle' is not one of"):
        load_config(None, ["data.style=drizzle"])
    with pytest.raises(InputError, match=r"section.key=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(InputError, match=r"milestones are fractions"):
        config_from_dict({"schedule": {"milestones": [30000]}})
    with pytest.raises(InputError, match=r"data.batch must be at least 1"):
        load_config(None, ["data.batch=0"])
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(InputError, match=r"not valid YAML"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_recipe_runs_a_few_steps(config: Path, clean_folder: Path, tmp_path: Path) -> None:
    cfg = _tiny(config, clean_folder, "train.steps=2", textures=config.stem == "default")
    result = fit(cfg, tmp_path / "run", progress=False)
    assert result.finished and result.step == 2
    loaded = derain.load(tmp_path / "run" / "weights.safetensors", device="cpu")
    assert loaded.model.__class__.__name__ == derain.create_model(cfg.model.name).__class__.__name__
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert [r["step"] for r in rows if r["loss"]] == ["1", "2"]
    assert all(float(r["loss"]) == float(r["loss"]) for r in rows if r["loss"])  # no NaN
    assert any(r["val_psnr"] for r in rows)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_trainable_parameter_gets_a_gradient(config: Path) -> None:
    """DDP reduces the gradient of every parameter that requires one and fails on any the loss never reaches
    (the official SIAN and SPANet carry inert blocks: they are frozen)."""
    from derain.losses import get_loss

    cfg = load_config(config)
    model = derain.create_model(cfg.model.name, **cfg.model.options)
    rainy, clean = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    mask = torch.rand(1, 1, 32, 32)
    get_loss(cfg.loss)(model(rainy), clean, mask).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing


def test_tiny_overfit_loss_falls(clean_folder: Path, tmp_path: Path) -> None:
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 16}", "loss=l1", "optim.lr=2e-3",
                "data.style=light", "train.steps=40", "train.val_every=40", "data.batch=4")
    fit(cfg, tmp_path / "run", progress=False)
    losses = [float(r["loss"]) for r in csv.DictReader((tmp_path / "run" / "log.csv").open()) if r["loss"]]
    assert len(losses) == 40
    first, last = sum(losses[:8]) / 8, sum(losses[-8:]) / 8
    assert last < 0.6 * first, (first, last)


def test_the_loss_sees_float32_outputs_under_mixed_precision() -> None:
    half = torch.rand(2, 3, 16, 16, dtype=torch.float16, requires_grad=True)
    out = full_precision(DerainOutput(half * 1, stages=(half * 2, half * 1), attention=(half[:, :1],)))
    assert {t.dtype for t in (out.image, *out.stages, *out.attention)} == {torch.float32}
    out.image.sum().backward()  # the conversion keeps the graph
    assert half.grad is not None and half.grad.dtype == torch.float16


def test_optimizer_step_is_a_plain_step_and_clips_the_gradient_norm() -> None:
    """The step ``derain train`` and the benchmarks share: on the CPU (no autocast, no scaling) it equals a
    hand-written step, and ``grad_clip`` bounds the gradient norm the optimizer sees."""
    from derain.losses import get_loss

    torch.manual_seed(0)
    batch = (torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24), torch.zeros(2, 1, 24, 24))
    loss_fn = get_loss("l1")
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    for clip in (None, 1e-3):
        model, ref = (derain.create_model("prn", channels=8) for _ in range(2))
        ref.load_state_dict(model.state_dict())
        sgd, ref_sgd = (torch.optim.SGD(m.parameters(), lr=1.0) for m in (model, ref))
        before = [p.detach().clone() for p in model.parameters()]
        loss = optimizer_step(model, *batch, loss_fn=loss_fn, optimizer=sgd, scaler=scaler, amp=False,
                              grad_clip=clip)
        ref_loss = loss_fn(ref(batch[0]), batch[1], batch[2])
        ref_loss.backward()
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ref.parameters()]))
        assert not loss.requires_grad and torch.equal(loss, ref_loss.detach())
        moved = torch.linalg.vector_norm(torch.cat([(p.detach() - b).flatten()
                                                    for p, b in zip(model.parameters(), before, strict=True)]))
        if clip is None:
            ref_sgd.step()
            assert all(torch.equal(p, q) for p, q in zip(model.parameters(), ref.parameters(), strict=True))
            torch.testing.assert_close(moved, grad_norm)  # lr 1: the step is the whole gradient
        else:
            assert grad_norm > 100 * clip  # so clipping is what bounds the step
            torch.testing.assert_close(moved, torch.tensor(clip), rtol=1e-3, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model", ["model.name=prn", "model.name=jdnet"])
def test_amp_training_steps_on_cuda_compute_the_loss_in_float32(model: str, tmp_path: Path) -> None:
    """JDNet: its dense fusion's backward under autocast and the whole-image attention chosen on a GPU."""
    from derain.train import distributed
    from derain.train.loop import _Trainer

    options = "model.options={channels: 8}" if model.endswith("prn") else "model.options={units: 2}"
    cfg = _tiny(None, tmp_path, model, options, "train.device=cuda")
    trainer = _Trainer(cfg, distributed.Context(0, 1, 0, torch.device("cuda")), fresh=True)
    assert trainer.amp
    batch = (torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32))
    losses = [trainer.step(batch) for _ in range(3)]
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)


def test_warm_start_from_named_weights(clean_folder: Path, tmp_path: Path) -> None:
    for weights, start in (("derain.prn_mixed", derain.load("derain.prn_mixed").model),
                           ("derain.default:heavy", derain.load("derain.default").model.heavy)):
        cfg = _tiny(None, clean_folder, "model.name=prn", f"model.weights={weights}", "optim.lr=1e-12",
                    "train.steps=1")
        result = fit(cfg, tmp_path / weights, progress=False)
        assert all(torch.allclose(result.model.state_dict()[k], v, atol=1e-9) for k, v in start.state_dict().items())
    wrong = _tiny(None, clean_folder, "model.name=prenet", "model.weights=derain.prn_mixed", "train.steps=1")
    with pytest.raises(InputError, match="holds 'prn' weights, not 'prenet'"):
        fit(wrong, tmp_path / "wrong", progress=False)


def test_resume_is_bit_exact(clean_folder: Path, tmp_path: Path) -> None:
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=6",
                "data.style=mixed")
    fit(cfg, tmp_path / "straight", progress=False)
    stopped = fit(cfg, tmp_path / "resumed", stop_after=3, progress=False)
    assert not stopped.finished and stopped.step == 3 and not (tmp_path / "resumed" / "weights.safetensors").exists()
    # a run in progress is measured from its checkpoint (README): the model weights in it, as trained so far
    in_progress = derain.load(str(tmp_path / "resumed" / "checkpoint.pt"), device="cpu").model
    assert all(torch.equal(in_progress.state_dict()[k], v) for k, v in stopped.model.state_dict().items())
    # continue through the CLI, with a worker process this time: samples do not depend on who makes them
    assert main(["train", "--resume", str(tmp_path / "resumed"), "--set", "data.workers=1", "--quiet"]) == 0
    a = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [r["step"] for r in csv.DictReader((tmp_path / "resumed" / "log.csv").open()) if r["loss"]]
    assert steps == ["1", "2", "3", "4", "5", "6"]


def _checkpoint_step(run: Path) -> int:
    return int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])


def _signal_at_step(monkeypatch: pytest.MonkeyPatch, sig: signal.Signals, *steps: int) -> None:
    """Deliver ``sig`` to this process during the given training steps (counted from 1 in this call)."""
    real, calls = loop.optimizer_step, []

    def step_then_signal(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(1)
        loss = real(*args, **kwargs)
        if len(calls) in steps:
            signal.raise_signal(sig)
        return loss

    monkeypatch.setattr(loop, "optimizer_step", step_then_signal)


def test_ctrl_c_or_sigterm_stops_cleanly_with_a_checkpoint(clean_folder: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=6",
                "data.style=mixed")
    fit(cfg, tmp_path / "straight", progress=False)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _signal_at_step(monkeypatch, signal.SIGINT, 2)
    stopped = fit(cfg, tmp_path / "run", progress=False)
    assert (stopped.step, stopped.finished, stopped.signal) == (2, False, "SIGINT")
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before  # handlers given back
    assert not (tmp_path / "run" / "weights.safetensors").exists() and _checkpoint_step(tmp_path / "run") == 2
    saved = derain.load(str(tmp_path / "run" / "checkpoint.pt"), device="cpu").model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in stopped.model.state_dict().items())
    # the CLI: a SIGTERM (kill, a scheduler) stops the resumed run too; exit code 128 + 15, how to continue
    _signal_at_step(monkeypatch, signal.SIGTERM, 1)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 128 + signal.SIGTERM
    assert f"SIGTERM: stopped at step 3 of 6, checkpoint saved; continue with: derain train --resume " \
           f"{tmp_path / 'run'}" in capsys.readouterr().out
    # a second Ctrl-C does not wait for the step to end, and the command line says so without a traceback
    _signal_at_step(monkeypatch, signal.SIGINT, 1)
    monkeypatch.setattr(loop, "validate", lambda *a: signal.raise_signal(signal.SIGINT) or (0.0, 0.0))
    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 130
    assert "SIGINT: stopping after this step" in capsys.readouterr().err
    assert _checkpoint_step(tmp_path / "run") == 3  # the step-4 checkpoint was never written
    monkeypatch.undo()
    # and the run still ends exactly as one that was never stopped
    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    a = load_file(str(tmp_path / "straight" / "weights.safetensors"))
    b = load_file(str(tmp_path / "run" / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _log_steps(run: Path) -> list[int]:
    with (run / "log.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


def _train_until_logged(args: list[str], run: Path, steps: int) -> subprocess.Popen[str]:
    """``derain train ARGS`` in a process group of its own (as a terminal or a scheduler runs it), once it has
    logged ``steps`` steps."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "derain", "train", *args, "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 180
    while not ((run / "log.csv").exists() and len(_log_steps(run)) >= steps):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"training did not log {steps} steps: {proc.communicate()}")
        time.sleep(0.2)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_process_group_stops_cleanly(clean_folder: Path, tmp_path: Path,
                                                           sig: signal.Signals) -> None:
    """``pkill -f "derain train"``, a scheduler's SIGTERM or Ctrl-C in a terminal reach the data workers too:
    the run must still stop after its step with a checkpoint, not crash because a worker died."""
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=100000",
                "data.workers=1", "train.val_every=1000")
    save_config(cfg, tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    proc = _train_until_logged([str(tmp_path / "tiny.yaml"), "-o", str(run)], run, 3)
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, (out, err)
    assert "Traceback" not in err and "worker" not in err.lower(), err
    stopped = int(re.search(rf"{sig.name}: stopped at step (\d+) of 100000, checkpoint saved", out)[1])
    assert _checkpoint_step(run) == stopped and not (run / "weights.safetensors").exists()
    # the log ends at the checkpoint: a resumed run continues it without gaps or repeats
    assert _log_steps(run) == list(range(1, stopped + 1))


def test_a_resumed_run_drops_log_rows_past_its_checkpoint(clean_folder: Path, tmp_path: Path) -> None:
    """A run killed hard (SIGKILL, a power cut) has logged steps after its last checkpoint; they are run
    again on resume, and the log keeps each step once."""
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=8",
                "train.ckpt_every=3", "train.val_every=100")
    fit(cfg, tmp_path / "run", stop_after=5, progress=False)  # checkpoint at 5 (the stop), log to 5
    with (tmp_path / "run" / "log.csv").open("a", newline="") as f:  # as if steps 6 and 7 ran, then a SIGKILL
        f.write("6,-0.5,0.0005,1.0,1.0,,\n7,-0.5,0.0005,1.0,1.0,,\n")
    fit(cfg, tmp_path / "run", resume=True, progress=False)
    assert _log_steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6, 7, 8]


def test_keep_every_keeps_the_weights_of_every_nth_step_across_a_resume(clean_folder: Path, tmp_path: Path) -> None:
    """train.keep_every writes the weights every N steps into steps/ (each the model at that step, loadable by
    derain.load); it is a runtime key, so a resumed run may change it, and a run without it keeps none."""
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=6",
                "train.keep_every=2", "train.val_every=100")
    run = tmp_path / "run"
    fit(cfg, run, stop_after=4, progress=False)
    at_step_4 = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    kept = load_file(str(run / "steps" / "step-000004.safetensors"))
    assert kept.keys() == at_step_4.keys() and all(torch.equal(kept[k], v) for k, v in at_step_4.items())
    derain.train.train(resume=run, overrides=["train.keep_every=3"], progress=False)
    assert sorted(f.name for f in (run / "steps").iterdir()) == [f"step-00000{n}.safetensors" for n in (2, 4, 6)]
    last = load_file(str(run / "weights.safetensors"))
    assert all(torch.equal(load_file(str(run / "steps" / "step-000006.safetensors"))[k], v) for k, v in last.items())
    assert not torch.equal(kept["conv0.0.weight"], last["conv0.0.weight"])
    restorer = derain.load(str(run / "steps" / "step-000002.safetensors"), device="cpu")
    assert restorer.weights.model == "prn"
    plain = tmp_path / "plain"
    fit(_tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=2",
              "train.val_every=100"), plain, progress=False)
    assert not (plain / "steps").exists()
    crashed = tmp_path / "crashed"  # kept weights but no checkpoint yet (killed before its first): not overwritten
    (crashed / "steps").mkdir(parents=True)
    with pytest.raises(InputError, match="already holds a training run"):
        fit(cfg, crashed, progress=False)
    with pytest.raises(InputError, match=r"train\.keep_every must be at least 1"):
        _tiny(None, clean_folder, "train.keep_every=0")


def test_best_weights_follow_validation_across_a_resume(clean_folder: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """best.safetensors holds the weights of the validation with the highest PSNR so far; a resumed run
    remembers that best (in the checkpoint), so a lower validation after the resume does not replace it."""
    from safetensors import safe_open

    scores = iter([30.0, 32.0, 31.0])  # validations at steps 2, 4 and 6
    monkeypatch.setattr(loop, "validate", lambda *args: (next(scores), 0.9))
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=6")
    run = tmp_path / "run"
    fit(cfg, run, stop_after=4, progress=False)
    at_step_4 = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert f"best on validation: {run / 'best.safetensors'} (step 4, 32.00 dB)" in capsys.readouterr().out
    with safe_open(str(run / "best.safetensors"), "pt") as f:
        meta = f.metadata()
        assert (meta["derain.steps"], meta["derain.val_psnr"]) == ("4", "32.0000")
        assert all(torch.equal(f.get_tensor(k), v) for k, v in at_step_4.items())
    assert not torch.equal(load_file(str(run / "weights.safetensors"))["conv0.0.weight"], at_step_4["conv0.0.weight"])
    assert derain.load(str(run / "best.safetensors"), device="cpu").weights.model == "prn"
    (run / "checkpoint.pt").unlink()
    (run / "weights.safetensors").unlink()
    with pytest.raises(InputError, match="already holds a training run"):  # best.safetensors alone marks a run
        fit(cfg, run, progress=False)


def test_a_jdnet_training_checkpoint_reads_as_rgb(clean_folder: Path, tmp_path: Path) -> None:
    """JDNet's official weights are BGR and a key layout alone says JDNet: a checkpoint of ours says RGB."""
    cfg = _tiny(REPO / "configs" / "jdnet_light.yaml", clean_folder, "train.steps=1")
    result = fit(cfg, tmp_path / "run", progress=False)
    for name in ("checkpoint.pt", "weights.safetensors"):
        loaded = derain.load(str(tmp_path / "run" / name), device="cpu")
        assert loaded.channel_order == "rgb" and type(loaded.model).__name__ == type(result.model).__name__, name
        assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in result.model.state_dict().items())


def test_run_folders_are_never_overwritten(clean_folder: Path, tmp_path: Path) -> None:
    cfg = _tiny(None, clean_folder, "model.name=prn_r", "model.options={channels: 8}", "train.steps=2")
    fit(cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "weights.safetensors").read_bytes()
    with pytest.raises(InputError, match=r"already holds a training run; pass --resume"):
        fit(cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "weights.safetensors").read_bytes() == before
    changed = _tiny(None, clean_folder, "model.name=prn_r", "model.options={channels: 8}", "train.steps=2",
                    "optim.lr=0.1")
    with pytest.raises(InputError, match=r"optim.lr: 0.0005 -> 0.1"):
        fit(changed, tmp_path / "run", resume=True, progress=False)
    with pytest.raises(InputError, match=r"no checkpoint.pt to resume from"):
        fit(cfg, tmp_path / "nothing", resume=True, progress=False)
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 1
    assert main(["train", str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "x")]) == 1


def test_train_reconciles_resume_config_and_overrides_for_api_users(clean_folder: Path, tmp_path: Path) -> None:
    """derain.train.train, which derain train calls (and torchrun users of the API can): a config file and
    overrides, or a run folder to resume with its own config, overridden or given again."""
    from derain.train import run_config, to_dict, train

    cfg = _tiny(None, clean_folder, "model.name=prn_r", "model.options={channels: 8}", "train.steps=4")
    save_config(cfg, tmp_path / "cfg.yaml")
    first = train(tmp_path / "cfg.yaml", tmp_path / "run", stop_after=2, progress=False)
    assert (first.step, first.finished, to_dict(first.config)) == (2, False, to_dict(cfg))
    own, out = run_config(resume=tmp_path / "run", overrides=["train.log_every=2"])  # a runtime key
    assert out == tmp_path / "run" and own.train.log_every == 2 and to_dict(own.model) == to_dict(cfg.model)
    assert to_dict(run_config(tmp_path / "cfg.yaml", tmp_path / "run", resume=tmp_path / "run")[0]) == to_dict(cfg)
    with pytest.raises(InputError, match="--resume names the run folder"):
        run_config(output=tmp_path / "other", resume=tmp_path / "run")
    with pytest.raises(InputError, match="needs a config file and --output DIR"):
        run_config(tmp_path / "cfg.yaml")
    with pytest.raises(InputError, match=r"optim.lr: 0.0005 -> 0.1"):  # fit names what would break the resume
        train(tmp_path / "cfg.yaml", resume=tmp_path / "run", overrides=["optim.lr=0.1"], progress=False)
    done = train(resume=tmp_path / "run", overrides=["train.log_every=2"], progress=False)
    assert (done.step, done.finished) == (4, True) and (tmp_path / "run" / "weights.safetensors").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_two_processes(cfg: derain.train.Config, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node=2 -m derain train`` of ``cfg`` into ``tmp_path/run``, one thread per process."""
    save_config(cfg, tmp_path / "cfg.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
         f"--master_port={_free_port()}", "-m", "derain", "train", str(tmp_path / "cfg.yaml"),
         "-o", str(tmp_path / "run"), "--quiet"],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_torchrun_ddp_two_processes(clean_folder: Path, tmp_path: Path) -> None:
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8}", "train.steps=4")
    _torchrun_two_processes(cfg, tmp_path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 4
    assert summary["ranks_max_parameter_difference"] == 0.0  # every rank holds the same parameters
    single = fit(cfg, tmp_path / "single", progress=False)  # one process sees half the samples per step
    a = load_file(str(tmp_path / "run" / "weights.safetensors"))
    assert any(not torch.equal(a[k], v) for k, v in single.model.state_dict().items())


@pytest.mark.parametrize("recipe", ["sian_light", "spanet_light"])
def test_torchrun_ddp_trains_models_with_inert_official_blocks(recipe: str, clean_folder: Path,
                                                               tmp_path: Path) -> None:
    """SIAN and SPANet carry official blocks their forward never calls; DDP failed on them until they were frozen."""
    from derain.archs import get_family

    cfg = load_config(REPO / "configs" / f"{recipe}.yaml")
    small = ", ".join(f"{k}: {v}" for k, v in get_family(cfg.model.name).small.items())
    cfg = _tiny(REPO / "configs" / f"{recipe}.yaml", clean_folder, f"model.options={{{small}}}", "train.steps=2")
    _torchrun_two_processes(cfg, tmp_path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["ranks_max_parameter_difference"] == 0.0


def test_training_on_a_paired_folder(clean_folder: Path, tmp_path: Path) -> None:
    from derain.data import PairedFolder
    from derain.data.synthetic import synthesize_folder
    from derain.data.training import PairedCrops

    synthesize_folder(clean_folder, tmp_path / "pairs", style="light", seed=3)
    crops = PairedCrops(PairedFolder(tmp_path / "pairs"), crop=24, seed=1, indices=[1, 2])
    rainy, clean, mask = crops[(0, 5)]
    assert rainy.shape == clean.shape == (3, 24, 24) and mask.shape == (1, 24, 24)
    assert torch.equal(crops[(0, 5)][0], rainy) and not torch.equal(crops[(0, 6)][0], rainy)
    assert ((rainy - clean).abs().amax(0) > 0.5 / 255).float().sum() == mask.sum()
    cfg = _tiny(None, clean_folder, "data.kind=paired", f"data.root={tmp_path / 'pairs'}", "model.name=prn_r",
                "model.options={channels: 8}", "train.steps=3")
    result = fit(cfg, tmp_path / "run", progress=False)
    assert result.finished and result.val_psnr is not None and result.val_psnr > 10


HAS_CXX = cxx_compiler() is not None


@pytest.mark.skipif(not HAS_CXX, reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_training_step_has_the_eager_gradients() -> None:
    from derain.losses import get_loss

    torch.manual_seed(0)
    model = derain.create_model("prenet", stages=2, channels=8)
    rainy, clean = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 24, 24)
    loss_fn = get_loss("neg_ssim")
    grads = []
    for net in (model, compiled(model, torch.device("cpu"))):
        model.zero_grad(set_to_none=True)
        loss = loss_fn(net(rainy), clean, None)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for eager, comp in zip(*grads, strict=True):
        torch.testing.assert_close(comp, eager, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(not HAS_CXX, reason="torch.compile on CPU needs a C++ compiler")
def test_train_compile_runs_and_writes_plain_weights(clean_folder: Path, tmp_path: Path) -> None:
    cfg = _tiny(None, clean_folder, "model.name=prn", "model.options={channels: 8, stages: 2}", "train.steps=2",
                "train.compile=true")
    result = fit(cfg, tmp_path / "run", progress=False)
    assert result.finished
    state = load_file(tmp_path / "run" / "weights.safetensors")
    assert not any(k.startswith("_orig_mod") for k in state)  # the module's own keys, loadable anywhere
    derain.load(tmp_path / "run" / "weights.safetensors", device="cpu")


def test_train_compile_without_a_compiler_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InputError, match=r"C\+\+ compiler on PATH.*train.compile=false"):
        compiled(torch.nn.Conv2d(1, 1, 1), torch.device("cpu"))
