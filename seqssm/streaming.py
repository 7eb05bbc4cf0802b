"""Million-length sequences: chunked forward with state carry, exact chunked backward, block checkpointing.

A causal layer is a recurrence, so a sequence of any length can go through the model chunk by chunk
([B, T] at a time) as long as every layer's state is carried from one chunk to the next: Mamba's conv
state [B, E, W - 1] and SSM state [B, E, N], Mamba-2's and S4D's (``LayerCache`` too), an attention layer's
keys and values (``KVCache``, bounded by the model's ``attn_max_len``: past it the layer raises
``InputError`` naming ``--attn-max-len`` rather than silently windowing). Every chunk goes through the
backbone's one state-passing forward (``MambaBackbone._forward(states=..., return_states=True)``), the
same code as training and prefill. Memory is then set by T (and the attention keys), not L, and the
outputs equal the one-pass forward up to float rounding. MoE MLPs are per token in eval, so they need no
state.

Training the same way (``chunked_backward``) runs all chunks forward without grad, keeping only each
chunk's boundary states (every layer's two states), then walks the chunks in reverse: it recomputes one
chunk with grad from its boundary states and backpropagates the chunk's loss together with the gradient
the later chunks sent back into its final states. The gradients are exact; only one chunk's activations
are alive at a time. ``truncate_bptt=True`` drops the carried state gradient instead (one pass, cheaper).

A bidirectional layer mixes a forward and a reverse scan, so its output at any position depends on the
whole sequence, and the next layer cannot start before this one has finished. Those models go layer by
layer: a forward sweep and a reverse sweep over the chunks, each carrying its own state, summed per
chunk. The per-position hidden states and residuals ([B, L, D] each, fp32) sit in numpy arrays, spilled
to ``np.memmap`` files in a temporary directory when they would not fit in ``memory_budget`` bytes.
Their backward goes layer by layer too, from stored layer inputs and sweep boundary states. RC-equivariant
(Caduceus-PS) layers are two such bidirectional layers side by side, one per strand half of the channels.

Shapes: B batch, L length, T chunk length, D d_model, E d_inner, N d_state, W d_conv, V vocab.

Why over 400 lines: the causal chunk loop, the exact chunked backward and the bidirectional layer-by-layer
sweeps share the state bookkeeping above; split, each half would need the other's private helpers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from seqssm.errors import InputError
from seqssm.models import BiMambaMixer, InferenceCache, LayerCache, MambaLMHeadModel, MambaMixer
from seqssm.models.attention import AttentionMixer, KVCache
from seqssm.models.mamba2 import Mamba2Mixer
from seqssm.models.rcps import RCPSBiMambaMixer
from seqssm.models.s4d import S4DMixer
from seqssm.streaming_bidirectional import _bi_forward, _bi_layer_backward, _Buffers, _leaf, mixer_chunk

__all__ = [
    "blocks_checkpointed",
    "checkpoint_blocks",
    "chunked_backward",
    "chunked_forward",
    "lm_chunk_loss",
    "check_streamable",
    "mixer_chunk",
    "stream_hidden",
    "stream_step",
    "store_state",
]

LossFn = Callable[[torch.Tensor, int, int], torch.Tensor]
States = list  # per layer: LayerCache, or None before the first chunk (zero states)


# ------------------------------------------------------------------------------------------ one chunk


def _causal_chunk(model: MambaLMHeadModel, ids: torch.Tensor, states: States, use_checkpoint: bool = False):
    """ids [B, T] from ``states`` -> (normed hidden [B, T, D], states after the chunk): the backbone's own
    state-passing forward, each block under activation checkpointing when asked."""
    layer_fn = None
    if use_checkpoint and torch.is_grad_enabled():
        def layer_fn(layer, hidden, residual, **kw):
            return checkpoint(layer, hidden, residual, use_reentrant=False, **kw)
    return model.backbone._forward(model.backbone.embedding(ids), states=states, return_states=True,
                                   layer_fn=layer_fn)


# ------------------------------------------------------------------------------------------ checks


BIDIRECTIONAL_MIXERS = (BiMambaMixer, RCPSBiMambaMixer)


def _causal_mixer(mixer) -> bool:
    """Whether a mixer has the left-to-right state-passing forward (``state`` / ``return_state``)."""
    if isinstance(mixer, S4DMixer):
        return not mixer.bidirectional
    if isinstance(mixer, AttentionMixer):
        return mixer.causal
    return type(mixer) in (MambaMixer, Mamba2Mixer)


def _check_model(model, what: str, *, train: bool = False) -> None:
    """Causal models of any mixer (Mamba, Mamba-2, S4D, attention, with or without MoE) for the forward;
    chunked training takes Mamba layers only (its state gradients are written for ``LayerCache`` of Mamba);
    bidirectional models the Mamba bidirectional mixers (the layer-by-layer sweeps of
    ``seqssm.streaming_bidirectional``)."""
    if not isinstance(model, MambaLMHeadModel):
        raise InputError(f"{what}: model must be a MambaLMHeadModel (e.g. from seqssm.load_model), "
                         f"got {type(model).__name__}")
    for i, layer in enumerate(model.backbone.layers):
        mixer = layer.mixer
        if model.config.bidirectional or train:
            if type(mixer) not in (MambaMixer, *BIDIRECTIONAL_MIXERS):
                how = "chunked training" if train and not model.config.bidirectional else \
                    "chunked processing of a bidirectional model"
                raise InputError(f"{what}: layer {i} has a {type(mixer).__name__} mixer; {how} handles "
                                 "MambaMixer, BiMambaMixer and RCPSBiMambaMixer layers only")
        elif not _causal_mixer(mixer):
            raise InputError(f"{what}: layer {i} has a {type(mixer).__name__} mixer without a left-to-right "
                             "state, which chunked processing of a causal model needs")


def _check_ids(input_ids, model: MambaLMHeadModel, what: str) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
            torch.int64, torch.int32):
        got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise InputError(f"{what}: input_ids must be a [B, L] int64 tensor of token ids, got {got}")
    if input_ids.shape[1] == 0:
        raise InputError(f"{what}: input_ids has length 0; give at least one token")
    vocab = model.config.vocab_size
    if int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab:
        raise InputError(f"{what}: token ids must lie in [0, {vocab}), got [{int(input_ids.min())}, "
                         f"{int(input_ids.max())}]; check the tokenizer matches the model")


def _check_chunk_size(chunk_size, what: str) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"{what}: chunk_size must be a positive integer such as 65536, got {chunk_size!r}")
    return chunk_size


def _spans(length: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_size, length)) for s in range(0, length, chunk_size)]


# ------------------------------------------------------------------------------------------ inference


@torch.no_grad()
def stream_hidden(
    model: MambaLMHeadModel, chunks: Iterable[torch.Tensor], cache: InferenceCache | None = None,
    *, logits: bool = False,
) -> Iterator[torch.Tensor]:
    """Run a causal model over a stream of chunks, yielding each chunk's output as it is computed.

    Memory is set by the largest chunk: nothing of earlier chunks is kept but ``cache``.

    Args:
        model: a causal MambaLMHeadModel of any mixers (bidirectional models need the whole sequence:
            ``chunked_forward``).
        chunks: [B, T_i] token ids, any lengths T_i, on the model's device.
        cache: states to continue from (``model.allocate_cache(B)`` or a ``prefill`` result); advanced in
            place after every chunk, so it can be saved and the stream resumed. A fresh one when None. A
            cache whose ``seqlen_offset`` is 0 counts as the zero state, as ``allocate_cache`` makes it.

    Yields:
        normed hidden states [B, T_i, D] (the embeddings the pipelines use), or logits [B, T_i, V].
    """
    check_streamable(model, "stream_hidden")
    for ids in chunks:
        _check_ids(ids, model, "stream_hidden")
        if cache is None:
            cache = model.allocate_cache(ids.shape[0])
        if not isinstance(cache, InferenceCache) or len(cache.layers) != model.config.n_layer \
                or cache.batch_size != ids.shape[0]:
            raise InputError(f"stream_hidden: cache must come from this model's allocate_cache({ids.shape[0]}) "
                             f"({model.config.n_layer} layers, {ids.shape[0]} rows like the chunks)")
        yield _advance(model, ids, cache, zero_start=True, logits=logits)


def _advance(model, ids, cache: InferenceCache, *, zero_start: bool, logits: bool, valid: int | None = None):
    """One chunk from ``cache`` through the backbone's state-passing forward; the cache advanced in place."""
    states = cache.layers if cache.seqlen_offset or not zero_start else [None] * len(cache.layers)
    normed, new = _causal_chunk(model, ids, states)
    for old, state in zip(cache.layers, new, strict=True):
        store_state(old, state)
    cache.seqlen_offset += ids.shape[1] if valid is None else valid
    return model._logits(normed) if logits else normed


