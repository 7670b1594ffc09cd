"""ONNX export: every registered model but SPANet and JDNet-with-attention exports with dynamic size and ONNX
Runtime matches PyTorch within 1e-4; those two are refused with their reason (derain.inference.export).

The models are built small (fewer stages, units and channels: the same layers and code paths, a fraction of the
export time) so the whole registry fits in the suite; full-size exports are timed in benchmarks/throughput.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import derain
from derain.cli import main
from derain.inference.export import export_onnx
from derain.weights.store import LoadedWeights

ort = pytest.importorskip("onnxruntime", reason='export tests need the export extra: pip install "derain[export]"')
pytest.importorskip("onnxscript", reason='export tests need the export extra: pip install "derain[export]"')

SMALL = {"prenet": {"stages": 2, "channels": 8}, "sian": {"stages": 2, "channels": 8},
         "jdnet": {"units": 2}}  # JDNet's attention needs channels in multiples of 32


def _small_options(name: str) -> dict[str, object]:
    return dict(SMALL[derain.archs.get_entry(name).family])


REFUSED = ("spanet", "jdnet")  # see derain.inference.export
EXPORTABLE = [n for n in derain.list_models() if n not in REFUSED]


@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_model_exports_and_matches(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = _small_options(name)
    model = derain.create_model(name, **options).eval()
    bgr = name == "prenet_real"  # exercise the in-graph channel flip once
    loaded = LoadedWeights(name, options, model.state_dict(), "bgr" if bgr else "rgb", "", "test")
    path = export_onnx(loaded, tmp_path / f"{name}.onnx", example_size=(32, 48))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    restorer = derain.Restorer(model, name=name, channel_order="bgr" if bgr else "rgb", device="cpu")
    for batch, h, w in ((1, 32, 48), (2, 37, 29)):
        x = torch.rand(batch, 3, h, w)
        got = session.run(None, {"input": x.numpy()})[0]
        want = restorer(x).numpy()
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= 1e-4, name


@pytest.mark.parametrize(("name", "why"), [("spanet", "SPANet cannot be exported to ONNX yet"),
                                           ("jdnet", "JDNet with pairwise self-attention cannot be exported")])
def test_refused_exports_say_why(name: str, why: str, tmp_path: Path) -> None:
    options = {"channels": 8} if name == "spanet" else {"units": 2}
    loaded = LoadedWeights(name, options, derain.create_model(name, **options).state_dict(), "rgb", "", "test")
    with pytest.raises(derain.InputError, match=why):
        export_onnx(loaded, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(derain.InputError, match=r"must end in \.onnx"):
        export_onnx("derain.default", tmp_path / "m.bin")
    (tmp_path / "m.onnx").write_bytes(b"keep")
    assert main(["export", "-o", str(tmp_path / "m.onnx")]) == 1
    assert (tmp_path / "m.onnx").read_bytes() == b"keep"
