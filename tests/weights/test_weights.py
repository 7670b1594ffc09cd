"""Weights: every official SIAN/PReNet/SPANet checkpoint loads strictly as its right variant (by sha256 and by
keys), a JDNet file in the official layout loads through the user's path, conversion to safetensors round-trips,
and bad files give clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import derain
from derain.weights import CATALOG, detect, read_checkpoint, save_converted, unwrap
from derain.weights.catalog import BY_SHA256
from tests.conftest import official_jdnet_state, require_shared

# Which variant each official file is (specs/prenet.md section 3, specs/sian.md).
EXPECTED = {
    "sian/rain100h.pth": "sian", "sian/rain100l.pth": "sian", "sian/rain1400.pth": "sian",
    "spanet/latest.pth": "spanet",
    "prenet/Ablation/PReNet5_LSTM/net_latest.pth": "prenet_lstm",
    "prenet/Ablation/PReNet6_LSTM/net_latest.pth": "prenet_lstm",
    "prenet/Ablation/PReNet7_LSTM/net_latest.pth": "prenet_lstm",
    "prenet/Ablation/PReNet6_MSE/net_latest.pth": "prenet_lstm",
    "prenet/Ablation/PReNet6_RecSSIM/net_latest.pth": "prenet_lstm",
    "prenet/Ablation/PReNet6_GRU/net_latest.pth": "prenet_gru",
    "prenet/Ablation/PReNet6_x/net_latest.pth": "prenet_x",
    "prenet/real/PReNet1.pth": "prenet_real", "prenet/real/PReNet2.pth": "prenet_real",
    **{f"prenet/{d}/{v}/net_latest.pth": m for d in ("Rain100H", "Rain100L", "Rain1400")
       for v, m in (("PReNet6", "prenet"), ("PReNet6_r", "prenet_r"), ("PRN6", "prn"), ("PRN6_r", "prn_r"))},
}
STAGES = {"PReNet5_LSTM": 5, "PReNet7_LSTM": 7, "real": 4}


def official_sums() -> dict[str, str]:
    sums = require_shared("weights", "official", "SHA256SUMS")
    rows = (line.split() for line in sums.read_text().splitlines() if line.strip())
    return {path.removeprefix("./"): sha for sha, path in rows}


def test_catalog_covers_every_official_file() -> None:
    sums = official_sums()
    for rel, sha in sums.items():
        assert sha in BY_SHA256, f"{rel} has no catalog record"
        record = BY_SHA256[sha]
        assert record.file == rel or (record.redistributed and record.source.sha256 == sha)
    assert set(EXPECTED) == set(sums)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_official_file_loads_strictly_as_its_variant(rel: str) -> None:
    path = require_shared("weights", "official", rel)
    weights = read_checkpoint(path)
    assert weights.record is not None and weights.record is BY_SHA256[official_sums()[rel]]
    assert weights.model == EXPECTED[rel]
    assert weights.channel_order == ("bgr" if EXPECTED[rel] == "spanet" else "rgb")
    model = weights.build()  # strict
    stages = 1 if EXPECTED[rel] == "spanet" else next((t for key, t in STAGES.items() if key in rel), 6)
    out = model(torch.rand(1, 3, 9, 11))
    assert len(out.stages) == stages and out.image.shape == (1, 3, 9, 11)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_layout_detected_from_keys_alone(rel: str) -> None:
    sd = unwrap(torch.load(require_shared("weights", "official", rel), map_location="cpu", weights_only=True))
    found = detect(sd)
    # PReNet and its no-residual twins share one key set: keys alone name the family's main model.
    same_keys = {"prenet_lstm": "prenet", "prenet_real": "prenet"}
    assert found.model == same_keys.get(EXPECTED[rel], EXPECTED[rel])
    derain.create_model(found.model, **found.options).load_state_dict(sd, strict=True)


def test_unknown_file_with_known_layout_is_detected(tmp_path: Path) -> None:
    sd = derain.create_model("prn_r").state_dict()
    path = tmp_path / "mine.pth"
    torch.save({"net": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, path)
    weights = read_checkpoint(path)
    assert weights.record is None and weights.model == "prn_r"
    weights.build()


def test_convert_round_trip(tmp_path: Path) -> None:
    src = require_shared("weights", "official", "prenet", "Ablation", "PReNet5_LSTM", "net_latest.pth")
    original = read_checkpoint(src)
    out = save_converted(original, tmp_path / "p5.safetensors")
    again = read_checkpoint(out)
    assert again.model == "prenet_lstm" and dict(again.options) == {"stages": 5}
    assert again.metadata["derain.source_sha256"] == original.sha256
    assert again.record is not None and again.record.name == "prenet_lstm.t5"
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.equal(original.build()(x).image, again.build()(x).image)
    with pytest.raises(derain.InputError, match="exists"):
        save_converted(original, out)


def test_convert_to_float16_halves_the_file_and_loads_as_float32(tmp_path: Path) -> None:
    src = require_shared("weights", "official", "prenet", "Ablation", "PReNet5_LSTM", "net_latest.pth")
    original = read_checkpoint(src)
    full = save_converted(original, tmp_path / "p5.safetensors")
    half = save_converted(original, tmp_path / "p5_fp16.safetensors", float16=True)
    assert 0.45 < half.stat().st_size / full.stat().st_size < 0.55
    again = read_checkpoint(half)
    assert {v.dtype for v in again.state_dict.values()} == {torch.float16}
    assert again.metadata["derain.dtype"] == "float16" and again.model == "prenet_lstm"
    model = again.build()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        gap = (original.build()(x).image - model(x).image).abs().max().item()
    assert 0 < gap < 5e-3  # only the weights' rounding


def test_load_by_catalog_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DERAIN_WEIGHTS", str(require_shared("weights", "official")))
    restorer = derain.load("sian.rain100l", device="cpu")
    assert restorer.name == "sian.rain100l"
    monkeypatch.setenv("DERAIN_WEIGHTS", str(tmp_path))  # not there, not cached, the hub unreachable (conftest)
    with pytest.raises(derain.DownloadError, match=r"pangbo1997/RainRemoval.*put it at .*sian/rain100l.pth"):
        derain.load("sian.rain100l")


def test_catalog_sha_mismatch_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "sian" / "rain100l.pth"
    fake.parent.mkdir()
    torch.save(derain.create_model("sian").state_dict(), fake)
    monkeypatch.setenv("DERAIN_WEIGHTS", str(tmp_path))
    with pytest.raises(derain.WeightsError, match=r"not the file of sian.rain100l \(sha256 expected ab3894"):
        derain.load("sian.rain100l")
    with pytest.raises(derain.WeightsError, match=r"delete it and derain fetches the right one"):
        derain.load("sian.rain100l")


def test_a_changed_bundled_file_says_to_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundled file cannot be fetched again, so the advice for one that changed is to reinstall (what happens
    when a new default is copied into a checkout before its catalog record is updated)."""
    from derain.weights import store

    assert CATALOG["derain.default"].bundled
    fake = tmp_path / "derain.default.safetensors"
    fake.write_bytes(b"not the bundled file")
    real = store.locate
    monkeypatch.setattr(store, "locate", lambda r, **kw: fake if r.name == "derain.default" else real(r, **kw))
    with pytest.raises(derain.WeightsError, match=r"not the file of derain.default .*ships inside the package: "
                                                  r"reinstall derain"):
        derain.load("derain.default")
    assert fake.read_bytes() == b"not the bundled file"


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"this is not a checkpoint\n", "not a PyTorch checkpoint"),
        (pickle.dumps(_Evil()), "not a PyTorch checkpoint"),
    ],
)
def test_bad_files_are_weights_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(derain.WeightsError, match=message):
        read_checkpoint(path)


