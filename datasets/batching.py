"""Turning variable-length token sequences into batches: right padding with a mask, or packing.

Padding (:func:`pad_batch`) gives ``ids [B, L]`` with an ``attention_mask [B, L]``; the model runs
every row from position 0 and ignores positions past each row's length.

Packing (:func:`pack_sequences`) concatenates sequences into rows of one length with no padding
between them (only at each row's end), which wastes no compute on short sequences. The price is that
a row now holds several unrelated sequences, so a recurrent model must not carry anything across a
boundary: at the first token of each sequence the SSM state and the causal convolution window start
from zero, exactly as if the sequence stood alone in a padded batch. The batch says where the
boundaries are in three equivalent ways, for whichever the model's kernels take:

- ``seq_idx [K, L]`` int32: which sequence each position belongs to (-1 on padding). mamba_ssm's
  ``causal_conv1d_fn(..., seq_idx=)`` and ``mamba_chunk_scan_combined(..., seq_idx=)`` reset where it
  changes; a plain loop resets the state where ``seq_idx[t] != seq_idx[t - 1]``.
- ``position_ids [K, L]``: position inside its own sequence, 0 at each start (HF's packed format).
- ``cu_seqlens [S + 1]`` int32: offsets of each sequence in ``ids[attention_mask]`` (the real tokens in
  row-major order), flash-attention's varlen format; running each ``ids[mask][cu[s]:cu[s+1]]`` alone
  is the reference a packed forward must match. :func:`unpack` splits per-token outputs that way.

Records are ``(id, sequence, label)``; :class:`Collate` tokenises and batches them for a DataLoader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from seqssm.errors import InputError


class Record(NamedTuple):
    """One example from any source: an id, the sequence (text, or token ids [L] once tokenised),
    and a label (a string, or None when the source has none)."""

    id: str
    sequence: str | torch.Tensor
    label: str | None = None


def _as_id_tensors(seqs: Sequence, what: str) -> list[torch.Tensor]:
    if len(seqs) == 0:
        raise InputError(f"{what}: got no sequences; give at least one")
    out = []
    for i, s in enumerate(seqs):
        t = torch.as_tensor(s)
        # An empty list becomes a float tensor; it is still a valid (empty) sequence of ids.
        not_int = t.is_floating_point() or t.is_complex() or t.dtype == torch.bool
        if t.ndim != 1 or (not_int and t.numel() > 0):
            raise InputError(
                f"{what}: sequence {i} has dtype {t.dtype} and shape {tuple(t.shape)}; "
                "give 1-D integer token ids"
            )
        out.append(t.to(torch.int64))
    return out


def pad_batch(
    seqs: Sequence[torch.Tensor | np.ndarray],
    pad_id: int,
    pad_to_multiple_of: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D token id sequences into one batch.

    Args:
        seqs: B sequences of token ids, each [L_b] (tensors or arrays, any integer dtype).
        pad_id: id written into padding positions.
        pad_to_multiple_of: round L up to a multiple of this (kernels that tile positions like it).

    Returns:
        ids [B, L] int64 and attention_mask [B, L] bool (True on real tokens), L = max L_b rounded up.
    """
    tensors = _as_id_tensors(seqs, "pad_batch")
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise InputError(f"pad_to_multiple_of={pad_to_multiple_of}; give a positive integer or None")
    lengths = torch.tensor([len(t) for t in tensors])
    length = int(lengths.max())
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(tensors), length), pad_id, dtype=torch.int64)
    if lengths.max() > 0:
        padded = pad_sequence(tensors, batch_first=True, padding_value=pad_id)
        ids[:, : padded.shape[1]] = padded
    mask = torch.arange(length) < lengths[:, None]
    return ids, mask


@dataclass(frozen=True)
class PackedBatch:
    """Sequences packed into K rows of L positions; see the module docstring for how to use it.

    ids, attention_mask, seq_idx, position_ids are [K, L]; cu_seqlens is [S + 1] for S sequences,
    which appear in their input order.
    """

    ids: torch.Tensor
    attention_mask: torch.Tensor
    seq_idx: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int


