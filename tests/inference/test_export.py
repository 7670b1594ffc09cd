"""ONNX export: every registered model exports with dynamic size and ONNX Runtime matches PyTorch within 1e-4, and
the export forms of SPANet's IRNN and JDNet's attention (derain.inference.export) equal their eager forms.

The models are built small (fewer stages, units and channels: the same layers and code paths, a fraction of the
export time) so the whole registry fits in the suite; full-size exports are timed in benchmarks/throughput.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import derain
from derain.archs.prenet import gate_features
from derain.cli import main
from derain.inference.export import export_onnx
from derain.nn.irnn import IRNN
from derain.nn.pairwise import PairwiseSelfAttention
from derain.weights.store import LoadedWeights

ort = pytest.importorskip("onnxruntime", reason='export tests need the export extra: pip install "derain[export]"')
pytest.importorskip("onnxscript", reason='export tests need the export extra: pip install "derain[export]"')


def _small_options(name: str) -> dict[str, object]:
    return dict(derain.archs.get_family(name).small)


@pytest.mark.parametrize("name", derain.list_models())
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


def test_export_forms_equal_the_eager_forms() -> None:
    """What _exportable switches on: IRNN's scan ops (and the doubling fallback) equal the loop, the attention's
    export_mode its bands."""
    g = torch.Generator().manual_seed(3)
    for boundary_relu in (True, False):
        irnn = IRNN(channels=3, boundary_relu=boundary_relu).double()
        for conv in (irnn.up_weight, irnn.right_weight, irnn.down_weight, irnn.left_weight):
            conv.weight.data.uniform_(-0.99, 0.99, generator=g)  # both signs
            conv.bias.data.normal_(0, 0.3, generator=g)
        for shape in ((2, 3, 17, 29), (1, 3, 1, 5), (1, 3, 40, 2)):
            x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
            irnn.method = "loop"
            want = irnn(x)
            for method in ("export", "doubling"):
                irnn.method = method
                for got, ref in zip(irnn(x), want, strict=True):
                    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    sam = PairwiseSelfAttention(in_channels=5, rel_channels=2, out_channels=4, share_channels=2).double()
    for param in sam.parameters():
        param.data.normal_(0, 0.7, generator=g)
    for shape in ((2, 5, 5, 6), (1, 5, 13, 9)):  # 5x6: the 7x7 footprint reflects on every side
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        sam.export_mode = False
        want = sam(x)
        sam.export_mode = True
        torch.testing.assert_close(sam(x), want, rtol=0, atol=1e-12)


def test_export_errors(tmp_path: Path) -> None:
    with pytest.raises(derain.InputError, match=r"must end in \.onnx"):
        export_onnx("derain.default", tmp_path / "m.bin")
    (tmp_path / "m.onnx").write_bytes(b"keep")
    assert main(["export", "-o", str(tmp_path / "m.onnx")]) == 1
    assert (tmp_path / "m.onnx").read_bytes() == b"keep"


@pytest.mark.parametrize("local", [False, True], ids=["image-gate", "local-gate"])
def test_a_gated_pair_exports_with_its_gate(tmp_path: Path, local: bool) -> None:
    """derain.default's gate (the share of the rain layer removed, from the input and what was removed; with a
    local gate, per pixel) is in the exported graph: ONNX Runtime matches the Restorer, which applies it after
    tiling."""
    torch.manual_seed(0)
    options = {**_small_options("prn_pair"), **({"local_gate": True} if local else {})}
    model = derain.create_model("prn_pair", **options).eval()
    if local:
        torch.nn.init.normal_(model.local.body[-1].weight, std=5.0)
    x = torch.rand(2, 3, 37, 29)
    with torch.no_grad():                   # a gate that depends on every feature, near its middle here
        features = gate_features(x, model(x).image.clamp(0, 1))
        model.gate_mean.copy_(features.mean(0))
        model.gate_scale.copy_(features.std(0) + 1e-3)
        model.gate_weight.normal_(0, 0.5)
        model.gate_bias.fill_(0.0)
        strength = model.strength(x, model(x).image.clamp(0, 1))
    loaded = LoadedWeights("prn_pair", options, model.state_dict(), "rgb", "", "test")
    path = export_onnx(loaded, tmp_path / "pair.onnx", example_size=(32, 48))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    restorer = derain.Restorer(model, name="pair", device="cpu")
    assert float(strength.min()) > 0.01 and float(strength.max()) < 0.99   # the gate matters here
    got = session.run(None, {"input": x.numpy()})[0]
    assert float(np.abs(got - restorer(x, scale=1).numpy()).max()) <= 1e-4
