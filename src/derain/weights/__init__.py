"""Weights as data records, safe loading and conversion of official checkpoints."""

from derain.weights import hub
from derain.weights.catalog import CATALOG, WeightRecord, get_record, list_weights
from derain.weights.convert import detect, unwrap
from derain.weights.store import LoadedWeights, load_weights, read_checkpoint, save_converted, sha256_file

__all__ = [
    "CATALOG",
    "LoadedWeights",
    "WeightRecord",
    "detect",
    "get_record",
    "hub",
    "list_weights",
    "load_weights",
    "read_checkpoint",
    "save_converted",
    "sha256_file",
    "unwrap",
]
