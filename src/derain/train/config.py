"""The training config: typed dataclasses; YAML only stores them.

Unknown keys and values of the wrong type are errors that name the key. Dotted overrides
(``optim.lr=1e-4``, values parsed as YAML) apply on top of a file. Data are named sets (``bsds500``,
``rain_streaks``: :mod:`derain.data.sets`, fetched on first use) or paths, which may use environment variables
(``${HOME}/photos``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from derain.data.synthetic import Style
from derain.errors import InputError


@dataclass
class ModelConfig:
    name: str = "prn"                                 # registry name (derain.list_models())
    options: dict[str, Any] = field(default_factory=dict)  # constructor arguments over the preset
    init: Literal["default", "normal"] = "default"   # "normal": conv weights ~ N(0, 0.02), biases 0 (SIAN)
    weights: str | None = None   # start from these weights (a name such as derain.default, or a file): warm start


@dataclass
class DataConfig:
    kind: Literal["synthetic", "paired"] = "synthetic"
    root: str = "bsds500"        # clean images (synthetic) or a paired folder/list: a path or a data set's name
    layout: str = "auto"                                 # paired: a derain.data.LAYOUTS name
    exclude: str | None = None   # a file of names never trained on (a set used by name leaves out its own list)
    # synthetic rain (train and validation): derain.data.synthetic.Style
    style: Style = "light"
    textures: str | None = "rain_streaks"               # streak textures: a folder or a data set's name
    crop: int = 64
    flips: bool = True
    batch: int = 12
    workers: int = 2
    clean_share: float = 0.0    # synthetic: share of training crops left rain-free (target = input: "do no harm")
    clean_picks: int = 1        # synthetic: a rain-free crop is the most veil-like of this many (1: any crop)
    val_count: int = 8          # synthetic: the first N clean images are held out for validation
    val_size: int = 128


@dataclass
class OptimConfig:
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    grad_clip: float | None = None


@dataclass
class ScheduleConfig:
    milestones: list[float] = field(default_factory=list)   # fractions of train.steps where lr *= gamma
    gamma: float = 0.1


@dataclass
class LoopConfig:
    steps: int = 1000
    seed: int = 0
    device: str = "auto"
    amp: bool = True            # mixed precision on CUDA (ignored on CPU)
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    compile: bool = False       # torch.compile the model for training steps (opt-in; needs a C++ compiler)
    log_every: int = 10
    val_every: int = 200
    ckpt_every: int = 100
    keep_every: int | None = None  # also keep the weights every N steps (steps/step-000200.safetensors)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: str = "neg_ssim"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    description: str = ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (and convert int -> float, list -> tuple)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is Literal:
        if value not in args:
            raise InputError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise InputError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise InputError(f"{key}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise InputError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is bool and not isinstance(value, bool):
        raise InputError(f"{key}: expected true or false, got {value!r}")
    if tp in (int, float, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise InputError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise InputError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise InputError(f"unknown config key(s): {', '.join(where + k for k in unknown)}; "
                         f"valid keys{' of ' + prefix if prefix else ''}: {', '.join(sorted(names))}")
    values = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**values)


def _validate(cfg: Config) -> Config:
    positive = {"data.crop": cfg.data.crop, "data.batch": cfg.data.batch, "train.steps": cfg.train.steps,
                "train.log_every": cfg.train.log_every, "train.val_every": cfg.train.val_every,
                "train.ckpt_every": cfg.train.ckpt_every, "data.val_size": cfg.data.val_size}
    for key, value in positive.items():
        if value < 1:
            raise InputError(f"{key} must be at least 1, got {value}")
    if cfg.train.keep_every is not None and cfg.train.keep_every < 1:
        raise InputError(f"train.keep_every must be at least 1 (or null: keep none), got {cfg.train.keep_every}")
    if cfg.data.workers < 0 or cfg.data.val_count < 0:
        raise InputError("data.workers and data.val_count must be >= 0")
    if not 0.0 <= cfg.data.clean_share < 1.0:
        raise InputError(f"data.clean_share must be at least 0 and below 1, got {cfg.data.clean_share}")
    if cfg.data.clean_picks < 1:
        raise InputError(f"data.clean_picks must be at least 1 (1: any crop), got {cfg.data.clean_picks}")
    if not cfg.optim.lr > 0:
        raise InputError(f"optim.lr must be positive, got {cfg.optim.lr}")
    if any(not 0 < m < 1 for m in cfg.schedule.milestones):
        raise InputError(f"schedule.milestones are fractions of train.steps in (0, 1), got {cfg.schedule.milestones}")
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    return _validate(_from_dict(Config, data))


def to_dict(cfg: Config) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(dataclasses.asdict(cfg))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["optim.lr=1e-4", "data.crop=32"]`` applied to a config mapping (values parsed as YAML)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from the defaults) and apply dotted overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: a config file holds a mapping of sections, got {type(data).__name__}")
    return config_from_dict(apply_overrides(data, overrides or []))


def save_config(cfg: Config, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def resolve_path(text: str) -> Path:
    """Expand environment variables (``${NAME}``) and ``~`` in a path from a config."""
    out = text
    for name, value in os.environ.items():
        out = out.replace("${" + name + "}", value)
    if "${" in out:
        missing = out[out.index("${") + 2:].split("}", 1)[0]
        raise InputError(f"{text}: the environment variable {missing} is not set (set it, or name a data set "
                         "such as bsds500 instead of a path)")
    return Path(out).expanduser()
