"""Training losses, built on :mod:`derain.metrics`.

The SSIM of the official training code (PReNet/SIAN/JDNet ``SSIM.py``) is our :func:`derain.metrics.ssim` with
an 11x11 Gaussian window (sigma 1.5), zero 'same' padding and data range 1, averaged over the batch.

Each named loss (:data:`LOSSES`) maps ``(output, clean, mask)`` to a scalar:

``neg_ssim``         -SSIM of the final image (PReNet, JDNet)
``neg_ssim_stages``  sum over every stage of -SSIM (SIAN's accumulated loss)
``spanet``           L1 + (1 - SSIM) + MSE between the first attention map and the rain mask (SPANet)
``l1_ssim``          L1 + (1 - SSIM) of the final image (SPANet's loss without the attention term; the L1 term
                     holds the overall brightness, which SSIM barely sees: derain's default models)
``l1``, ``mse``      on the final image (JDNet's loss study, PReNet's MSE ablation)
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from derain.errors import InputError
from derain.metrics import ssim
from derain.types import DerainOutput

LossFn = Callable[[DerainOutput, Tensor, Tensor], Tensor]


def ssim_loss_value(x: Tensor, y: Tensor) -> Tensor:
    """Batch-mean SSIM as the official training code computes it (zero 'same' padding, data range 1)."""
    return ssim(x, y, data_range=1.0, padding="same").mean()


def negative_ssim(x: Tensor, y: Tensor) -> Tensor:
    return -ssim_loss_value(x, y)


def stage_sum(fn: Callable[[Tensor, Tensor], Tensor], stages: tuple[Tensor, ...], target: Tensor) -> Tensor:
    """``fn`` summed over every stage's estimate."""
    if not stages:
        raise InputError("the model output holds no stages")
    total = fn(stages[0], target)
    for x in stages[1:]:
        total = total + fn(x, target)
    return total


def attention_loss(attention: tuple[Tensor, ...], mask: Tensor) -> Tensor:
    """MSE between the first attention map's first channel and the binary rain mask (SPANet)."""
    if not attention:
        raise InputError("this model returns no attention maps; the 'spanet' loss needs SPANet")
    first = attention[0][:, :1]
    if first.shape[-2:] != mask.shape[-2:]:
        first = F.interpolate(first, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    return F.mse_loss(first, mask)


def _neg_ssim(out: DerainOutput, clean: Tensor, mask: Tensor) -> Tensor:
    return negative_ssim(out.image, clean)


def _neg_ssim_stages(out: DerainOutput, clean: Tensor, mask: Tensor) -> Tensor:
    return stage_sum(negative_ssim, out.stages or (out.image,), clean)


def _spanet(out: DerainOutput, clean: Tensor, mask: Tensor) -> Tensor:
    return (F.l1_loss(out.image, clean) + (1 - ssim_loss_value(out.image, clean))
            + attention_loss(out.attention, mask))


def _l1_ssim(out: DerainOutput, clean: Tensor, mask: Tensor) -> Tensor:
    return F.l1_loss(out.image, clean) + (1 - ssim_loss_value(out.image, clean))


def _l1(out: DerainOutput, clean: Tensor, mask: Tensor) -> Tensor:
    return F.l1_loss(out.image, clean)


def _mse(out: DerainOutput, clean: Tensor, mask: Tensor) -> Tensor:
    return F.mse_loss(out.image, clean)


LOSSES: dict[str, LossFn] = {
    "neg_ssim": _neg_ssim,
    "neg_ssim_stages": _neg_ssim_stages,
    "spanet": _spanet,
    "l1_ssim": _l1_ssim,
    "l1": _l1,
    "mse": _mse,
}


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise InputError(f"unknown loss {name!r}; valid losses: {', '.join(sorted(LOSSES))}") from None
