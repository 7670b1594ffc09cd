"""Architecture contracts: every registered model runs forward and backward at odd sizes and has the official
parameter count; the registry rejects unknown names and bad options."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import derain
from derain.archs import FAMILIES, MODELS, Family, Preset, _table, create_model, family_of, get_family
from derain.types import DerainOutput

# Official parameter counts (specs/prenet.md, specs/sian.md).
PARAMS = {
    "prenet": 168_963, "prenet_r": 94_979, "prn": 95_107, "prn_r": 21_123, "prenet_lstm": 168_963,
    "prenet_gru": 150_499, "prenet_x": 168_099, "prenet_real": 168_963, "sian": 510_435,
}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count(name: str) -> None:
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_forward_backward_odd_size(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, stages=2)
    x = torch.rand(2, 3, 13, 19, requires_grad=True)
    out = model(x)
    assert isinstance(out, DerainOutput)
    assert out.image.shape == x.shape
    assert len(out.stages) == 2 and out.stages[-1] is out.image
    out.image.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads, "no parameter received a gradient"


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4), (7, 9)])
def test_sian_tiny_and_odd_sizes(size: tuple[int, int]) -> None:
    model = create_model("sian", stages=1)
    x = torch.rand(1, 3, *size)
    assert model(x).image.shape == x.shape


def test_stage_count_and_dtype_follow_arguments() -> None:
    model = create_model("prenet_lstm", stages=5).double()
    out = model(torch.rand(1, 3, 8, 8, dtype=torch.float64))
    assert len(out.stages) == 5 and out.image.dtype == torch.float64


def test_unused_sian_block_is_kept_for_strict_loading() -> None:
    keys = create_model("sian").state_dict().keys()
    assert "body.conv_m.0.weight" in keys and "body.conv_m.2.bias" in keys
    assert len(keys) == 74


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(derain.InputError, match=r"valid names: .*sian"):
        create_model("sain")


def test_bad_option_is_an_input_error() -> None:
    with pytest.raises(derain.InputError, match="bad options for model 'prenet'"):
        create_model("prenet", colour=True)


def test_duplicate_registry_name_raises() -> None:
    a = Family(name="a", presets=(Preset("x", torch.nn.Identity),), overlap=0, bytes_per_pixel=1.0)
    b = Family(name="b", presets=(Preset("x", torch.nn.Identity),), overlap=0, bytes_per_pixel=1.0)
    with pytest.raises(ValueError, match="duplicate"):
        _table({"a": a, "b": b})


def test_every_model_has_one_family_that_knows_its_class() -> None:
    for name, preset in MODELS.items():
        (family,) = [f for f in FAMILIES.values() if preset in f.presets]
        assert get_family(name) is family and name in {p.name for p in family.presets}
        model = create_model(name, **family.small)
        assert family_of(model) is family
    assert {f.name for f in FAMILIES.values()} == set(FAMILIES)
    # no class belongs to two families
    classes = [c for f in FAMILIES.values() for c in f.classes]
    assert len(classes) == len(set(classes))


def test_unknown_architecture_is_refused_never_guessed() -> None:
    with pytest.raises(derain.DerainError, match="not a registered architecture"):
        family_of(torch.nn.Conv2d(3, 3, 3))
    with pytest.raises(derain.DerainError, match="not a registered architecture"):
        derain.Restorer(torch.nn.Conv2d(3, 3, 3), name="conv", device="cpu")
    with pytest.raises(derain.DerainError, match="unknown architecture 'toy'"):
        get_family("toy")


def test_a_detector_comes_with_its_layout() -> None:
    base = FAMILIES["sian"]
    with pytest.raises(ValueError, match="detector and its layout go together"):
        dataclasses.replace(base, layout="")
    with pytest.raises(ValueError, match="detector and its layout go together"):
        dataclasses.replace(base, detect=None)
    assert dataclasses.replace(base, detect=None, layout="").detect is None  # a family without official files


def test_list_models_matches_registry() -> None:
    assert derain.list_models() == sorted(MODELS)
    assert {"sian", "prenet", "prenet_r", "prn", "prn_r"} <= set(derain.list_models())
