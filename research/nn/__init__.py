"""Transformer building blocks: norm placements, SDD linears, hyper-/frac-connections, over-tokenized embeddings."""

from research.nn.connections import FracConnection, HyperConnection, expand_streams, reduce_streams
from research.nn.norms import RMSNorm, Sublayer, block_forms, rms_norm
from research.nn.over_tokenized import OverDecoding, OverEncoding, ngram_ids
from research.nn.sdd import SDDLinear, make_projection

__all__ = [
    "FracConnection",
    "HyperConnection",
    "OverDecoding",
    "OverEncoding",
    "RMSNorm",
    "SDDLinear",
    "Sublayer",
    "block_forms",
    "expand_streams",
    "make_projection",
    "ngram_ids",
    "reduce_streams",
    "rms_norm",
]
