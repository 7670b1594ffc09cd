"""Training data: random crops and flips of paired folders, or of clean images with synthetic rain on the fly.

Every sample is drawn from its own seeded generator, keyed by ``(seed, draw)`` where ``draw`` is the sample's
global position in the run (step x batch x world size + offset). A sample is therefore the same whichever
worker process or rank makes it, and a resumed run sees exactly the samples an uninterrupted run would:
:class:`StepBatchSampler` hands out ``(index, draw)`` keys from the step to resume at.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from derain.data.paired import PairedFolder
from derain.data.sets import resolve_images
from derain.data.synthetic import add_rain, check_style, derive_seed, generator, load_textures, synthesize_folder
from derain.errors import DataError
from derain.io import list_images, read_image

Sample = tuple[Tensor, Tensor, Tensor]  # rainy (3, h, w), clean (3, h, w), rain mask (1, h, w)
Key = tuple[int, int]  # (dataset index, global draw number)


def read_exclusions(path: str | Path) -> set[str]:
    """File names to leave out of a training set: the ``bsds_file`` column of a TSV such as
    ``bsds500/overlap_with_Rain100.tsv``, or one name per line in a plain text file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: exclusion list not found")
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if lines and "\t" in lines[0]:
        rows = list(csv.DictReader(lines, delimiter="\t"))
        column = "bsds_file" if "bsds_file" in rows[0] else next(iter(rows[0]))
        return {Path(row[column]).name for row in rows if row.get(column)}
    return {Path(line.strip()).name for line in lines}


def synthesize(clean: str | Path, out: str | Path, *, style: str = "light", seed: int = 0,
               textures: str | Path | None = None, exclude: str | Path | None = None, limit: int | None = None,
               overwrite: bool = False) -> list[Path]:
    """``derain synth``: :func:`~derain.data.synthetic.synthesize_folder` on clean images given as a folder or a
    data set's name (whose own never-train list is left out, with the names in ``exclude``), with streak
    ``textures`` from a folder or a data set's name. The style is checked before anything is fetched or read."""
    check_style(style)
    streaks = load_textures(resolve_images(textures)[0]) if textures is not None else []
    folder, never = resolve_images(clean)
    skip = frozenset(never | (read_exclusions(exclude) if exclude is not None else set()))
    return synthesize_folder(folder, out, style=style, seed=seed, textures=streaks, limit=limit, overwrite=overwrite,
                             exclude=skip)


