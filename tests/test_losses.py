"""Losses are built on derain.metrics and follow the papers' definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from derain.errors import InputError
from derain.losses import LOSSES, get_loss, negative_ssim
from derain.metrics import ssim
from derain.types import DerainOutput


def _images(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(2, 3, 23, 19, generator=g)
    out = (clean + 0.1 * torch.randn(2, 3, 23, 19, generator=g)).clamp(0, 1)
    mask = (torch.rand(2, 1, 23, 19, generator=g) > 0.8).float()
    return out, clean, mask


def test_negative_ssim_is_minus_the_official_ssim() -> None:
    out, clean, _ = _images()
    expected = -ssim(out, clean, data_range=1.0, padding="same").mean()
    assert torch.equal(negative_ssim(out, clean), expected)
    assert float(negative_ssim(clean, clean)) == pytest.approx(-1.0, abs=1e-6)


def test_named_losses() -> None:
    out, clean, mask = _images()
    s1, s2 = (out * 0.9), out
    att = torch.rand(2, 1, 23, 19)
    o = DerainOutput(image=s2, stages=(s1, s2), attention=(att, torch.rand(2, 1, 23, 19)))
    assert torch.equal(get_loss("neg_ssim")(o, clean, mask), negative_ssim(s2, clean))
    assert torch.allclose(get_loss("neg_ssim_stages")(o, clean, mask),
                          negative_ssim(s1, clean) + negative_ssim(s2, clean))
    expected = (F.l1_loss(s2, clean) + 1 - ssim(s2, clean, data_range=1.0, padding="same").mean()
                + F.mse_loss(att, mask))
    assert torch.allclose(get_loss("spanet")(o, clean, mask), expected)
    assert torch.equal(get_loss("l1")(o, clean, mask), F.l1_loss(s2, clean))
    assert torch.equal(get_loss("mse")(o, clean, mask), F.mse_loss(s2, clean))
    assert torch.allclose(get_loss("l1_ssim")(o, clean, mask),
                          F.l1_loss(s2, clean) + 1 - ssim(s2, clean, data_range=1.0, padding="same").mean())
    assert set(LOSSES) == {"neg_ssim", "neg_ssim_stages", "spanet", "l1_ssim", "l1", "mse"}


def test_losses_have_gradients() -> None:
    out, clean, mask = _images()
    x = out.clone().requires_grad_(True)
    a = torch.rand(2, 1, 23, 19, requires_grad=True)
    for name in LOSSES:
        loss = get_loss(name)(DerainOutput(image=x, stages=(x,), attention=(a,)), clean, mask)
        (grad,) = torch.autograd.grad(loss, x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_errors() -> None:
    out, clean, mask = _images()
    with pytest.raises(InputError, match=r"unknown loss 'ssim'.*valid losses"):
        get_loss("ssim")
    with pytest.raises(InputError, match=r"needs SPANet"):
        get_loss("spanet")(DerainOutput(image=out, stages=(out,)), clean, mask)
