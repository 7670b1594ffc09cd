"""A run folder's files and resuming: the checkpoint (model, optimizer, scheduler, scaler, step, every RNG state),
the weights files ``derain.load`` reads, the checks before a run starts or continues, and the run's config.

A run folder holds ``config.yaml`` (the resolved config), ``checkpoint.pt``, ``best.safetensors`` (the weights at
the best validation so far), with ``train.keep_every`` the weights every N steps in ``steps/`` and, when the run
ends, ``weights.safetensors`` and ``summary.json``. Checkpoints hold tensors, lists and numbers only, so they load
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from derain.errors import InputError
from derain.io.atomic import atomic_write
from derain.train import distributed
from derain.train.config import Config, apply_overrides, config_from_dict, load_config, to_dict
from derain.weights.store import write_weights

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "weights.safetensors"
BEST = "best.safetensors"
KEPT = "steps"  # train.keep_every: the weights every N steps, for choosing a step afterwards on a larger validation
RUNTIME_KEYS = {"data.workers", "train.threads", "train.device", "train.amp", "train.compile", "train.log_every",
                "train.val_every", "train.ckpt_every", "train.keep_every"}  # may differ when resuming


def kept(step: int) -> str:
    """The path, inside a run folder, of the weights kept at ``step`` (``train.keep_every``)."""
    return f"{KEPT}/step-{step:06d}.safetensors"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors, lists and numbers, so checkpoints load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
                             "python": [version, list(internal), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_differences(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ between two config mappings (``"optim.lr: 0.001 -> 0.0005"``), leaving out
    the runtime keys a resumed run may change."""
    diffs = []
    for key in sorted(set(saved) | set(wanted)):
        path = f"{prefix}{key}"
        a, b = saved.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and path not in ("model.options",):
            diffs += config_differences(a, b, path + ".")
        elif a != b and path not in RUNTIME_KEYS:
            diffs.append(f"{path}: {a!r} -> {b!r}")
    return diffs


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file can fail anywhere in the unpickler
        raise InputError(f"{path}: not a readable derain training checkpoint ({str(exc).splitlines()[0][:160]})")\
            from None


def open_run(cfg: Config, out: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``None``: a new run), after checking the folder and the config."""
    checkpoint_path = out / CHECKPOINT
    if not resume:
        if any((out / name).exists() for name in (CHECKPOINT, WEIGHTS, BEST, KEPT)):
            raise InputError(f"{out}: already holds a training run; pass --resume to continue it, or choose a new "
                             "output folder")
        return None
    if not checkpoint_path.is_file():
        raise InputError(f"{out}: no {CHECKPOINT} to resume from; start the run without --resume")
    state = read_checkpoint(checkpoint_path)
    diffs = config_differences(state["config"], to_dict(cfg))
    if diffs:
        raise InputError(f"{out}: the config differs from the run being resumed ({'; '.join(diffs)}); "
                         "resume with the run's own config (derain train --resume OUT)")
    return state


def save(path: Path, ctx: distributed.Context, parts: Mapping[str, Stateful], *, config: Config, step: int,
         seconds: float, best_val: tuple[int, float] | None) -> None:
    """Write the checkpoint (rank 0): the states of ``parts`` (model, optimizer, scheduler, scaler), the step,
    the training time, every rank's RNG state (a collective call under DDP) and the config."""
    rng = [rng_state()]
    if ctx.distributed:
        gathered: list[Any] = [None] * ctx.world
        torch.distributed.all_gather_object(gathered, rng[0])
        rng = gathered
    if ctx.main:
        payload = {**{name: part.state_dict() for name, part in parts.items()}, "step": step, "seconds": seconds,
                   "rng": rng, "config": to_dict(config), "best_val": None if best_val is None else list(best_val)}
        with atomic_write(path) as tmp:
            torch.save(payload, tmp)


def restore(state: dict[str, Any], parts: Mapping[str, Stateful], rank: int
            ) -> tuple[int, float, tuple[int, float] | None]:
    """Load a checkpoint's states into ``parts`` and this rank's RNG; returns ``(step, seconds trained so far,
    (step, PSNR) of the best validation so far)`` (the last is None for a checkpoint written before
    ``best.safetensors`` existed)."""
    for name, part in parts.items():
        part.load_state_dict(state[name])
    set_rng_state(state["rng"][rank] if rank < len(state["rng"]) else state["rng"][0])
    best = state.get("best_val")
    return int(state["step"]), float(state.get("seconds", 0.0)), None if best is None else (int(best[0]),
                                                                                            float(best[1]))


def save_weights(path: Path, cfg: Config, model: nn.Module, *, step: int, **extra: str) -> None:
    """The model's weights as a file ``derain.load`` reads, with the step and the run's config."""
    write_weights(path, model=cfg.model.name, options=dict(cfg.model.options), state_dict=model.state_dict(),
                  extra={"steps": str(step), "config": json.dumps(to_dict(cfg), sort_keys=True), **extra})


def load_run_config(out: str | Path) -> Config:
    """The resolved config saved in a run folder's checkpoint."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise InputError(f"{out}: no {CHECKPOINT} to resume from")
    return config_from_dict(read_checkpoint(path)["config"])


def run_config(config: str | Path | None = None, output: str | Path | None = None, *,
               resume: str | Path | None = None, overrides: Sequence[str] = ()) -> tuple[Config, Path]:
    """The config and run folder of ``derain train``, for :func:`derain.train.fit` (with ``resume=resume is not
    None``): a new run from ``config`` (a YAML file) and dotted ``overrides`` into ``output``; or, with ``resume``
    (the run folder; ``output`` left out or the same), the run's own saved config with ``overrides`` applied, or
    ``config`` given again (then ``fit`` names every difference that would break an exact resume)."""
    if resume is not None:
        if output is not None and Path(output).resolve() != Path(resume).resolve():
            raise InputError("--resume names the run folder; leave out --output (or give the same folder)")
        cfg = load_run_config(resume)
        if config is not None:
            given = load_config(config, list(overrides))
            if to_dict(given) != to_dict(cfg):
                cfg = given  # fit() names every difference that would break an exact resume
        elif overrides:
            cfg = config_from_dict(apply_overrides(to_dict(cfg), list(overrides)))
        return cfg, Path(resume)
    if config is None or output is None:
        raise InputError("derain train needs a config file and --output DIR (or --resume DIR)")
    return load_config(config, list(overrides)), Path(output)