def clean_files(root: str | Path, *, exclude: str | Path | None = None,
                drop: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """The clean images directly in ``root`` (natural order), less the names listed in ``exclude`` and ``drop``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder of clean images (give a folder or a data set's name: bsds500)")
    files = list_images(root)
    never = set(drop) | (read_exclusions(exclude) if exclude is not None else set())
    if never:
        files = [p for p in files if p.name not in never]
    if not files:
        raise DataError(f"{root}: no clean images left to train on (image files: .png, .jpg, ...)")
    return files


def _crop_box(g: torch.Generator, h: int, w: int, size: int) -> tuple[int, int]:
    top = int(torch.randint(0, h - size + 1, (), generator=g))
    left = int(torch.randint(0, w - size + 1, (), generator=g))
    return top, left


def _fit(x: Tensor, size: int) -> Tensor:
    """Reflect-pad an image smaller than the crop (replicate when it is too small to reflect)."""
    h, w = x.shape[-2:]
    if h >= size and w >= size:
        return x
    ph, pw = max(size - h, 0), max(size - w, 0)
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x[None], (0, pw, 0, ph), mode=mode)[0]


def _augment(g: torch.Generator, images: Sequence[Tensor], size: int, flips: bool) -> list[Tensor]:
    """The same random crop (and horizontal flip) of every image."""
    images = [_fit(x, size) for x in images]
    h, w = images[0].shape[-2:]
    top, left = _crop_box(g, h, w, size)
    out = [x[..., top:top + size, left:left + size] for x in images]
    if flips and float(torch.rand((), generator=g)) < 0.5:
        out = [x.flip(-1) for x in out]
    return [x.contiguous() for x in out]


def veil_score(x: Tensor) -> float:
    """How much a crop (3, H, W) looks veiled to a network trained on our heavy rain: the mean of its dark channel
    (each pixel's darkest colour channel). Bright, colourless regions score high, as in haze (He et al.'s dark
    channel prior) and in :func:`derain.data.diverse.depth_proxy`, which veils them most; a network that learned
    to remove that veil darkens such a scene (grey stone, overcast sky) when it has no rain. (Stage 20 of
    docs/training.md used the mean luminance less its standard deviation instead, commit 18ab821.)"""
    return float(x.amin(0).mean())


def _veiled_crop(g: torch.Generator, image: Tensor, first: Tensor, size: int, picks: int) -> Tensor:
    """Of ``first`` and ``picks - 1`` more random crops of ``image``, the one with the highest :func:`veil_score`."""
    full = _fit(image, size)
    h, w = full.shape[-2:]
    best, score = first, veil_score(first)
    for _ in range(picks - 1):
        top, left = _crop_box(g, h, w, size)
        crop = full[..., top:top + size, left:left + size].contiguous()
        s = veil_score(crop)
        if s > score:
            best, score = crop, s
    return best


def _split_key(key: int | Key) -> Key:
    return (key, key) if isinstance(key, int) else (int(key[0]), int(key[1]))


class SyntheticRain(Dataset[Sample]):
    """Clean images with synthetic rain made on the fly: a random crop, a flip, then rain of ``style``.

    clean_share: the share of samples left without rain (input = target, empty mask), so that a model learns to
    leave a rain-free image as it is ("do no harm"); 0 (default) draws exactly the rain it always did.
    clean_picks: a rain-free sample is the most veil-like (:func:`veil_score`: bright and colourless) of this many
    random crops of its photo, the crop a network that removes heavy rain's veil is most likely to darken; 1
    (default) keeps the first crop, exactly as before.
    """

    def __init__(self, files: Sequence[str | Path], *, style: str = "light", crop: int = 64, flips: bool = True,
                 seed: int = 0, textures: Sequence[Tensor] = (), clean_share: float = 0.0,
                 clean_picks: int = 1) -> None:
        if not files:
            raise DataError("no clean images given")
        if not 0.0 <= clean_share < 1.0:
            raise DataError(f"clean_share must be at least 0 and below 1, got {clean_share!r}")
        if clean_picks < 1:
            raise DataError(f"clean_picks must be at least 1, got {clean_picks!r}")
        self.files = [Path(f) for f in files]
        self.style, self.crop, self.flips, self.seed = style, crop, flips, seed
        self.textures = list(textures)
        self.clean_share, self.clean_picks = clean_share, clean_picks

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | Key) -> Sample:
        index, draw = _split_key(key)
        g = generator("synthetic", self.seed, draw)
        image = read_image(self.files[index]).image[0]
        (clean,) = _augment(g, [image], self.crop, self.flips)
        if self.clean_share and float(torch.rand((), generator=g)) < self.clean_share:
            if self.clean_picks > 1:
                clean = _veiled_crop(g, image, clean, self.crop, self.clean_picks)
            return clean, clean.clone(), torch.zeros_like(clean[:1])
        rainy, mask = add_rain(clean, style=self.style, g=g, textures=self.textures)
        return rainy, clean, mask


def rain_mask(rainy: Tensor, clean: Tensor) -> Tensor:
    """SPANet's attention target: 1 where the 8-bit rainy and clean images differ in any channel."""
    a, b = (rainy * 255).round(), (clean * 255).round()
    return (a != b).any(dim=0, keepdim=True).float()


class PairedCrops(Dataset[Sample]):
    """Random crops (and flips) of a paired folder; the mask is :func:`rain_mask` of the crops."""

    def __init__(self, pairs: PairedFolder, *, crop: int = 64, flips: bool = True, seed: int = 0,
                 indices: Sequence[int] | None = None) -> None:
        self.indices = list(range(len(pairs))) if indices is None else list(indices)
        if not self.indices:
            raise DataError(f"{pairs}: no pairs to train on")
        self.pairs, self.crop, self.flips, self.seed = pairs, crop, flips, seed

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int | Key) -> Sample:
        index, draw = _split_key(key)
        pair = self.pairs[self.indices[index]]
        g = generator("paired", self.seed, draw)
        rainy, clean = _augment(g, [pair.rainy, pair.clean], self.crop, self.flips)
        return rainy, clean, rain_mask(rainy, clean)


def center_crop(x: Tensor, size: int) -> Tensor:
    x = _fit(x, size)
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size].contiguous()


def synthetic_validation(files: Sequence[str | Path], *, style: str, size: int, seed: int,
                         textures: Sequence[Tensor] = ()) -> list[tuple[Tensor, Tensor]]:
    """A fixed validation set: centre crops of ``files`` with rain drawn from ``seed`` (same every run)."""
    out = []
    for k, path in enumerate(files):
        clean = center_crop(read_image(path).image[0], size)
        rainy, _ = add_rain(clean, style=style, g=generator("validation", seed, k), textures=textures)
        out.append((rainy, clean))
    return out


class StepBatchSampler(Sampler[list[Key]]):
    """Batches of ``(index, draw)`` keys for steps ``start+1 .. steps``, this rank's share of each global batch.

    The global sample number ``draw = (step - 1) * batch * world + rank * batch + j`` walks through a fresh
    seeded permutation of the dataset every epoch; each rank takes its own slice of every global batch, so no
    sample is used twice within an epoch and resuming at any step reproduces the same sequence.
    """

    def __init__(self, size: int, *, batch: int, steps: int, start: int = 0, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if size < 1:
            raise DataError("the training set is empty")
        self.size, self.batch, self.steps, self.start = size, batch, steps, start
        self.seed, self.rank, self.world = seed, rank, world
        self._perm: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def _permutation(self, epoch: int) -> Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator()
            g.manual_seed(derive_seed("epoch", self.seed, epoch))
            self._perm = (epoch, torch.randperm(self.size, generator=g))
        return self._perm[1]

    def __iter__(self) -> Iterator[list[Key]]:
        for step in range(self.start + 1, self.steps + 1):
            first = ((step - 1) * self.world + self.rank) * self.batch
            keys = []
            for draw in range(first, first + self.batch):
                epoch, position = divmod(draw, self.size)
                keys.append((int(self._permutation(epoch)[position]), draw))
            yield keys
