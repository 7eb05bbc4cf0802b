"""Mamba model family: mixer, blocks, causal / bidirectional / RC-equivariant LM, inference cache, checkpoint I/O."""

from seqssm.models.bidirectional import BiMambaMixer
from seqssm.models.block import Block
from seqssm.models.cache import InferenceCache, LayerCache
from seqssm.models.io import save_pretrained
from seqssm.models.lm import MambaBackbone, MambaLMHeadModel, count_parameters
from seqssm.models.loading import load_model
from seqssm.models.mixer import MambaMixer
from seqssm.models.norm import RMSNorm, add_rms_norm, rms_norm
from seqssm.models.rcps import (
    RCPSBiMambaMixer,
    RCPSEmbedding,
    RCPSLMHead,
    complement_map,
    rc_invariant_pool,
    reverse_complement_hidden,
    reverse_complement_ids,
    strand_average,
)

__all__ = [
    "BiMambaMixer",
    "Block",
    "InferenceCache",
    "LayerCache",
    "MambaBackbone",
    "MambaLMHeadModel",
    "MambaMixer",
    "RCPSBiMambaMixer",
    "RCPSEmbedding",
    "RCPSLMHead",
    "RMSNorm",
    "add_rms_norm",
    "complement_map",
    "count_parameters",
    "load_model",
    "rc_invariant_pool",
    "reverse_complement_hidden",
    "reverse_complement_ids",
    "rms_norm",
    "save_pretrained",
    "strand_average",
]
