"""``fit()``: the one training loop, and the step it takes.

The rooms around it: :mod:`~derain.train.checkpoint` (the run folder, save, restore, RNG states, resume checks),
:mod:`~derain.train.runlog` (``log.csv``, TensorBoard, progress), :mod:`~derain.train.datasets` (the training and
validation sets), :mod:`~derain.train.model` (build, warm start, compile), :mod:`~derain.train.signals` (a clean
stop on Ctrl-C or SIGTERM) and :mod:`~derain.train.distributed` (torchrun).

Resuming continues exactly: data samples are keyed by their global position in the run
(:class:`derain.data.training.StepBatchSampler`), so a run stopped at any checkpoint and resumed ends with the
same weights, bit for bit on the CPU, as one that never stopped. Ctrl-C or SIGTERM stops a run the same clean way:
the step in progress ends, the checkpoint is written, and ``fit`` returns; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from derain.archs import get_family
from derain.data.training import StepBatchSampler
from derain.device import resolve_device
from derain.losses import LossFn, get_loss
from derain.metrics import psnr, ssim
from derain.train import checkpoint, distributed
from derain.train.checkpoint import BEST, CHECKPOINT, WEIGHTS
from derain.train.config import Config, save_config
from derain.train.datasets import build_datasets
from derain.train.model import build_model, compiled
from derain.train.runlog import RunLog
from derain.train.signals import StopOnSignal, worker_ignores_stop_signals
from derain.types import DerainOutput


@dataclass(frozen=True)
class FitResult:
    out: Path
    step: int
    finished: bool
    seconds: float
    val_psnr: float | None
    val_ssim: float | None
    model: nn.Module
    config: Config          # the config the run trained with
    main: bool = True       # False in every torchrun process but rank 0
    signal: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped the run (cleanly, with a checkpoint)
    best: tuple[int, float] | None = None  # (step, validation PSNR) of best.safetensors, the best validation so far


@torch.no_grad()
def validate(model: nn.Module, pairs: list[tuple[Tensor, Tensor]], device: torch.device) -> tuple[float, float]:
    """Mean PSNR/SSIM on the Y channel (MATLAB luma, 'valid' SSIM) of the clamped outputs."""
    if not pairs:
        return math.nan, math.nan
    was_training = model.training
    model.eval()
    ps, ss = [], []
    for rainy, clean in pairs:
        out = model(rainy[None].to(device)).image.float().clamp(0, 1)
        target = clean[None].to(device)
        ps.append(float(psnr(out, target, data_range=1.0, y_channel=True)))
        ss.append(float(ssim(out, target, data_range=1.0, y_channel=True)))
    model.train(was_training)
    return sum(ps) / len(ps), sum(ss) / len(ss)


def full_precision(out: DerainOutput) -> DerainOutput:
    """The model's outputs in float32, for the loss. Under mixed precision the network runs in float16, but the
    loss must not: SSIM's variances are differences of near-equal terms (E[x^2] - mu^2), and float16 (11
    significant bits) rounds each term by up to 1.2e-4 at mid-grey, as much as the variance of a smooth patch
    and an eighth of SSIM's constant C2 (9e-4)."""
    return DerainOutput(out.image.float(), tuple(s.float() for s in out.stages),
                        tuple(a.float() for a in out.attention))


def optimizer_step(net: nn.Module, rainy: Tensor, clean: Tensor, mask: Tensor, *, loss_fn: LossFn,
                   optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, amp: bool,
                   grad_clip: float | None = None) -> Tensor:
    """One optimizer step as ``derain train`` takes it, on a batch already on the model's device: the forward
    pass under float16 autocast when ``amp`` (CUDA), the loss in float32 (:func:`full_precision`), the backward
    pass through ``scaler`` (a no-op scaler when disabled), gradient-norm clipping when ``grad_clip``, the update.
    The lr schedule is the caller's. Returns the loss, detached (reading it waits for the step on a GPU).
    ``benchmarks/train_step.py`` and ``benchmarks/gpu_check.py`` time and check this same step."""
    with torch.autocast(device_type=rainy.device.type, dtype=torch.float16, enabled=amp):
        out = net(rainy)
    loss = loss_fn(full_precision(out), clean, mask)  # outside autocast: in float32
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


