"""Shared fixtures. Tests that need ../shared read its path from DERAIN_SHARED (default: ../shared beside the
repository) and skip with a reason when it is absent; DERAIN_REQUIRE_SHARED=1 (set by .ci/run) turns those
skips into failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_root() -> Path:
    return Path(os.environ.get("DERAIN_SHARED", REPO.parent / "shared")).resolve()


def require_shared(*parts: str) -> Path:
    """Return ``$DERAIN_SHARED/<parts>``; skip (or fail under DERAIN_REQUIRE_SHARED=1) when it is missing."""
    path = _shared_root().joinpath(*parts)
    if not path.exists():
        reason = f"{path} not found (set DERAIN_SHARED to the shared folder)"
        if os.environ.get("DERAIN_REQUIRE_SHARED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (data, official weights, references)."""
    return require_shared()


def official_jdnet_state(*, seed: int = 0) -> dict:
    """A state dict with exactly the keys and shapes of ``specs/keys/jdnet_keys.txt`` (the official DataParallel
    layout, ``module.`` prefix), random positive values; BatchNorm step counters are integers."""
    import torch

    listing = require_shared("specs", "keys", "jdnet_keys.txt").read_text().splitlines()
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for line in filter(str.strip, listing):
        key, shape_text = line.split(" ", 1)
        shape = tuple(int(v) for v in shape_text.strip("()").split(",") if v.strip())
        state[key] = (torch.tensor(7) if key.endswith("num_batches_tracked")
                      else torch.rand(shape, generator=gen) + 0.5)
    return state
