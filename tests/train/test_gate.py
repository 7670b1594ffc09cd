"""derain.train.gate: the router's and gate's logistic fits, and the gate fitted to the gated output's PSNR."""

from __future__ import annotations

import pytest
import torch

from derain.archs import create_model
from derain.archs.prenet import gate_features
from derain.metrics import psnr, rgb_to_y
from derain.train.gate import ROUNDING_MSE, fit_logistic, fit_share, gated_psnr, share_terms


def test_share_terms_give_the_psnr_of_every_share() -> None:
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(3, 3, 20, 24, generator=g)
    x = (clean + 0.3 * torch.rand(3, 3, 20, 24, generator=g)).clamp(0, 1)
    out = (x - 0.2 * torch.rand(3, 3, 20, 24, generator=g)).clamp(0, 1)
    terms = share_terms(x, out, clean)
    for s in (0.0, 0.3, 1.0):
        gated = x + s * (out - x)
        mse = ((rgb_to_y(gated) - rgb_to_y(clean)) ** 2).flatten(1).mean(1).double()
        assert torch.allclose(gated_psnr(terms, torch.full((3,), s)), -10 * torch.log10(mse + ROUNDING_MSE),
                              atol=1e-6)
    # with no error left, only the rounding's: 10 log10(12 * 255^2) = 58.92 dB; and it matches derain.metrics
    assert abs(float(gated_psnr(share_terms(clean, clean, clean), torch.ones(3))[0]) - 58.92) < 0.01
    s0 = gated_psnr(terms, torch.zeros(3)).float()
    direct = psnr(x, clean, data_range=1.0, y_channel=True).float()
    assert torch.all(s0 < direct) and torch.all(direct - s0 < 0.2)  # the rounding floor costs a little


def _problem(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images whose best share is sigmoid(2 f0 - 1): one feature says how much of the removed layer is rain."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    best = torch.sigmoid(2 * feats[:, 0] - 1)
    a = 1e-3 * (0.5 + torch.rand(n, generator=g, dtype=torch.float64))  # what the network removes
    c = a * best * best + 1e-5  # what remains when the best share is removed: 50 dB
    terms = torch.stack([a, a * best, c], dim=1)  # mse(s) = a (s - best)^2 + 1e-5
    return feats, (best > 0.5).double(), terms


def test_fit_share_serves_the_images_better_than_the_classifier_it_starts_from() -> None:
    feats, helps, terms = _problem(400, 1)
    start = fit_logistic(feats, helps)
    fitted = fit_share(feats, terms, start=start)
    best = torch.sigmoid(2 * feats[:, 0] - 1)
    classifier, share, ideal = (float(gated_psnr(terms, s).mean()) for s in (start(feats.float()),
                                                                             fitted(feats.float()), best))
    assert share > classifier + 0.5 and share > ideal - 0.1
    # it generalises: held-out images from the same law
    feats2, _, terms2 = _problem(400, 2)
    assert float(gated_psnr(terms2, fitted(feats2.float())).mean()) > float(gated_psnr(terms2, start(
        feats2.float())).mean()) + 0.5
    assert float((fitted(feats.float()) - best).abs().max()) < 0.1


def test_fit_logistic_classifies_and_stores_as_a_pairs_buffers() -> None:
    feats, helps, _ = _problem(300, 3)
    model = fit_logistic(feats, helps)
    assert float(((model.logits(feats.float()) > 0).double() == helps).double().mean()) > 0.95

    g = torch.Generator().manual_seed(4)
    x = torch.rand(12, 3, 16, 16, generator=g)
    out = x * torch.rand(12, 1, 1, 1, generator=g)
    gate = fit_logistic(gate_features(x, out), torch.arange(12) % 2)
    pair = create_model("prn_pair")
    for name, value in gate.buffers("gate").items():
        getattr(pair, name).copy_(value)
    assert torch.allclose(pair.strength(x, out), gate(gate_features(x, out)), atol=1e-6)


def test_a_constant_feature_does_not_break_the_fit() -> None:
    feats, helps, terms = _problem(200, 5)
    feats[:, 3] = 1.0
    model = fit_share(feats, terms, start=fit_logistic(feats, helps))
    assert torch.isfinite(model.weight).all() and torch.isfinite(model(feats.float())).all()


def _streaks_and_damage(n: int, seed: int) -> list:
    """Images where the network removes every streak (bright one-pixel columns, 0.3) and also adds noise of 0.04
    elsewhere (texture it damages): no single share serves both, a per-pixel one does."""
    from derain.train.gate import GateSample

    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        clean = 0.3 + 0.3 * torch.rand(3, 1, 1, generator=g) * torch.ones(3, 48, 48)
        rain = torch.zeros(1, 48, 48)
        rain[..., torch.randperm(48, generator=g)[:6]] = 0.3
        x = clean + rain
        out = clean + 0.04 * torch.randn(3, 48, 48, generator=g) * (rain == 0)
        reference = float(((rgb_to_y(x[None] + 0.5 * (out - x)[None]) - rgb_to_y(clean[None])) ** 2).mean())
        samples.append(GateSample(x, out, clean, 0.0, reference))  # reference: the error at the gate's 0.5
    return samples


@pytest.mark.parametrize("objective", ["crop", "image"])
def test_fit_local_learns_a_share_per_pixel(objective: str) -> None:
    from derain.archs.prenet import LocalGate
    from derain.train.gate import fit_local

    torch.manual_seed(0)
    local = LocalGate()
    train, held_out = _streaks_and_damage(24, 6), _streaks_and_damage(8, 7)
    logs: list[tuple[int, float]] = []
    fit_local(local, train, steps=300, crop=32, batch=8, lr=3e-3, cap=50.0, objective=objective,  # type: ignore[arg-type]
              log=lambda step, p: logs.append((step, p)))
    assert [step for step, _ in logs] == [100, 200, 300] and logs[-1][1] > logs[0][1]
    x, out, clean = (torch.stack([getattr(s, name) for s in held_out]) for name in ("x", "out", "clean"))
    terms = share_terms(x, out, clean)
    best_constant = max(float(gated_psnr(terms, torch.full((8,), s)).mean()) for s in torch.linspace(0, 1, 21))
    with torch.no_grad():
        share = torch.sigmoid(local(x, out))
    local_psnr = float(gated_psnr(share_terms(x, x + share * (out - x), clean), torch.ones(8)).mean())
    assert local_psnr > best_constant + 3.0
    streak = (x - clean)[:, :1] > 0
    assert float(share[streak].mean()) > 0.8 and float(share[~streak].mean()) < 0.3