class _Trainer:
    """The model and what updates it: one :meth:`step` per batch, and the parts a checkpoint holds."""

    def __init__(self, cfg: Config, ctx: distributed.Context, fresh: bool) -> None:
        self.cfg, self.ctx, self.device = cfg, ctx, ctx.device
        self.model = build_model(cfg, fresh=fresh).to(self.device).train()
        self.net: nn.Module = self.model
        if ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.train.compile:
            self.net = compiled(self.net, self.device)
        self.loss_fn = get_loss(cfg.loss)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                          weight_decay=cfg.optim.weight_decay)
        milestones = sorted({max(1, round(f * cfg.train.steps)) for f in cfg.schedule.milestones})
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=milestones,
                                                              gamma=cfg.schedule.gamma)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # training crops are one size: let cuDNN pick its fastest kernels
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.parts: dict[str, Any] = {"model": self.model, "optimizer": self.optimizer,
                                      "scheduler": self.scheduler, "scaler": self.scaler}

    def step(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """One optimizer step on ``(rainy, clean, mask)``; returns the loss (detached)."""
        rainy, clean, mask = (t.to(self.device, non_blocking=True) for t in batch)
        loss = optimizer_step(self.net, rainy, clean, mask, loss_fn=self.loss_fn, optimizer=self.optimizer,
                              scaler=self.scaler, amp=self.amp, grad_clip=self.cfg.optim.grad_clip)
        self.scheduler.step()
        return loss

    def validate(self, pairs: list[tuple[Tensor, Tensor]], out: Path, step: int,
                 best: tuple[int, float] | None) -> tuple[tuple[float, float], tuple[int, float] | None]:
        """Validate (rank 0); a new best is written to ``best.safetensors``. Returns (PSNR, SSIM) and the best."""
        val_psnr, val_ssim = validate(self.model, pairs, self.device)
        if not math.isnan(val_psnr) and (best is None or val_psnr > best[1]):
            best = (step, val_psnr)
            checkpoint.save_weights(out / BEST, self.cfg, self.model, step=step, val_psnr=f"{val_psnr:.4f}",
                                    val_ssim=f"{val_ssim:.5f}")
        return (val_psnr, val_ssim), best


def _loader(train_set: Dataset, cfg: Config, ctx: distributed.Context, step: int) -> DataLoader:
    sampler = StepBatchSampler(len(train_set), batch=cfg.data.batch, steps=cfg.train.steps, start=step,
                               seed=cfg.train.seed, rank=ctx.rank, world=ctx.world)
    return DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.data.workers,
                      pin_memory=ctx.device.type == "cuda",
                      worker_init_fn=worker_ignores_stop_signals if cfg.data.workers else None)


