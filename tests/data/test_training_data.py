"""Training samples: rain-free crops ("do no harm") in the synthetic training set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from derain.data.training import SyntheticRain, veil_score
from derain.errors import DataError, InputError
from derain.io import write_image
from derain.train.config import load_config


def _photos(folder: Path, count: int = 3) -> list[Path]:
    g = torch.Generator().manual_seed(0)
    paths = []
    for k in range(count):
        paths.append(folder / f"{k}.png")
        write_image(paths[-1], torch.rand(1, 3, 48, 64, generator=g))
    return paths


def test_clean_share_leaves_that_share_of_crops_rain_free(tmp_path: Path) -> None:
    files = _photos(tmp_path)
    data = SyntheticRain(files, style="light", crop=32, seed=0, clean_share=0.3)
    clean_draws = 0
    for draw in range(60):
        rainy, clean, mask = data[(draw % 3, draw)]
        if torch.equal(rainy, clean):
            assert float(mask.sum()) == 0
            clean_draws += 1
        else:
            assert float(mask.sum()) > 0
    assert 8 <= clean_draws <= 30  # about 18 of 60
    again = SyntheticRain(files, style="light", crop=32, seed=0, clean_share=0.3)
    assert all(torch.equal(data[(k % 3, k)][0], again[(k % 3, k)][0]) for k in range(10))  # seeded
    plain = SyntheticRain(files, style="light", crop=32, seed=0)
    assert not any(torch.equal(*plain[(k % 3, k)][:2]) for k in range(20))
    with pytest.raises(DataError, match="clean_share"):
        SyntheticRain(files, clean_share=1.0)


def test_config_checks_clean_share(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  name: prn\ndata:\n  clean_share: 1.5\n")
    with pytest.raises(InputError, match=r"data\.clean_share"):
        load_config(config)


def test_clean_picks_takes_the_most_veil_like_crop_for_rain_free_samples(tmp_path: Path) -> None:
    # half of each photo is bright and flat (what a veil-removing network darkens), half dark texture
    g = torch.Generator().manual_seed(1)
    files = []
    for k in range(3):
        image = torch.rand(1, 3, 96, 128, generator=g) * 0.5
        image[..., :64] = 0.85 + 0.004 * torch.rand(1, 3, 96, 64, generator=g)
        files.append(tmp_path / f"{k}.png")
        write_image(files[-1], image)
    one = SyntheticRain(files, style="light", crop=32, seed=0, clean_share=0.5)
    six = SyntheticRain(files, style="light", crop=32, seed=0, clean_share=0.5, clean_picks=6)
    flat = {1: 0, 6: 0}
    rain_free = 0
    for draw in range(60):
        a, b = one[(draw % 3, draw)], six[(draw % 3, draw)]
        if not torch.equal(a[0], a[1]):  # rainy samples draw exactly what they did
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
            continue
        rain_free += 1
        assert torch.equal(b[0], b[1]) and float(b[2].sum()) == 0
        assert veil_score(b[0]) >= veil_score(a[0])  # the first crop is one of the candidates
        flat[1] += float(a[0].std()) < 0.01
        flat[6] += float(b[0].std()) < 0.01
    assert rain_free >= 15
    assert flat[6] >= 0.8 * rain_free > flat[1] * 1.5
    again = SyntheticRain(files, style="light", crop=32, seed=0, clean_share=0.5, clean_picks=6)
    assert all(torch.equal(six[(k % 3, k)][0], again[(k % 3, k)][0]) for k in range(12))  # seeded
    with pytest.raises(DataError, match="clean_picks"):
        SyntheticRain(files, clean_picks=0)
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  name: prn\ndata:\n  clean_picks: 0\n")
    with pytest.raises(InputError, match=r"data\.clean_picks"):
        load_config(config)
