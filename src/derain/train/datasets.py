"""The data sets a training config describes: the training set (synthetic rain on clean images, or crops of a
paired folder) and the held-out validation pairs. ``fit`` builds them here, and so do the benchmarks that time or
check a training step (``benchmarks/train_step.py``, ``benchmarks/gpu_check.py``)."""

from __future__ import annotations

from torch import Tensor
from torch.utils.data import Dataset

from derain.data import PairedFolder
from derain.data.sets import resolve_images
from derain.data.synthetic import load_textures
from derain.data.training import PairedCrops, SyntheticRain, center_crop, clean_files, synthetic_validation
from derain.errors import InputError
from derain.train.config import Config, resolve_path


def build_datasets(cfg: Config, seed: int) -> tuple[Dataset, list[tuple[Tensor, Tensor]]]:
    """``(training set, validation pairs)`` for ``cfg.data``: the first ``data.val_count`` images are
    held out for validation, centre-cropped to ``data.val_size``; the rest train, in ``data.crop`` crops."""
    d = cfg.data
    if d.kind == "synthetic":
        root, never = resolve_images(resolve_path(d.root))  # a data set by name leaves out its own exclusions
        files = clean_files(root, exclude=resolve_path(d.exclude) if d.exclude else None, drop=never)
        if len(files) <= d.val_count:
            raise InputError(f"{d.root}: {len(files)} clean images, not enough to hold out data.val_count="
                             f"{d.val_count} for validation and train on the rest")
        textures = load_textures(resolve_images(resolve_path(d.textures))[0]) if d.textures else []
        val = synthetic_validation(files[:d.val_count], style=d.style, size=d.val_size, seed=seed,
                                   textures=textures)
        train = SyntheticRain(files[d.val_count:], style=d.style, crop=d.crop, flips=d.flips, seed=seed,
                              textures=textures, clean_share=d.clean_share,
                              clean_picks=d.clean_picks)
        return train, val
    pairs = PairedFolder(resolve_path(d.root), layout=d.layout)
    held = min(d.val_count, len(pairs) - 1)
    val = [(center_crop(pairs[i].rainy, d.val_size), center_crop(pairs[i].clean, d.val_size)) for i in range(held)]
    train = PairedCrops(pairs, crop=d.crop, flips=d.flips, seed=seed, indices=range(held, len(pairs)))
    return train, val
