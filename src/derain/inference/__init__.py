"""Running models on images: the Restorer (device, dtype, channel order, checks) and the bundled demo."""

from derain.device import resolve_device
from derain.inference.demo import DEFAULT_WEIGHTS, DemoResult, run_demo, sample_paths
from derain.inference.restorer import Restorer, load

__all__ = ["DEFAULT_WEIGHTS", "DemoResult", "Restorer", "load", "resolve_device", "run_demo", "sample_paths"]