def test_unknown_layout_and_missing_paths(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(derain.WeightsError, match=r"unknown checkpoint layout.*encoder.weight"):
        read_checkpoint(path)
    with pytest.raises(derain.WeightsError, match="no such file"):
        read_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(derain.WeightsError, match="directory"):
        read_checkpoint(tmp_path)
    with pytest.raises(derain.InputError, match=r"unknown weights 'sian.rain'"):
        derain.load("sian.rain")


def test_wrong_shapes_are_reported(tmp_path: Path) -> None:
    sd = derain.create_model("prenet").state_dict()
    sd["conv.0.weight"] = torch.zeros(4, 32, 3, 3)
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path), metadata={"derain.model": "prenet"})
    with pytest.raises(derain.WeightsError, match="do not fit 'prenet'"):
        read_checkpoint(path).build()


def test_every_record_names_a_registered_model() -> None:
    for record in CATALOG.values():
        model = derain.create_model(record.model, **record.options)
        assert record.name.split(".")[0] in derain.list_models() or record.model in derain.list_models()
        assert model is not None


# Checkpoints trained on RainTrainH: with the right forward each clears the rainy input by a wide margin on a
# Rain100H crop (a wrong variant, e.g. an input residual the ablations never had, lands at or below the input).
H_TRAINED = sorted(rel for rel in EXPECTED if "Rain100H" in rel or "Ablation" in rel or rel == "sian/rain100h.pth")


