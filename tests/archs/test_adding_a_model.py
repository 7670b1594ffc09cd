"""docs/adding_a_model.md, walked through: its toy architecture file runs exactly as written there, is registered
as its step 2 does (in memory, for this test only), and goes through derain.load, derain run, tiling, export and
checkpoint detection."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

import derain
from derain import archs
from derain.cli import main
from derain.io import read_image
from derain.weights.store import write_weights
from tests.conftest import REPO

DOC = REPO / "docs" / "adding_a_model.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def _toy_module(tmp_path: Path) -> ModuleType:
    path = tmp_path / "toy_from_docs.py"
    path.write_text(_python_blocks()[0])
    spec = importlib.util.spec_from_file_location("toy_from_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_from_docs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    module = _toy_module(tmp_path)
    # step 2 of the page: the family joins the literal registry
    monkeypatch.setitem(archs.FAMILIES, "toy", module.FAMILY)
    for name, entry in archs._table({"toy": module.FAMILY}).items():
        monkeypatch.setitem(archs.MODELS, name, entry)
    yield module
    sys.modules.pop("toy_from_docs", None)


def _image(h: int = 96, w: int = 136) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, h, w, generator=g)


def _weights(tmp_path: Path, name: str = "toy", **options: object) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = derain.create_model(name, **options).eval()
    path = tmp_path / f"{name}.safetensors"
    write_weights(path, model=name, options=options, state_dict=model.state_dict())
    return path, model


def test_the_pages_registry_lines_match_the_code() -> None:
    blocks = _python_blocks()
    assert "from derain.archs import jdnet, prenet, sian, spanet, toy" in blocks[1]
    source = (REPO / "src" / "derain" / "archs" / "__init__.py").read_text()
    assert "from derain.archs import jdnet, prenet, sian, spanet\n" in source
    assert "FAMILIES: dict[str, Family] = {f.name: f for f in (sian.FAMILY, prenet.FAMILY, spanet.FAMILY, " \
           "jdnet.FAMILY)}" in source


def test_toy_family_is_listed_and_built(toy: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert {"toy", "toy_deep"} <= set(derain.list_models())
    assert archs.get_family("toy_deep") is toy.FAMILY
    assert len(derain.create_model("toy_deep").body) == 7  # 4 convolutions, 3 ReLUs
    assert main(["list"]) == 0
    assert "Toy with four convolutions" in capsys.readouterr().out


def test_toy_through_load_tiling_and_run(toy: ModuleType, tmp_path: Path) -> None:
    path, model = _weights(tmp_path, channels=8)
    restorer = derain.load(path, device="cpu")
    assert restorer.family is toy.FAMILY
    x = _image()
    with torch.no_grad():
        expected = model(x).image.clamp(0, 1)
    whole = restorer(x, scale=1)
    assert torch.allclose(whole, expected, atol=1e-5)
    tiled = restorer(x, tile=48, scale=1)  # windows of 48 with the family's overlap of 8
    assert float((tiled - whole).abs().max()) < 1e-5

    src = tmp_path / "in.png"
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(src)
    out = tmp_path / "out.png"
    assert main(["run", str(src), "-o", str(out), "--weights", str(path), "--device", "cpu"]) == 0
    got = read_image(out).image
    want = restorer(read_image(src).image)
    assert float((got - want).abs().max()) <= 1 / 255 + 1e-6


def test_toy_exports(toy: ModuleType, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason='export needs the export extra: pip install "derain[export]"')
    pytest.importorskip("onnxscript", reason='export needs the export extra: pip install "derain[export]"')
    path, _ = _weights(tmp_path, channels=8)
    onnx_file = tmp_path / "toy.onnx"
    assert main(["export", "--weights", str(path), "-o", str(onnx_file)]) == 0
    x = _image(72, 100)  # not the export's example size: the size is dynamic
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"input": x.numpy()})
    assert np.abs(y - derain.load(path, device="cpu")(x, scale=1).numpy()).max() < 1e-4


def test_toy_official_checkpoint_is_detected(toy: ModuleType, tmp_path: Path) -> None:
    for name, options in (("toy", {"channels": 8}), ("toy_deep", {"channels": 4})):
        model = derain.create_model(name, **options)
        plain = tmp_path / f"{name}.pth"
        torch.save(model.state_dict(), plain)  # an "official" file: no derain metadata
        loaded = derain.weights.load_weights(plain)
        assert (loaded.model, dict(loaded.options)) == (name, options)
        loaded.build()
    # a file no family recognises: the error lists the toy's layout beside the built-in ones
    with pytest.raises(derain.WeightsError, match=r"known layouts: .*jdnet \(enterBlock.*; toy \(body\.0\.\.\.\)"):
        derain.weights.detect({"encoder.weight": torch.zeros(1)})
