"""derain.default's form, ``prn_pair``: each image goes to the light- or the heavy-rain network by a classifier on
its rain features, decided once per image (tiles never disagree), and a mixed batch equals its images one by one."""

from __future__ import annotations

import torch

import derain
from derain.archs.prenet import rain_features


def _pair() -> torch.nn.Module:
    torch.manual_seed(0)
    pair = derain.create_model("prn_pair", stages=2, channels=8).eval()
    pair.router_weight.zero_()
    pair.router_weight[1] = 1.0          # heavy when the mean 1x7 row excess is above the mean
    pair.router_mean[1] = 0.05
    pair.router_scale.fill_(0.01)
    return pair


def test_features_and_routing() -> None:
    pair = _pair()
    flat = torch.full((1, 3, 40, 60), 0.4)
    streaks = flat.clone()
    streaks[..., ::4] = 1.0               # bright one-pixel columns: rain-like excess across rows
    assert rain_features(torch.cat([flat, streaks])).shape == (2, 9)
    assert pair.route(torch.cat([flat, streaks])).tolist() == [False, True]


def test_mixed_batch_equals_one_by_one() -> None:
    pair = _pair()
    x = torch.rand(3, 3, 24, 32)
    heavy = torch.tensor([True, False, True])
    with torch.no_grad():
        both = pair(x, heavy=heavy).image
        for i in range(3):
            alone = (pair.heavy if heavy[i] else pair.light)(x[i:i + 1]).image
            torch.testing.assert_close(both[i:i + 1], alone)


def test_tiles_of_one_image_share_one_decision() -> None:
    pair = _pair()
    restorer = derain.Restorer(pair, name="pair", device="cpu")
    calls: list[object] = []
    real_route = pair.route
    pair.route = lambda x: calls.append(x.shape) or real_route(x)  # type: ignore[method-assign]
    seen: list[object] = []
    hook = pair.register_forward_pre_hook(lambda m, a, kw: seen.append(kw.get("heavy")), with_kwargs=True)
    try:
        restorer(torch.rand(1, 3, 96, 130), tile=48, overlap=16, scale=1)
    finally:
        hook.remove()
    assert calls == [torch.Size([1, 3, 96, 130])]     # decided once, on the whole image
    assert len(seen) > 1 and all(s is not None and torch.equal(s, seen[0]) for s in seen)
