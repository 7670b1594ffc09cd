"""Datasets: paired rainy/clean folders in the official layouts, and data sets by name."""

from derain.data.paired import LAYOUTS, Layout, Pair, PairedFolder, natural_key
from derain.data.sets import SETS, DataSet, list_sets

__all__ = ["LAYOUTS", "SETS", "DataSet", "Layout", "Pair", "PairedFolder", "list_sets", "natural_key"]