@torch.no_grad()
def stream_step(model: MambaLMHeadModel, ids: torch.Tensor, cache: InferenceCache, *, valid: int | None = None,
                logits: bool = False) -> torch.Tensor:
    """One chunk of a stream, for a loop that must not wait on the device: ``stream_hidden`` without checks.

    The caller checks the model (``check_streamable``) and the ids (in range, on the model's device) once;
    nothing here reads a device value back (attention layers read their fill count, one small sync), so
    the host can prepare the next chunk while this one runs. Every chunk, the first included, starts from
    the cache's states (zeros from ``allocate_cache``), so the kernels see one signature from the first
    chunk on and compile once.

    Args:
        ids: [B, T] token ids on the model's device.
        cache: advanced in place.
        valid: only the first ``valid`` positions are real, the rest padding that keeps T fixed (so no new
            kernel compiles for a short last chunk). Causal layers never look right, so the real positions
            are exact; but the states now include the padding: the stream must end with this chunk.

    Returns:
        [B, T, D] normed hidden states (or logits [B, T, V]), padding positions included.
    """
    return _advance(model, ids, cache, zero_start=False, logits=logits, valid=valid)


def check_streamable(model: MambaLMHeadModel, what: str = "stream") -> None:
    """InputError unless ``model`` is a causal model whose every layer can carry its state across chunks."""
    _check_model(model, what)
    if model.config.bidirectional:
        raise InputError(f"{what} needs a causal model, but this one is bidirectional (every position sees the "
                         "whole sequence); use chunked_forward, which sweeps both directions")


