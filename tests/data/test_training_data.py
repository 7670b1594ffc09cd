"""Training samples: rain-free crops ("do no harm") in the synthetic training set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from derain.data.training import SyntheticRain
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
