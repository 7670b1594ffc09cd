"""Running models on images: the Restorer (device, dtype, channel order, checks)."""

from derain.inference.restorer import Restorer, load, resolve_device

__all__ = ["Restorer", "load", "resolve_device"]