def store_state(into, state) -> None:
    """Copy one layer's state after a chunk (``LayerCache`` or ``KVCache``) into the preallocated ``into``,
    in place, so a cache keeps its buffers (and can be saved) however many chunks went through."""
    if isinstance(into, KVCache):
        filled = state.k.shape[2]
        if filled > into.k.shape[2]:  # the layer checks its own max_len first; a smaller cache lands here
            raise InputError(f"attention KV cache holds {into.k.shape[2]} positions but {filled} are needed; "
                             "allocate the cache with a larger max_len (the model's attn_max_len, set by "
                             "pretrain --attn-max-len)")
        into.k[:, :, :filled].copy_(state.k)
        into.v[:, :, :filled].copy_(state.v)
        into.pos.copy_(state.pos)
        return
    for f in dataclasses.fields(into):
        getattr(into, f.name).copy_(getattr(state, f.name))


# ------------------------------------------------------------------------------------------ public entry points


def _out_array(out, shape: tuple[int, ...], what: str):
    if tuple(out.shape) != shape:
        raise InputError(f"{what}: out has shape {tuple(out.shape)}, expected {list(shape)} ([B, L, D], or "
                         "[B, L, V] with logits=True)")
    return out


def _write(out, s: int, e: int, value: torch.Tensor) -> None:
    if isinstance(out, torch.Tensor):
        out[:, s:e] = value.to(out.dtype)
    else:
        out[:, s:e] = value.float().cpu().numpy().astype(out.dtype, copy=False)


@torch.no_grad()
def chunked_forward(
    model: MambaLMHeadModel,
    input_ids: torch.Tensor,
    *,
    chunk_size: int,
    logits: bool = False,
    out=None,
    memory_budget: int | None = None,
    spill_dir: str | None = None,
):
    """The model's output for a sequence of any length, computed ``chunk_size`` positions at a time.

    Causal models carry every layer's states from chunk to chunk (memory set by the chunk). Bidirectional
    models go layer by layer with a forward and a reverse sweep; their per-position hidden states and
    residuals ([B, L, D] fp32 each) are numpy arrays, spilled to memory-mapped files in a temporary
    directory under ``spill_dir`` when together they exceed ``memory_budget`` bytes (None: never spill).

    Args:
        model: MambaLMHeadModel, causal or bidirectional, on any device; ``eval()`` it first.
        input_ids: [B, L] token ids on the model's device (no padding).
        chunk_size: T, positions per chunk; need not divide L.
        logits: return logits [B, L, V] instead of the normed hidden states [B, L, D].
        out: where to write the result chunk by chunk: a numpy array or memmap (e.g. float16) or a tensor of
            shape [B, L, D] / [B, L, V]. None: a new tensor on the model's device.

    Returns:
        ``out``, filled: equal to ``model.backbone(input_ids)`` (or ``model(input_ids)``) up to float rounding.
    """
    _check_model(model, "chunked_forward")
    _check_ids(input_ids, model, "chunked_forward")
    chunk_size = _check_chunk_size(chunk_size, "chunked_forward")
    batch, length = input_ids.shape
    width = model.config.vocab_size if logits else model.config.d_model
    if out is None:
        out = torch.empty(batch, length, width, device=input_ids.device,
                          dtype=model.backbone.embedding.weight.dtype)
    out = _out_array(out, (batch, length, width), "chunked_forward")
    spans = _spans(length, chunk_size)
    if not model.config.bidirectional:
        cache = model.allocate_cache(batch)
        pieces = (input_ids[:, s:e] for s, e in spans)
        for (s, e), y in zip(spans, stream_hidden(model, pieces, cache, logits=logits), strict=True):
            _write(out, s, e, y)
        return out
    buffers = _Buffers((batch, length, model.config.d_model), 2, memory_budget, spill_dir)
    try:
        hidden, residual, _ = _bi_forward(model, input_ids, spans, buffers, keep=False)
        for s, e in spans:
            normed = model.backbone.final_norm(hidden.read(s, e), residual.read(s, e))[0]
            _write(out, s, e, model._logits(normed) if logits else normed)
    finally:
        buffers.close()
    return out


