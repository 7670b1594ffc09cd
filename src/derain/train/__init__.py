"""Training: typed config, the ``fit()`` loop, checkpoint/resume and distributed helpers."""

from derain.train.checkpoint import load_run_config, run_config
from derain.train.config import Config, apply_overrides, config_from_dict, load_config, save_config, to_dict
from derain.train.datasets import build_datasets
from derain.train.loop import FitResult, fit, train

__all__ = ["Config", "FitResult", "apply_overrides", "build_datasets", "config_from_dict", "fit", "load_config",
           "load_run_config", "run_config", "save_config", "to_dict", "train"]
