"""Mamba model family: mixer, blocks, causal / bidirectional LM, inference cache, checkpoint I/O."""

from seqssm.models.bidirectional import BiMambaMixer
from seqssm.models.block import Block
from seqssm.models.cache import InferenceCache, LayerCache
from seqssm.models.io import load_model, save_pretrained
from seqssm.models.lm import MambaBackbone, MambaLMHeadModel, count_parameters
from seqssm.models.mixer import MambaMixer
from seqssm.models.norm import RMSNorm, add_rms_norm, rms_norm

__all__ = [
    "BiMambaMixer",
    "Block",
    "InferenceCache",
    "LayerCache",
    "MambaBackbone",
    "MambaLMHeadModel",
    "MambaMixer",
    "RMSNorm",
    "add_rms_norm",
    "count_parameters",
    "load_model",
    "rms_norm",
    "save_pretrained",
]