def lm_chunk_loss(targets: torch.Tensor, *, ignore_index: int = -100,
                  normaliser: float | None = None) -> LossFn:
    """A loss for ``chunked_backward``: summed token cross-entropy of a chunk / ``normaliser``.

    Args:
        targets: [B, L] the id to predict at each input position, ``ignore_index`` where nothing is
            predicted (causal LM: ``ids[:, 1:]`` for inputs ``ids[:, :-1]``; masked LM: the labels).
        normaliser: what the sum is divided by; None: the number of predicted positions, which makes the
            total the mean cross-entropy that ``causal_lm_loss`` / ``masked_lm_loss`` compute.

    Returns:
        loss_fn(logits [B, T, V], start, end) -> scalar.
    """
    if normaliser is None:
        normaliser = max(int((targets != ignore_index).sum()), 1)

    def loss_fn(chunk_logits: torch.Tensor, start: int, end: int) -> torch.Tensor:
        flat = chunk_logits.float().reshape(-1, chunk_logits.shape[-1])
        labels = targets[:, start:end].reshape(-1)
        return F.cross_entropy(flat, labels, ignore_index=ignore_index, reduction="sum") / normaliser

    return loss_fn


def chunked_backward(
    model: MambaLMHeadModel,
    input_ids: torch.Tensor,
    loss_fn: LossFn,
    *,
    chunk_size: int,
    truncate_bptt: bool = False,
    checkpoint_layers: bool = False,
    memory_budget: int | None = None,
    spill_dir: str | None = None,
) -> torch.Tensor:
    """Forward and backward of a loss that is a sum over chunks, one chunk's activations alive at a time.

    Parameter gradients accumulate into ``.grad`` exactly as ``loss.backward()`` of the one-pass loss would
    (float rounding aside); call ``optimizer.zero_grad()`` before, ``optimizer.step()`` after.

    Causal models: a no-grad forward keeps each chunk's boundary states; then chunks are recomputed last to
    first with grad and each backpropagates its loss plus the carried gradient of its final states.
    ``truncate_bptt`` instead cuts the state gradient at chunk boundaries (one forward-with-grad pass,
    inexact). ``checkpoint_layers`` also recomputes each layer inside the chunk, keeping only layer inputs.
    Bidirectional models: layer by layer (see the module notes); per-position arrays as in
    ``chunked_forward`` (every layer's inputs are kept: (2 n_layer + 6) [B, L, D] fp32 arrays).

    Args:
        model: MambaLMHeadModel in train mode.
        input_ids: [B, L] token ids on the model's device.
        loss_fn: (logits [B, T, V], start, end) -> scalar, the part of the loss on positions [start, end);
            the total loss is the sum of the parts. ``lm_chunk_loss`` makes the usual one.
        chunk_size: T; need not divide L.

    Returns:
        The total loss, detached (a 0-dim tensor).
    """
    _check_model(model, "chunked_backward", train=True)
    _check_ids(input_ids, model, "chunked_backward")
    chunk_size = _check_chunk_size(chunk_size, "chunked_backward")
    spans = _spans(input_ids.shape[1], chunk_size)
    if model.config.bidirectional:
        if truncate_bptt:
            raise InputError("chunked_backward: truncate_bptt needs a causal model; a bidirectional model's "
                             "gradients are always exact here")
        return _bi_backward(model, input_ids, loss_fn, spans, memory_budget, spill_dir)
    if truncate_bptt:
        return _causal_backward_truncated(model, input_ids, loss_fn, spans, checkpoint_layers)
    return _causal_backward(model, input_ids, loss_fn, spans, checkpoint_layers)