@pytest.mark.parametrize("rel", H_TRAINED)
def test_h_trained_checkpoints_derain_a_rain100h_crop(rel: str) -> None:
    from derain.io import read_image
    from derain.metrics import psnr

    rainy = read_image(require_shared("data", "rain100H", "rain", "001.png")).image[:, :, 100:196, 150:278]
    clean = read_image(require_shared("data", "rain100H", "norain", "001.png")).image[:, :, 100:196, 150:278]
    restorer = derain.load(require_shared("weights", "official", rel), device="cpu")
    before = float(psnr(rainy, clean, data_range=1.0, y_channel=True)[0])
    after = float(psnr(restorer(rainy), clean, data_range=1.0, y_channel=True)[0])
    assert after > before + 8, f"{rel}: {before:.2f} dB -> {after:.2f} dB"


def _official_jdnet_state(**options: object) -> dict[str, torch.Tensor]:
    """A JDNet state_dict as the official training saves it: nn.DataParallel names (``module.``), random values."""
    gen = torch.Generator().manual_seed(1)
    model = derain.create_model("jdnet", **options)
    return {f"module.{k}": (torch.rand(v.shape, generator=gen) + 0.5 if v.is_floating_point() else v)
            for k, v in model.state_dict().items()}


def test_official_jdnet_layout_loads_through_the_user_path(tmp_path: Path) -> None:
    """``{'net': DataParallel state_dict, 'clock_net', 'opt_net'}`` with exactly the keys and shapes of
    specs/keys/jdnet_keys.txt is detected as JDNet (BGR) and loads strictly via derain.load and derain convert."""
    state = official_jdnet_state()
    assert len(state) == 2084
    path = tmp_path / "latest_net"
    torch.save({"net": state, "clock_net": 1234, "opt_net": {"state": {}, "param_groups": []}}, path)
    restorer = derain.load(path, device="cpu")
    assert restorer.weights.model == "jdnet" and restorer.channel_order == "bgr" and restorer.weights.record is None
    loaded = restorer.model.state_dict()
    assert {f"module.{k}" for k in loaded} == set(state)
    for key, value in loaded.items():
        assert torch.equal(value, state[f"module.{key}"]), key
    converted = read_checkpoint(save_converted(restorer.weights, tmp_path / "jdnet.safetensors"))
    assert converted.model == "jdnet" and converted.channel_order == "bgr"
    rebuilt = converted.build().state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in loaded.items())


@pytest.mark.parametrize(("options", "model"), [({}, "jdnet"), ({"attention": False}, "jdnet_r2"),
                                                ({"attention": False, "calibrated": False}, "jdnet_r1"),
                                                ({"units": 3}, "jdnet")])
def test_jdnet_variants_detected_from_keys(options: dict[str, object], model: str) -> None:
    sd = unwrap({"net": _official_jdnet_state(**options)})
    found = detect(sd)
    assert found.model == model and found.channel_order == "bgr"
    assert dict(found.options) == ({"units": 3} if "units" in options else {})
    derain.create_model(found.model, **found.options).load_state_dict(sd, strict=True)


def test_spanet_convert_keeps_bgr_and_its_record(tmp_path: Path) -> None:
    original = read_checkpoint(require_shared("weights", "official", "spanet", "latest.pth"))
    assert original.record is not None and original.record.name == "spanet.real"
    again = read_checkpoint(save_converted(original, tmp_path / "spanet.safetensors"))
    assert again.model == "spanet" and again.channel_order == "bgr"
    assert again.record is not None and again.record.name == "spanet.real"  # found through the source sha256
    x = torch.rand(1, 3, 17, 23)
    a = derain.Restorer(original.build(), name="a", channel_order=original.channel_order, device="cpu")
    b = derain.load(tmp_path / "spanet.safetensors", device="cpu")
    assert b.channel_order == "bgr"
    torch.testing.assert_close(a(x), b(x))
    # the record's BGR adapter matters: the same weights fed RGB give another image
    assert not torch.allclose(a(x), derain.Restorer(original.build(), name="c", device="cpu")(x))
