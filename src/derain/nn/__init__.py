"""Shared building blocks: SPANet's IRNN and JDNet's pairwise self-attention."""

from derain.nn.irnn import IRNN, irnn_sweep
from derain.nn.pairwise import PairwiseSelfAttention, position_grid

__all__ = ["IRNN", "PairwiseSelfAttention", "irnn_sweep", "position_grid"]
