"""derain: single-image rain removal with JDNet, SIAN, SPANet and PReNet; MATLAB-exact evaluation.

The public API (re-exports only)::

    import derain
    derain.list_models(); derain.list_weights()
    model = derain.create_model("sian")                 # bare nn.Module
    restorer = derain.load("sian.rain100l")             # catalog name or a checkpoint path
    clean = restorer(rainy)                             # float NCHW RGB in [0, 1]
    restorer = derain.load()                            # the bundled default model (derain.default)
    derain.train.fit(derain.train.load_config("configs/default.yaml"), "runs/default")
    report = derain.evaluate(restorer, derain.data.PairedFolder("rain100L"), protocol="matlab-y")
"""

from derain import archs, data, io, losses, metrics, train, weights
from derain.archs import create_model, list_models
from derain.errors import DataError, DerainError, DownloadError, InputError, WeightsError
from derain.evaluate import EvalReport, ImageScore, evaluate
from derain.inference import DEFAULT_WEIGHTS, Restorer, load, run_demo, sample_paths
from derain.types import DerainOutput
from derain.weights import list_weights

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_WEIGHTS",
    "DataError",
    "DerainError",
    "DerainOutput",
    "DownloadError",
    "EvalReport",
    "ImageScore",
    "InputError",
    "Restorer",
    "WeightsError",
    "__version__",
    "archs",
    "create_model",
    "data",
    "evaluate",
    "io",
    "list_models",
    "list_weights",
    "load",
    "losses",
    "metrics",
    "run_demo",
    "sample_paths",
    "train",
    "weights",
]
