"""Mamba backbone (embedding → blocks → final norm) and the LM head model on top of it.

Names mirror mamba_ssm's ``MixerModel`` / ``MambaLMHeadModel`` (backbone.embedding, backbone.layers.i.mixer,
backbone.norm_f, lm_head), so its state dicts load one to one into a causal model.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models.bidirectional import BiMambaMixer, reverse_index
from seqssm.models.block import Block, add_norm
from seqssm.models.cache import InferenceCache
from seqssm.models.layers import allocate_layer_state, build_mixer, build_moe
from seqssm.models.mixer import IMPLS, select_kernels
from seqssm.models.moe import MoEMLP
from seqssm.models.norm import RMSNorm
from seqssm.models.packing import seq_idx_from_cu_seqlens, unpack
from seqssm.models.rcps import RCPSEmbedding, RCPSLMHead, complement_map
from seqssm.tokenizers import get_tokenizer


def _check_input_ids(input_ids: torch.Tensor, vocab_size: int, dims: int, what: str) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != dims:
        shape = "[B, L]" if dims == 2 else "[B]"
        got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise InputError(f"{what}: input_ids must be a {shape} tensor of token ids, got {got}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise InputError(f"{what}: input_ids must be int64 or int32 token ids, got {input_ids.dtype}")
    if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab_size):
        raise InputError(f"{what}: token ids must lie in [0, {vocab_size}), got range "
                         f"[{int(input_ids.min())}, {int(input_ids.max())}]; check the tokenizer matches "
                         "the model")


def _check_inputs_embeds(inputs_embeds: torch.Tensor, d_model: int) -> None:
    if not isinstance(inputs_embeds, torch.Tensor) or inputs_embeds.dim() != 3 \
            or inputs_embeds.shape[-1] != d_model:
        got = tuple(inputs_embeds.shape) if isinstance(inputs_embeds, torch.Tensor) \
            else type(inputs_embeds).__name__
        raise InputError(f"forward: inputs_embeds must be a [B, L, {d_model}] tensor (d_model = {d_model}), "
                         f"got {got}")
    if not inputs_embeds.dtype.is_floating_point:
        raise InputError(f"forward: inputs_embeds must be floating point, got {inputs_embeds.dtype}; pass "
                         "token ids as input_ids instead")


def _check_attention_mask(attention_mask: torch.Tensor, shape: torch.Size, what: str) -> None:
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) \
            else type(attention_mask).__name__
        raise InputError(f"attention_mask shape {got} differs from the {what} shape {tuple(shape)}; pass one "
                         "[B, L] mask of 1 (token) / 0 (padding)")
    mask = attention_mask.long()
    pos = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    right_padded = pos < mask.sum(dim=1, keepdim=True)
    if not torch.equal(mask, right_padded.long()):
        raise InputError("attention_mask must hold only 0/1 with padding at the right end of each row "
                         "(1 1 1 0 0); left or interior padding is not supported")


def _complement(config: MambaConfig) -> torch.Tensor:
    """[padded_vocab_size] complement map of the config's tokenizer (rows past the vocab map to themselves)."""
    return complement_map(get_tokenizer(config.tokenizer), config.padded_vocab_size)


@torch.no_grad()
def _init_weights(module: nn.Module, config: MambaConfig) -> None:
    """mamba_ssm's ``_init_weights``: zero Linear biases (but dt_proj's), N(0, 0.02) embeddings, and
    out_proj re-drawn then scaled by 1/sqrt(n_layer), so the residual stream's variance does not grow with
    depth.
    """
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and sub.bias is not None and not getattr(sub.bias, "_no_reinit", False):
            nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, std=config.initializer_range)
    if config.rescale_prenorm_residual:
        for name, p in module.named_parameters():  # deduplicated, so a tied out_proj is scaled once
            if name.endswith("out_proj.weight"):
                nn.init.kaiming_uniform_(p, a=math.sqrt(5))
                p /= math.sqrt(config.n_layer)


