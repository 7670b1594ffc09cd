"""ONNX export (optional extra ``export``: onnx, onnxscript, onnxruntime).

The exported graph is the whole restorer: it takes ``input`` float32 ``(N, 3, H, W)`` RGB in [0, 1] with dynamic
N, H and W, flips channels itself for weights trained on BGR, and returns ``output``, the clean image clamped to
[0, 1]. PReNet's family, SIAN and JDNet's ablations R1/R2 export as they run. Two are refused with their reason:
SPANet (its IRNN has an export-friendly doubling scan, ``method="doubling"``, but tracing the graph is too slow to
be usable yet) and JDNet with attention (the exporter fixes the attention's shapes to the example's).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from derain.archs import get_entry
from derain.errors import InputError
from derain.weights import LoadedWeights, load_weights

MAX_SIDE = 8192


class _Graph(nn.Module):
    def __init__(self, model: nn.Module, bgr: bool) -> None:
        super().__init__()
        self.model, self.bgr = model, bgr

    def forward(self, x: Tensor) -> Tensor:
        if self.bgr:
            x = x.flip(1)
        y = self.model(x).image
        if self.bgr:
            y = y.flip(1)
        return y.clamp(0, 1)


def _exportable(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model).eval().float()
    for module in model.modules():
        if module.__class__.__name__ == "IRNN" and hasattr(module, "method"):
            module.method = "doubling"
    return model


def export_onnx(weights: str | os.PathLike[str] | LoadedWeights, out: str | os.PathLike[str], *,
                example_size: tuple[int, int] = (64, 96), overwrite: bool = False) -> Path:
    """Write ``weights`` (catalog name, checkpoint path or loaded weights) as an ONNX file with dynamic size."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise InputError('ONNX export needs the export extra: pip install "derain[export]"') from None
    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output file must end in .onnx")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: exists; pass --overwrite to replace it")
    loaded = weights if isinstance(weights, LoadedWeights) else load_weights(weights)
    if get_entry(loaded.model).family == "spanet":
        raise InputError("SPANet cannot be exported to ONNX yet: its IRNN exports as a 13-step doubling scan "
                         "(nn.irnn.sweep_doubling), and tracing that graph took over 10 minutes here without "
                         "finishing; run SPANet in PyTorch (derain run) for now")
    entry = get_entry(loaded.model)
    if entry.family == "jdnet" and {**entry.preset, **loaded.options}.get("attention", True):
        raise InputError("JDNet with pairwise self-attention cannot be exported to ONNX with a dynamic size yet: "
                         "the exporter fixes the attention's shapes to the example's; the ablations jdnet_r1 and "
                         "jdnet_r2 (no attention) export")
    graph = _Graph(_exportable(loaded.build()), loaded.channel_order == "bgr").eval()
    example = torch.rand(1, 3, *example_size)
    dims = {0: torch.export.Dim("batch", min=1, max=64), 2: torch.export.Dim("height", min=16, max=MAX_SIDE),
            3: torch.export.Dim("width", min=16, max=MAX_SIDE)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(graph, (example,), dynamo=True, dynamic_shapes={"x": dims},
                                        input_names=["input"], output_names=["output"], verbose=False)
        assert program is not None
        dims = program.model_proto.graph.input[0].type.tensor_type.shape.dim
        if any(d.HasField("dim_value") for d in dims[2:]):
            raise InputError(f"{loaded.model}: the exporter fixed the image size; this model cannot be exported "
                             "with a dynamic size yet")
        program.save(str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        for extra in tmp.parent.glob(f"{tmp.name}*"):
            extra.unlink(missing_ok=True)
    return out
