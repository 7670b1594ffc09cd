"""Datasets: paired rainy/clean folders in the official layouts."""

from derain.data.paired import LAYOUTS, Layout, Pair, PairedFolder, natural_key

__all__ = ["LAYOUTS", "Layout", "Pair", "PairedFolder", "natural_key"]