def _finish(cfg: Config, out: Path, trainer: _Trainer, *, step: int, seconds: float,
            val: tuple[float | None, float | None]) -> None:
    """The end of a run: the weights file and ``summary.json`` (rank 0), after checking the ranks agree."""
    spread = distributed.max_difference(trainer.ctx, trainer.model)
    if not trainer.ctx.main:
        return
    checkpoint.save_weights(out / WEIGHTS, cfg, trainer.model, step=step)
    summary = {"model": cfg.model.name, "family": get_family(cfg.model.name).name, "steps": step,
               "seconds": seconds, "processes": trainer.ctx.world, "device": str(trainer.device),
               "val_psnr": val[0], "val_ssim": val[1], "ranks_max_parameter_difference": spread}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def fit(cfg: Config, out: str | Path, *, resume: bool = False, stop_after: int | None = None,
        time_limit: float | None = None, progress: bool = True) -> FitResult:
    """Train ``cfg.model`` into the run folder ``out`` (:mod:`derain.train.checkpoint` lists its files).

    resume: continue from ``out/checkpoint.pt`` (the saved config is used; only runtime keys such as
    ``data.workers`` may differ). stop_after / time_limit: stop cleanly (with a checkpoint) after that many steps
    in this call, or once that many seconds have passed, so long runs can go in resumable chunks.
    Under ``torchrun`` every process calls ``fit``; rank 0 writes the files.
    """
    out, plan = Path(out), cfg.train
    state = checkpoint.open_run(cfg, out, resume)
    ctx = distributed.setup(resolve_device(plan.device))
    if plan.threads:
        torch.set_num_threads(plan.threads)
    checkpoint.seed_everything(plan.seed)
    trainer = _Trainer(cfg, ctx, fresh=state is None)
    step, elapsed, best = checkpoint.restore(state, trainer.parts, ctx.rank) if state else (0, 0.0, None)
    train_set, val_pairs = build_datasets(cfg, plan.seed)
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    loader = _loader(train_set, cfg, ctx, step)
    log = RunLog(out, total=plan.steps, step=step, samples_per_step=cfg.data.batch * ctx.world,
                 append=state is not None, enabled=ctx.main, progress=progress)
    start_step, t0 = step, time.perf_counter()
    val: tuple[float | None, float | None] = (None, None)
    finished = step >= plan.steps
    with StopOnSignal() as stop:
        try:
            for batch in loader:
                loss = trainer.step(batch)
                step += 1
                finished = step >= plan.steps
                stopping = finished or (stop_after is not None and step - start_step >= stop_after)
                if not stopping:  # every rank must agree, or DDP would hang
                    timed_out = time_limit is not None and time.perf_counter() - t0 >= time_limit
                    stopping = distributed.any_true(ctx, timed_out or stop.received is not None)
                if step % plan.log_every == 0 or stopping:
                    log.loss(step, distributed.mean(ctx, float(loss)), trainer.scheduler.get_last_lr()[0],
                             elapsed + time.perf_counter() - t0)
                if (step % plan.val_every == 0 or finished) and ctx.main:
                    val, best = trainer.validate(val_pairs, out, step, best)
                    log.validation(step, *val)
                log.end_step(step)
                if plan.keep_every and step % plan.keep_every == 0 and ctx.main:
                    (out / checkpoint.KEPT).mkdir(exist_ok=True)
                    checkpoint.save_weights(out / checkpoint.kept(step), cfg, trainer.model, step=step)
                if step % plan.ckpt_every == 0 or stopping:
                    checkpoint.save(out / CHECKPOINT, ctx, trainer.parts, config=cfg, step=step,
                                    seconds=elapsed + time.perf_counter() - t0, best_val=best)
                if stopping:
                    break
            seconds = elapsed + time.perf_counter() - t0
            if finished:
                _finish(cfg, out, trainer, step=step, seconds=seconds, val=val)
            distributed.barrier(ctx)
        finally:
            log.close()
            distributed.teardown(ctx)
    return FitResult(out, step, finished, seconds, val[0], val[1], trainer.model, cfg, ctx.main,
                     None if finished else stop.received, best)


def train(config: str | Path | None = None, output: str | Path | None = None, *, resume: str | Path | None = None,
          overrides: Sequence[str] = (), stop_after: int | None = None, time_limit: float | None = None,
          progress: bool = True) -> FitResult:
    """``derain train``: a new run from a config file (with dotted ``overrides``) into ``output``, or ``resume`` a
    run folder (:func:`~derain.train.checkpoint.run_config` reconciles a config or overrides given again), then
    :func:`fit`. Under ``torchrun`` every process calls it."""
    cfg, out = checkpoint.run_config(config, output, resume=resume, overrides=overrides)
    return fit(cfg, out, resume=resume is not None, stop_after=stop_after, time_limit=time_limit, progress=progress)
