"""Model configuration: one small dataclass, derived sizes computed once, a JSON-safe round trip."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from seqssm.errors import InputError, did_you_mean

# Choices shared by the models and the CLI's option checks, kept here (torch-free) so that parsing arguments and
# `--help` never import torch: the mixer implementations and the classifier head poolings.
IMPLS = ("auto", "triton", "chunked", "ref")
POOLINGS = ("mean", "cls", "last", "flatten")
EXPORT_FORMATS = ("hf", "mamba_ssm")  # checkpoint layouts seqssm reads and writes (seqssm.models.convert)

MIXERS = ("mamba", "mamba2", "s4d")


@dataclass
class MambaConfig:
    """Sizes and initialisation of a Mamba (or bidirectional Caduceus-style) sequence model.

    Field names follow mamba_ssm's ``Mamba`` / ``MambaConfig``. ``sample_rate`` is set for audio models,
    the rate their tokens are at. ``rc_equivariant`` makes a Caduceus-PS model: reverse-complement
    equivariant by parameter sharing, bidirectional (so it sets ``bidirectional``), its hidden states of
    width ``d_model`` (even) holding the two strands in halves of ``d_model / 2``; it needs the
    "nucleotide" tokenizer, whose complement map it uses.

    Architecture (all defaults give the original Mamba-1 stack, so older checkpoints load unchanged):
    ``mixer`` the SSM of every "M" layer ("mamba", "mamba2" with ``headdim``, "s4d"); ``layers`` a pattern
    of "M" (SSM) and "A" (attention, ``n_heads`` heads with rotary positions) repeated to ``n_layer`` (its
    length must divide ``n_layer``), or ``attn_every`` k: every k-th layer is attention (not both); the
    decode KV cache of an attention layer is preallocated to ``attn_max_len`` positions, the most a
    hybrid decodes or streams. ``moe_every`` k: every k-th layer also has a mixture-of-experts MLP after
    its mixer (MoE-Mamba; ``n_experts`` experts of width ``d_ff`` (0: 4 d_model), top-``top_k`` routing
    with ``capacity_factor``, and a Switch load-balancing loss weighted by ``moe_aux_weight``).
    ``layer_kinds`` (derived) is the expanded pattern, one letter per layer.

    The last four fields are derived in ``__post_init__`` and never passed in: ``d_mixer``, the width one
    mixer runs at (``d_model``, or ``d_model / 2`` per strand when ``rc_equivariant``),
    ``d_inner = expand * d_mixer``, ``resolved_dt_rank`` (``ceil(d_mixer / 16)`` when
    ``dt_rank == "auto"``) and ``padded_vocab_size`` (``vocab_size`` rounded up to
    ``pad_vocab_size_multiple``, so the embedding and LM head matmuls stay aligned).
    """

    d_model: int
    n_layer: int
    vocab_size: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | str = "auto"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    dt_scale: float = 1.0
    conv_bias: bool = True
    bias: bool = False
    norm_eps: float = 1e-5
    residual_in_fp32: bool = True
    tie_embeddings: bool = True
    pad_vocab_size_multiple: int = 8
    initializer_range: float = 0.02
    rescale_prenorm_residual: bool = True
    bidirectional: bool = False
    bidirectional_weight_tie: bool = True
    rc_equivariant: bool = False
    tokenizer: str = "nucleotide"
    sample_rate: int | None = None
    mixer: str = "mamba"
    layers: str = ""
    attn_every: int = 0
    n_heads: int = 4
    attn_max_len: int = 4096
    headdim: int = 32
    moe_every: int = 0
    n_experts: int = 8
    top_k: int = 1
    capacity_factor: float = 1.25
    d_ff: int = 0
    moe_aux_weight: float = 0.01

    d_mixer: int = field(init=False)
    d_inner: int = field(init=False)
    resolved_dt_rank: int = field(init=False)
    padded_vocab_size: int = field(init=False)
    layer_kinds: str = field(init=False)

    def __post_init__(self) -> None:
        for name in ("d_model", "n_layer", "vocab_size", "d_state", "d_conv", "expand",
                     "pad_vocab_size_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"MambaConfig.{name} must be a positive integer, got {value!r}")
        if self.dt_rank != "auto" and (
            isinstance(self.dt_rank, bool) or not isinstance(self.dt_rank, int) or self.dt_rank < 1
        ):
            raise InputError(f"MambaConfig.dt_rank must be 'auto' or a positive integer, "
                             f"got {self.dt_rank!r}")
        for name in ("dt_min", "dt_max", "dt_init_floor", "dt_scale", "norm_eps", "initializer_range"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"MambaConfig.{name} must be a number > 0, got {value!r}")
        if self.dt_min > self.dt_max:
            raise InputError(f"MambaConfig needs dt_min <= dt_max, got dt_min={self.dt_min}, "
                             f"dt_max={self.dt_max}")
        for name in ("conv_bias", "bias", "residual_in_fp32", "tie_embeddings", "rescale_prenorm_residual",
                     "bidirectional", "bidirectional_weight_tie", "rc_equivariant"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"MambaConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise InputError(f"MambaConfig.tokenizer must be a tokenizer name such as 'nucleotide', "
                             f"got {self.tokenizer!r}")
        if self.sample_rate is not None and (isinstance(self.sample_rate, bool)
                                             or not isinstance(self.sample_rate, int) or self.sample_rate < 1):
            raise InputError(f"MambaConfig.sample_rate must be a positive integer (Hz) or None, "
                             f"got {self.sample_rate!r}")
        if self.rc_equivariant:
            if self.d_model % 2:
                raise InputError(f"MambaConfig.d_model must be even when rc_equivariant (one half per "
                                 f"strand), got {self.d_model}")
            if self.tokenizer != "nucleotide":
                raise InputError(f"MambaConfig.rc_equivariant needs the 'nucleotide' tokenizer (its "
                                 f"complement map), got {self.tokenizer!r}; drop rc_equivariant")
            # Parameter sharing over the strands is a bidirectional model of each strand.
            self.bidirectional = True
        self.layer_kinds = self._check_architecture()
        self.d_mixer = self.d_model // 2 if self.rc_equivariant else self.d_model
        self.d_inner = self.expand * self.d_mixer
        self.resolved_dt_rank = math.ceil(self.d_mixer / 16) if self.dt_rank == "auto" else self.dt_rank
        multiple = self.pad_vocab_size_multiple
        self.padded_vocab_size = -(-self.vocab_size // multiple) * multiple

    def _check_architecture(self) -> str:
        """Validate the architecture fields; the per-layer pattern, one of "M" / "A" per layer."""
        if self.mixer not in MIXERS:
            raise InputError(f"MambaConfig.mixer must be one of {', '.join(MIXERS)}, got {self.mixer!r}"
                             f"{did_you_mean(str(self.mixer), MIXERS)}")
        for name in ("attn_every", "moe_every", "d_ff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"MambaConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("n_heads", "attn_max_len", "headdim", "n_experts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"MambaConfig.{name} must be a positive integer, got {value!r}")
        for name in ("capacity_factor", "moe_aux_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 \
                    or (name == "capacity_factor" and value == 0):
                raise InputError(f"MambaConfig.{name} must be a number > 0 (>= 0 for the weight), got {value!r}")
        if self.top_k not in (1, 2) or self.top_k > self.n_experts:
            raise InputError(f"MambaConfig.top_k must be 1 or 2 (and at most n_experts = {self.n_experts}), "
                             f"got {self.top_k!r}")
        if not isinstance(self.layers, str) or set(self.layers) - {"M", "A"}:
            raise InputError(f"MambaConfig.layers must be a pattern of 'M' (SSM) and 'A' (attention) such as "
                             f"'MMMA', got {self.layers!r}")
        if self.layers and self.attn_every:
            raise InputError("MambaConfig: give either layers (a pattern) or attn_every, not both")
        if self.layers:
            if self.n_layer % len(self.layers):
                raise InputError(f"MambaConfig.layers {self.layers!r} ({len(self.layers)} letters) must divide "
                                 f"n_layer = {self.n_layer} (it is repeated to n_layer layers)")
            kinds = self.layers * (self.n_layer // len(self.layers))
        else:
            k = self.attn_every
            kinds = "".join("A" if k and (i + 1) % k == 0 else "M" for i in range(self.n_layer))
        if "A" in kinds and (self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2):
            raise InputError(f"MambaConfig: d_model = {self.d_model} must split into n_heads = "
                                 f"{self.n_heads} heads of even width (rotary positions)")
        uses_other = self.mixer != "mamba" or "A" in kinds or self.moe_every
        if self.rc_equivariant and uses_other:
            raise InputError("MambaConfig.rc_equivariant is built for Mamba layers only; drop rc_equivariant "
                             "or use mixer 'mamba' with no attention or MoE layers")
        if self.mixer == "s4d" and self.d_state % 2:
            raise InputError(f"MambaConfig.d_state must be even for the s4d mixer (conjugate pairs), "
                             f"got {self.d_state}")
        if self.mixer == "mamba2" and (self.expand * self.d_model) % self.headdim:
            raise InputError(f"MambaConfig: mamba2 needs expand * d_model = {self.expand * self.d_model} to be "
                             f"a multiple of headdim = {self.headdim}")
        return kinds

    def moe_layer(self, i: int) -> bool:
        """Whether layer i (from 0) has an MoE MLP after its mixer."""
        return bool(self.moe_every) and (i + 1) % self.moe_every == 0

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments as a JSON-safe dict (derived fields left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MambaConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`InputError` naming them."""
        if not isinstance(data, dict):
            raise InputError(f"a MambaConfig must be built from a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            hints = [f"{key!r}{did_you_mean(key, fields)}" for key in unknown]
            raise InputError(f"unknown MambaConfig key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; "
                             f"the known keys are {', '.join(sorted(fields))}")
        required = [n for n, f in fields.items()
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise InputError(f"MambaConfig keys {missing} are missing; they have no default")
        return cls(**data)