def pack_sequences(
    seqs: Sequence[torch.Tensor | np.ndarray],
    max_length: int | None = None,
    pad_id: int = 0,
) -> PackedBatch:
    """Pack token id sequences end to end into rows of ``max_length`` positions.

    Args:
        seqs: S sequences of token ids, each [L_s].
        max_length: the row length L. Sequences are placed in input order, each in the current row
            if it fits and otherwise in a new one (sort by length first for tighter rows); the tail of
            each row is padding. None puts everything in one row of L = sum L_s, with no padding.
        pad_id: id written into padding positions.

    Returns:
        A :class:`PackedBatch`: ids [K, L], attention_mask [K, L], seq_idx [K, L] (int32, -1 on
        padding), position_ids [K, L] (0 on padding), cu_seqlens [S + 1] int32, max_seqlen.
    """
    tensors = _as_id_tensors(seqs, "pack_sequences")
    lengths = [len(t) for t in tensors]
    if max_length is None:
        max_length = max(sum(lengths), 1)
    if max_length < 1:
        raise InputError(f"pack_sequences: max_length={max_length}; give a positive integer or None")
    too_long = [i for i, n in enumerate(lengths) if n > max_length]
    if too_long:
        i = too_long[0]
        raise InputError(
            f"pack_sequences: sequence {i} has {lengths[i]} tokens, more than max_length={max_length}; "
            "raise max_length or cut sequences into windows first"
        )
    rows: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(lengths):
        if used + n > max_length:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n

    k = len(rows)
    ids = torch.full((k, max_length), pad_id, dtype=torch.int64)
    seq_idx = torch.full((k, max_length), -1, dtype=torch.int32)
    position_ids = torch.zeros((k, max_length), dtype=torch.int64)
    for r, members in enumerate(rows):
        col = 0
        for i in members:
            n = lengths[i]
            ids[r, col : col + n] = tensors[i]
            seq_idx[r, col : col + n] = i
            position_ids[r, col : col + n] = torch.arange(n)
            col += n
    cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu_seqlens[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return PackedBatch(
        ids=ids,
        attention_mask=seq_idx >= 0,
        seq_idx=seq_idx,
        position_ids=position_ids,
        cu_seqlens=cu_seqlens,
        max_seqlen=max(lengths),
    )


def unpack(packed: PackedBatch, values: torch.Tensor) -> list[torch.Tensor]:
    """Split per-position values [K, L, ...] of a packed batch back into S tensors [L_s, ...]."""
    flat = values[packed.attention_mask]
    return list(torch.split(flat, torch.diff(packed.cu_seqlens).tolist()))


class Collate:
    """DataLoader ``collate_fn``: records ``(id, sequence, label)`` → a dict of batch tensors.

    Text sequences are tokenised with ``tokenizer.encode``; sequences that are already token ids
    are used as they are. Labels become class indices into ``classes`` (e.g. a table's sorted label
    vocabulary); with ``classes=None`` the raw labels are passed through as a list.

    The batch holds ``ids`` (list of record ids), ``input_ids`` and ``attention_mask`` [B, L]
    (padded) or [K, L] (``pack=True``, adding ``seq_idx``, ``position_ids``, ``cu_seqlens``), and
    ``labels`` ([B] int64 with ``classes``) when the records carry labels.
    """

    def __init__(
        self,
        tokenizer,
        classes: Sequence[str] | None = None,
        pad_to_multiple_of: int | None = None,
        pack: bool = False,
        pack_length: int | None = None,
    ):
        if pack_length is not None and not pack:
            raise InputError(
                "Collate: pack_length given without pack=True; set pack=True or drop pack_length"
            )
        self.tokenizer = tokenizer
        self.classes = list(classes) if classes is not None else None
        self._class_index = {c: i for i, c in enumerate(self.classes)} if self.classes is not None else None
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pack = pack
        self.pack_length = pack_length

    def _encode(self, record: Record) -> torch.Tensor:
        if isinstance(record.sequence, str):
            return torch.from_numpy(np.asarray(self.tokenizer.encode(record.sequence), dtype=np.int64))
        return torch.as_tensor(record.sequence)

    def _labels(self, records: list[Record]):
        labels = [r.label for r in records]
        if all(label is None for label in labels):
            return None
        if self._class_index is None:
            return labels
        out = []
        for r in records:
            if r.label not in self._class_index:
                shown = ", ".join(map(str, self.classes[:10]))
                raise InputError(
                    f"record {r.id!r} has label {r.label!r}, not among the classes ({shown}); "
                    "build classes from the training data's label vocabulary"
                )
            out.append(self._class_index[r.label])
        return torch.tensor(out, dtype=torch.int64)

    def __call__(self, records: Sequence) -> dict:
        records = [Record(*r) for r in records]
        encoded = [self._encode(r) for r in records]
        pad_id = self.tokenizer.pad_id
        batch: dict = {"ids": [r.id for r in records]}
        if self.pack:
            packed = pack_sequences(encoded, self.pack_length, pad_id=pad_id)
            batch.update(
                input_ids=packed.ids,
                attention_mask=packed.attention_mask,
                seq_idx=packed.seq_idx,
                position_ids=packed.position_ids,
                cu_seqlens=packed.cu_seqlens,
            )
        else:
            batch["input_ids"], batch["attention_mask"] = pad_batch(encoded, pad_id, self.pad_to_multiple_of)
        labels = self._labels(records)
        if labels is not None:
            batch["labels"] = labels
        return batch
