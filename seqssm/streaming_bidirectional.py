"""Bidirectional models streamed layer by layer: the per-position arrays (in memory, or ``np.memmap`` files
beyond a memory budget) and one layer's forward and reverse sweeps and their backward. The entry points are
in ``seqssm/streaming.py`` (its docstring describes the method); split from it to keep both short.
``mixer_chunk`` (one chunk through a causal mixer from its states) lives here since both use it.

Shapes: B batch, L length, T chunk length, D d_model, E d_inner, N d_state.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from seqssm.models import LayerCache, MambaMixer
from seqssm.models.rcps import RCPSBiMambaMixer


def mixer_chunk(
    mixer: MambaMixer, hidden: torch.Tensor, conv_state: torch.Tensor | None, ssm_state: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk through a causal mixer from its states, differentiable in them (``MambaMixer.forward``).

    Args:
        mixer: the layer whose weights and kernels (its ``impl``) are used.
        hidden: [B, T, D].
        conv_state: [B, E, W - 1] the W - 1 conv inputs before the chunk, or None (zeros).
        ssm_state: [B, E, N] fp32 scan state before the chunk, or None (zeros).

    Returns:
        out [B, T, D], conv_state [B, E, W - 1], ssm_state [B, E, N] after the chunk.
    """
    state = None if conv_state is None else LayerCache(conv_state=conv_state, ssm_state=ssm_state)
    out, state = mixer(hidden, state, return_state=True)
    return out, state.conv_state, state.ssm_state



# ------------------------------------------------------------------------------------------ per-position arrays


class _Buffers:
    """Makes [B, L, D] fp32 numpy arrays: in RAM, or ``np.memmap`` files in a temporary directory when
    ``count`` of them would exceed ``memory_budget`` bytes.
    """

    def __init__(self, shape: tuple[int, ...], count: int, memory_budget: int | None, spill_dir):
        self.shape = shape
        self.spill = memory_budget is not None and count * int(np.prod(shape)) * 4 > memory_budget
        self._tmp = tempfile.TemporaryDirectory(prefix="seqssm-spill-", dir=spill_dir) if self.spill else None
        self._made = 0

    def new(self, device: torch.device) -> _Array:
        if not self.spill:
            return _Array(np.empty(self.shape, dtype=np.float32), device)
        self._made += 1
        path = Path(self._tmp.name) / f"buffer{self._made}.f32"
        return _Array(np.memmap(path, dtype=np.float32, mode="w+", shape=self.shape), device)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


class _Array:
    """A [B, L, D] fp32 array read and written by chunk as torch tensors, read back in the dtype last
    written (bf16 and fp16 values round-trip through fp32 exactly).
    """

    def __init__(self, data: np.ndarray, device: torch.device):
        self.data, self.device, self.dtype = data, device, torch.float32

    def read(self, s: int, e: int) -> torch.Tensor:
        # A copy: chunks become autograd leaves and must not alias what later chunks overwrite.
        return torch.from_numpy(np.array(self.data[:, s:e])).to(device=self.device, dtype=self.dtype)

    def write(self, s: int, e: int, value: torch.Tensor) -> None:
        self.dtype = value.dtype
        self.data[:, s:e] = value.detach().float().cpu().numpy()

    def add(self, s: int, e: int, value: torch.Tensor) -> None:
        self.data[:, s:e] += value.detach().float().cpu().numpy()


# ------------------------------------------------------------------------------------------ bidirectional


class _Lane(NamedTuple):
    """One causal mixer sweeping one direction over some channels of a bidirectional layer's input.

    A BiMambaMixer has one lane per direction over all channels. An RC-PS layer has two: the forward
    strand half [:H] as in BiMamba, and the reverse-complement half [H:], which the shared mixer reads
    channel-flipped and length-reversed, so there the forward sweep belongs to ``rev`` and the reverse
    sweep to ``fwd`` (see ``seqssm.models.rcps``).
    """

    mixer: MambaMixer
    channels: slice
    flip_channels: bool


def _lanes(layer, reverse: bool) -> list[_Lane]:
    mixer = layer.mixer
    if isinstance(mixer, RCPSBiMambaMixer):
        half = mixer.fwd.d_model
        first, second = (mixer.rev, mixer.fwd) if reverse else (mixer.fwd, mixer.rev)
        return [_Lane(first, slice(0, half), False), _Lane(second, slice(half, None), True)]
    return [_Lane(mixer.rev if reverse else mixer.fwd, slice(None), False)]