class MambaBackbone(nn.Module):
    """Token ids [B, L] → hidden states [B, L, D] after the final norm (the embeddings pipelines pool)."""

    def __init__(self, config: MambaConfig, *, impl: str = "auto", device=None, dtype=None):
        super().__init__()
        if impl not in IMPLS:
            raise InputError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.config = config
        factory = {"device": device, "dtype": dtype}
        rc = config.rc_equivariant
        if rc:
            self.embedding = RCPSEmbedding(config.padded_vocab_size, config.d_model,
                                           _complement(config), **factory)
        else:
            self.embedding = nn.Embedding(config.padded_vocab_size, config.d_model, **factory)
        # One layer per letter of config.layer_kinds ("M": the config's SSM mixer, "A": attention).
        self.layers = nn.ModuleList(
            Block(
                build_mixer(config, kind, impl=impl, **factory),
                d_model=config.d_model, norm_eps=config.norm_eps, residual_in_fp32=config.residual_in_fp32,
                rc_halves=rc, moe=build_moe(config, i, **factory), **factory,
            )
            for i, kind in enumerate(config.layer_kinds)
        )
        self.norm_f = RMSNorm(config.d_model, eps=config.norm_eps, rc_halves=rc, **factory)
        _init_weights(self, config)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        seq_idx: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states after the final norm.

        Args:
            input_ids: [B, L] token ids; or None when ``inputs_embeds`` is given (exactly one of the two).
            attention_mask: [B, L] 1 for tokens, 0 for right padding, optional. Real positions come out as if
                each row were run alone; padding positions hold meaningless values.
            inputs_embeds: [B, L, D] continuous inputs (e.g. a projection of waveform samples) that take the
                place of ``embedding(input_ids)``; for an ``rc_equivariant`` model they are read as the two
                strand halves [fwd | rc] (see ``seqssm.models.rcps``).
            seq_idx: [B, L] packed sequences: which sequence each position belongs to (-1 = padding; a
                sequence is a run of one value in a row). Each comes out exactly as if run alone, states reset
                at every boundary, both directions for bidirectional models (``seqssm.models.packing``).
            cu_seqlens: [S + 1] offsets of S sequences packed into one row (B = 1), instead of ``seq_idx``.

        Returns:
            [B, L, D] (zeros where ``seq_idx`` is -1).
        """
        if seq_idx is not None or cu_seqlens is not None:
            return self._packed(input_ids, inputs_embeds, attention_mask, seq_idx, cu_seqlens)
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("forward: pass exactly one of input_ids ([B, L] token ids) and inputs_embeds "
                             "([B, L, D] vectors)")
        if inputs_embeds is None:
            _check_input_ids(input_ids, self.config.vocab_size, 2, "forward")
            shape, what = input_ids.shape, "input_ids"
        else:
            _check_inputs_embeds(inputs_embeds, self.config.d_model)
            shape, what = inputs_embeds.shape[:2], "inputs_embeds [B, L]"
        rev_index = key_mask = None
        if attention_mask is not None:
            _check_attention_mask(attention_mask, shape, what)
            # A causal mixer never looks right, so right padding cannot reach real positions.
            if self.config.bidirectional:
                rev_index = reverse_index(attention_mask.long())
                key_mask = attention_mask
        if inputs_embeds is not None:
            hidden = inputs_embeds
        elif self.config.rc_equivariant:
            hidden = self.embedding(input_ids, rev_index)
        else:
            hidden = self.embedding(input_ids)
        return self._forward(hidden, rev_index=rev_index, key_mask=key_mask)

    def _packed(self, input_ids, inputs_embeds, attention_mask, seq_idx, cu_seqlens) -> torch.Tensor:
        data = input_ids if input_ids is not None else inputs_embeds
        if data is None or attention_mask is not None or (seq_idx is None) == (cu_seqlens is None):
            raise InputError("forward: packed sequences take input_ids (or inputs_embeds) with exactly one of "
                             "seq_idx and cu_seqlens, and no attention_mask (seq_idx -1 marks padding)")
        if seq_idx is None:
            if data.shape[0] != 1:
                raise InputError(f"forward: cu_seqlens packs sequences into one row, but the batch has "
                                 f"{data.shape[0]} rows; pass seq_idx [B, L] instead")
            seq_idx = seq_idx_from_cu_seqlens(cu_seqlens.to(data.device), data.shape[1])
        plan = unpack(seq_idx.to(data.device), data.shape[:2])
        padded = plan.pad(data)
        if input_ids is not None:
            hidden = self(padded, plan.mask())
        else:
            hidden = self(attention_mask=plan.mask(), inputs_embeds=padded)
        return plan.repack(hidden)

    def _forward(self, hidden: torch.Tensor, *, cache: InferenceCache | None = None,
                 rev_index: torch.Tensor | None = None, states: list | None = None,
                 return_states: bool = False, layer_fn=None, key_mask: torch.Tensor | None = None):
        """Embedded inputs [B, L, D] → normed hidden states [B, L, D]: the one layer loop.

        ``states`` (causal models): per layer a ``LayerCache`` or None (zero states) to start from, and with
        ``return_states`` the per-layer states after the sequence come back too (differentiable, for chunked
        training and streaming; attention layers carry their keys, see ``seqssm.models.attention``).
        ``key_mask`` [B, L]: the padding mask bidirectional attention layers read. ``cache``: prefill, states
        advanced in place. ``layer_fn(layer, hidden, residual, **kw)``: how to call one block (e.g. under
        activation checkpointing); a plain call when None.
        """
        residual, new_states = None, []
        call = layer_fn or (lambda layer, h, r, **kw: layer(h, r, **kw))
        for i, layer in enumerate(self.layers):
            if cache is not None:
                hidden, residual = call(layer, hidden, residual, cache=cache.layers[i])
            elif states is not None or return_states:
                state = None if states is None else states[i]
                hidden, residual, state = call(layer, hidden, residual, state=state, return_state=True)
                new_states.append(state)
            elif layer.kind == "A" and key_mask is not None:
                hidden, residual = call(layer, hidden, residual, key_mask=key_mask)
            elif rev_index is not None and layer.kind == "M":
                hidden, residual = call(layer, hidden, residual, rev_index=rev_index)
            else:
                hidden, residual = call(layer, hidden, residual)
        normed, _ = self.final_norm(hidden, residual)
        return (normed, new_states) if return_states else normed

    def final_norm(self, hidden: torch.Tensor, residual: torch.Tensor | None):
        """The last residual add and ``norm_f``: (normed, residual) in norm_f's dtype (what embeddings read)."""
        return add_norm(hidden, residual, self.norm_f, self.config.residual_in_fp32, self.layers[0].impl)

    def step(self, input_ids: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One token per row: input_ids [B] → hidden [B, D], advancing ``cache`` in place."""
        hidden, residual = self.embedding(input_ids), None
        for layer, layer_cache in zip(self.layers, cache.layers, strict=True):
            hidden, residual = layer.step(hidden, residual, layer_cache)
        return self.final_norm(hidden, residual)[0]


class MambaLMHeadModel(nn.Module):
    """Backbone plus a linear head to token logits; causal LM, or masked LM when ``config.bidirectional``
    (with an RC-PS head, whose logits for rc(x) are those of x flipped and complemented, when
    ``config.rc_equivariant``).

    Logits cover ``config.vocab_size`` tokens: the padded rows of the embedding exist only for matmul
    alignment and are sliced away.
    """

    def __init__(self, config: MambaConfig, *, impl: str = "auto", device=None, dtype=None):
        super().__init__()
        self.config = config
        self.backbone = MambaBackbone(config, impl=impl, device=device, dtype=dtype)
        if config.rc_equivariant:
            self.lm_head = RCPSLMHead(config.d_model, config.padded_vocab_size, _complement(config),
                                      device=device, dtype=dtype)
        else:
            self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False,
                                     device=device, dtype=dtype)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share lm_head with the embedding and the bidirectional projections."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.backbone.embedding.weight
        for layer in self.backbone.layers:
            if isinstance(layer.mixer, BiMambaMixer):
                layer.mixer.tie_weights()

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() == 2 and type(self.lm_head) is nn.Linear:
            # A decode step's rows [B, D]: the kernels' linear (a GEMV on CUDA for a few rows, else F.linear).
            linear = select_kernels(self.backbone.layers[0].impl, hidden.device).linear
            return linear(hidden, self.lm_head.weight, self.lm_head.bias)[..., : self.config.vocab_size]
        return self.lm_head(hidden)[..., : self.config.vocab_size]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        seq_idx: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids [B, L] or inputs_embeds [B, L, D] (attention_mask [B, L] optional, 1 = token, right
        padding; or packed sequences by ``seq_idx`` [B, L] / ``cu_seqlens`` [S + 1], see
        :meth:`MambaBackbone.forward`) → logits [B, L, V].
        """
        return self._logits(self.backbone(input_ids, attention_mask, inputs_embeds=inputs_embeds,
                                          seq_idx=seq_idx, cu_seqlens=cu_seqlens))

    def _require_causal(self, what: str) -> None:
        if self.config.bidirectional:
            raise InputError(f"{what} needs a causal model, but this one is bidirectional (each "
                             "position sees the whole sequence, so there is no left-to-right state); call "
                             "the model on the full sequence instead")

    def aux_loss(self) -> torch.Tensor | float:
        """The weighted MoE load-balancing loss of the last forward (0.0 without MoE layers): add it to the
        training loss."""
        losses = [m.aux_loss for m in self.modules() if isinstance(m, MoEMLP) and m.aux_loss is not None]
        return self.config.moe_aux_weight * sum(losses) if losses else 0.0

    def expert_counts(self) -> list[list[int]]:
        """Per MoE layer, how many tokens of the last forward chose each expert first."""
        return [m.counts.tolist() for m in self.modules() if isinstance(m, MoEMLP)]

    def allocate_cache(self, batch_size: int, device=None, dtype=None,
                       max_len: int | None = None) -> InferenceCache:
        """Zero states for ``batch_size`` rows on the model's device; conv state in the model's dtype;
        attention layers get a KV cache of ``max_len`` positions (``config.attn_max_len`` when None)."""
        self._require_causal("allocate_cache")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"allocate_cache: batch_size must be a positive integer, got {batch_size!r}")
        weight = self.backbone.embedding.weight
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        return InferenceCache([allocate_layer_state(self.config, layer.mixer, batch_size, device=device,
                                                    dtype=dtype, max_len=max_len)
                               for layer in self.backbone.layers])

    def _check_cache(self, cache: InferenceCache, batch_size: int, what: str) -> None:
        if not isinstance(cache, InferenceCache) or len(cache.layers) != self.config.n_layer:
            raise InputError(f"{what}: cache must be an InferenceCache from this model's allocate_cache "
                             f"({self.config.n_layer} layers)")
        if cache.batch_size != batch_size:
            raise InputError(f"{what}: cache holds {cache.batch_size} rows but input_ids has {batch_size}; "
                             "allocate the cache with the same batch size")

    @torch.no_grad()
    def prefill(
        self, input_ids: torch.Tensor, cache: InferenceCache | None = None
    ) -> tuple[torch.Tensor, InferenceCache]:
        """Run a prompt in one parallel pass and keep the final states.

        Args:
            input_ids: [B, L] prompt (all rows the same length: no padding).
            cache: continue from this cache (e.g. a prompt fed in pieces); a fresh one when None.

        Returns:
            logits [B, L, V] and the cache after the prompt (``seqlen_offset`` advanced by L).
        """
        self._require_causal("prefill")
        _check_input_ids(input_ids, self.config.vocab_size, 2, "prefill")
        if cache is None:
            cache = self.allocate_cache(input_ids.shape[0])
        self._check_cache(cache, input_ids.shape[0], "prefill")
        logits = self._logits(self.backbone._forward(self.backbone.embedding(input_ids), cache=cache))
        cache.seqlen_offset += input_ids.shape[1]
        return logits, cache

    @torch.no_grad()
    def step(self, input_ids: torch.Tensor, cache: InferenceCache) -> torch.Tensor:
        """One token per row: input_ids [B] → logits [B, V]; ``cache`` advances in place (constant memory)."""
        self._require_causal("step")
        _check_input_ids(input_ids, self.config.vocab_size, 1, "step")
        self._check_cache(cache, input_ids.shape[0], "step")
        logits = self._logits(self.backbone.step(input_ids, cache))
        cache.seqlen_offset += 1
        return logits

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into directory ``path`` (created if needed)."""
        # Imported here: io imports this module to rebuild the model.
        from seqssm.models.io import save_pretrained

        save_pretrained(self, path)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameter values (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