def _causal_backward(model, input_ids, loss_fn, spans, use_checkpoint: bool) -> torch.Tensor:
    n_layer = model.config.n_layer
    boundary = [[None] * n_layer]
    with torch.no_grad():
        for s, e in spans[:-1]:
            boundary.append(_causal_chunk(model, input_ids[:, s:e], boundary[-1])[1])
    total = torch.zeros((), device=input_ids.device)
    g_states = None
    for s, e in reversed(spans):
        states = boundary.pop()  # a finished chunk's boundary states are not needed again
        leaves = [None if st is None else LayerCache(*_leaf((st.conv_state, st.ssm_state))) for st in states]
        normed, new = _causal_chunk(model, input_ids[:, s:e], leaves, use_checkpoint)
        loss = loss_fn(model._logits(normed), s, e)
        outs, grads = [loss], [torch.ones_like(loss)]
        if g_states is not None:
            for st, (g_conv, g_ssm) in zip(new, g_states, strict=True):
                outs += [st.conv_state, st.ssm_state]
                grads += [g_conv, g_ssm]
        torch.autograd.backward(outs, grads)
        total += loss.detach()
        g_states = None if leaves[0] is None else [(st.conv_state.grad, st.ssm_state.grad) for st in leaves]
    return total


def _causal_backward_truncated(model, input_ids, loss_fn, spans, use_checkpoint: bool) -> torch.Tensor:
    states = [None] * model.config.n_layer
    total = torch.zeros((), device=input_ids.device)
    for s, e in spans:
        normed, new = _causal_chunk(model, input_ids[:, s:e], states, use_checkpoint)
        loss = loss_fn(model._logits(normed), s, e)
        loss.backward()
        total += loss.detach()
        states = [LayerCache(st.conv_state.detach(), st.ssm_state.detach()) for st in new]
    return total


def _bi_backward(model, input_ids, loss_fn, spans, memory_budget, spill_dir) -> torch.Tensor:
    device = input_ids.device
    n_arrays = 2 * model.config.n_layer + 6
    buffers = _Buffers((input_ids.shape[0], input_ids.shape[1], model.config.d_model), n_arrays,
                       memory_budget, spill_dir)
    try:
        with torch.no_grad():
            hidden, residual, saved = _bi_forward(model, input_ids, spans, buffers, keep=True)
        gh, gr = buffers.new(device), buffers.new(device)
        spare = buffers.new(device), buffers.new(device)
        total = torch.zeros((), device=device)
        for s, e in spans:
            h, r = hidden.read(s, e).requires_grad_(), residual.read(s, e).requires_grad_()
            loss = loss_fn(model._logits(model.backbone.final_norm(h, r)[0]), s, e)
            loss.backward()
            gh.write(s, e, h.grad)
            gr.write(s, e, r.grad)
            total += loss.detach()
        for layer, (h_in, r_in, record) in zip(reversed(model.backbone.layers), reversed(saved), strict=True):
            gh_in, gr_in = spare
            _bi_layer_backward(layer, h_in, r_in, record, gh, gr, gh_in, None if r_in is None else gr_in, spans)
            spare, (gh, gr) = (gh, gr), (gh_in, gr_in)
        for s, e in spans:
            model.backbone.embedding(input_ids[:, s:e]).backward(gh.read(s, e))
    finally:
        buffers.close()
    return total


# ------------------------------------------------------------------------------------------ checkpointing


def _checkpointed(forward, *args, **kwargs):
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def checkpoint_blocks(model: MambaLMHeadModel, enabled: bool = True) -> MambaLMHeadModel:
    """Recompute each block in the backward pass instead of keeping its activations (one-pass training).

    Wraps every block's ``forward`` in ``torch.utils.checkpoint`` from outside, per instance, so the
    module tree and state-dict keys are unchanged; only the block inputs stay alive between forward and
    backward. ``enabled=False`` restores the plain forwards. Returns ``model``.
    """
    _check_model(model, "checkpoint_blocks", train=True)
    for layer in model.backbone.layers:
        layer.__dict__.pop("forward", None)
        if enabled:
            layer.forward = functools.partial(_checkpointed, layer.forward)
    return model


@contextlib.contextmanager
def blocks_checkpointed(model: MambaLMHeadModel):
    """``checkpoint_blocks`` for the duration of a ``with`` block."""
    checkpoint_blocks(model, True)
    try:
        yield model
    finally:
        checkpoint_blocks(model, False)