def _lanes_chunk(lanes: list[_Lane], normed: torch.Tensor, states: list, reverse: bool):
    """One chunk through every lane of one direction: normed [B, T, D], states per lane (conv, ssm)
    -> (output [B, T, D], states after the chunk). ``reverse`` scans the chunk back to front.
    """
    outs, new = [], []
    for lane, (conv, ssm) in zip(lanes, states, strict=True):
        x = normed[..., lane.channels]
        x = x.flip(-1) if lane.flip_channels else x
        y, conv, ssm = mixer_chunk(lane.mixer, x.flip(1) if reverse else x, conv, ssm)
        y = y.flip(1) if reverse else y
        outs.append(y.flip(-1) if lane.flip_channels else y)
        new.append((conv, ssm))
    return (outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)), new


def _bi_layer_forward(layer, h_in: _Array, r_in: _Array | None, h_out: _Array, r_out: _Array, spans,
                      record: dict | None = None) -> None:
    """One bidirectional block over the whole sequence: a forward sweep then a reverse sweep, each carrying
    its lanes' (conv, ssm) states. ``h_out``/``r_out`` may be ``h_in``/``r_in`` (a chunk is read before it
    is rewritten). ``record`` receives the states before each chunk of each sweep, indexed like ``spans``.
    """
    lanes = _lanes(layer, reverse=False)
    states = [(None, None)] * len(lanes)
    for i, (s, e) in enumerate(spans):
        if record is not None:
            record["fwd"][i] = states
        normed, residual = layer.add_norm(h_in.read(s, e), None if r_in is None else r_in.read(s, e))
        y, states = _lanes_chunk(lanes, normed, states, reverse=False)
        r_out.write(s, e, residual)
        h_out.write(s, e, y)
    lanes = _lanes(layer, reverse=True)
    states = [(None, None)] * len(lanes)
    for i in reversed(range(len(spans))):
        s, e = spans[i]
        if record is not None:
            record["rev"][i] = states
        # add_rms_norm's normed output is the norm of the summed residual, which r_out now holds.
        normed = layer.add_norm(r_out.read(s, e), None)[0]
        y, states = _lanes_chunk(lanes, normed, states, reverse=True)
        h_out.add(s, e, y)


def _leaf(state):
    """A boundary state as autograd leaves: (conv, ssm) that collect the gradient sent back into them."""
    conv, ssm = state
    if conv is None:
        return None, None
    return conv.detach().requires_grad_(), ssm.detach().requires_grad_()


def _bi_layer_backward(layer, h_in: _Array, r_in: _Array | None, record: dict, gh: _Array, gr: _Array,
                       gh_in: _Array, gr_in: _Array | None, spans) -> None:
    """Gradients of one bidirectional block: (gh, gr) on its outputs -> (gh_in, gr_in) on its inputs;
    parameter gradients accumulate. The forward sweep's chunks go last to first, the reverse sweep's first
    to last (it ran last to first), each carrying the gradient of its boundary states.
    """
    for reverse in (False, True):
        lanes = _lanes(layer, reverse)
        g_states = None
        for i in (range(len(spans)) if reverse else reversed(range(len(spans)))):
            s, e = spans[i]
            h = h_in.read(s, e).requires_grad_()
            r = None if r_in is None else r_in.read(s, e).requires_grad_()
            states = [_leaf(st) for st in record["rev" if reverse else "fwd"][i]]
            normed, residual = layer.add_norm(h, r)
            y, new = _lanes_chunk(lanes, normed, states, reverse)
            # the residual stream's own gradient goes through once, with the first sweep
            outs, grads = ([y], [gh.read(s, e)]) if reverse else ([y, residual], [gh.read(s, e), gr.read(s, e)])
            if g_states is not None:
                outs += [t for st in new for t in st]
                grads += g_states
            torch.autograd.backward(outs, grads)
            (gh_in.add if reverse else gh_in.write)(s, e, h.grad)
            if r is not None:
                (gr_in.add if reverse else gr_in.write)(s, e, r.grad)
            g_states = None if states[0][0] is None else [t.grad for st in states for t in st]


def _bi_forward(model, input_ids, spans, buffers: _Buffers, keep: bool):
    """Layer-major forward up to the final norm's inputs. Returns (hidden, residual, saved): with ``keep``,
    ``saved`` holds every layer's (input arrays, sweep boundary states) for the backward; without it the
    arrays are updated in place and nothing is kept.
    """
    device = model.backbone.embedding.weight.device
    hidden, residual, saved = buffers.new(device), None, []
    for s, e in spans:
        hidden.write(s, e, model.backbone.embedding(input_ids[:, s:e]))
    for layer in model.backbone.layers:
        if keep:
            record = {"fwd": [None] * len(spans), "rev": [None] * len(spans)}
            h_out, r_out = buffers.new(device), buffers.new(device)
            saved.append((hidden, residual, record))
        else:
            record, h_out = None, hidden
            r_out = residual if residual is not None else buffers.new(device)
        _bi_layer_forward(layer, hidden, residual, h_out, r_out, spans, record)
        hidden, residual = h_out, r_out
    return hidden, residual, saved
