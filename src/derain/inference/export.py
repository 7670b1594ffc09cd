"""ONNX export (optional extra ``export``: onnx, onnxscript, onnxruntime).

The exported graph is the whole restorer: it takes ``input`` float32 ``(N, 3, H, W)`` RGB in [0, 1] with dynamic
N, H and W, flips channels itself for weights trained on BGR, and returns ``output``, the clean image clamped to
[0, 1]. Every registered model exports. PReNet's family, SIAN and JDNet's ablations R1/R2 export as they run; two
run an export form of one layer, declared by their family (``Family.export_form``, same values up to rounding):
SPANet's IRNN runs its sweeps as two scan ops that become ONNX ``Scan`` nodes (``method="export"``; with a torch
that lacks the op, one doubling scan, ``method="doubling"``: a fixed 13 steps, sides up to 8192),
JDNet's pairwise self-attention its ``export_mode`` (the whole image as one band, footprints from a one-hot
convolution), neither with Python logic on the image size, which the exporter would otherwise fix to the
example's; derain.default's pair runs both networks and selects per image.
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from derain.archs import family_of
from derain.errors import InputError
from derain.io.atomic import atomic_write
from derain.weights import LoadedWeights, load_weights

MAX_SIDE = 8192
FORMATS = ("onnx",)  # what derain exports to (``derain export --format``)


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
    family_of(model).export_form(model)
    return model


def export(weights: str | os.PathLike[str] | LoadedWeights, out: str | os.PathLike[str], *, format: str = "onnx",
           overwrite: bool = False) -> Path:
    """``derain export``: ``weights`` in one of :data:`FORMATS` (ONNX: :func:`export_onnx`)."""
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    return export_onnx(weights, out, overwrite=overwrite)


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
    graph = _Graph(_exportable(loaded.build()), loaded.channel_order == "bgr").eval()
    example = torch.rand(1, 3, *example_size)
    dims = {0: torch.export.Dim("batch", min=1, max=64), 2: torch.export.Dim("height", min=16, max=MAX_SIDE),
            3: torch.export.Dim("width", min=16, max=MAX_SIDE)}
    with atomic_write(out, overwrite=overwrite, suffix=".onnx") as tmp:
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
    return out
