"""Embedding DNA (or, with a byte-level model, any file's bytes) with a checkpoint's backbone: pooled per
record or per window, or per position."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seqssm.datasets.batching import pad_batch
from seqssm.datasets.byte_windows import tile_bytes
from seqssm.datasets.fasta import iter_fasta
from seqssm.datasets.windows import tile_windows
from seqssm.errors import InputError, require_free_space
from seqssm.models import rc_invariant_pool
from seqssm.pipelines.common import (
    FILE,
    OutputPlan,
    atomic_path,
    autocast,
    checkpoint_modality,
    load_checked,
    progress,
    require_file,
    require_finite,
    resolve_device,
)
from seqssm.pipelines.configs_sequence import EmbedConfig
from seqssm.tokenizers import get_tokenizer


@dataclass
class EmbedResult:
    embeddings: Path
    index: Path
    count: int
    dim: int


def _pieces(cfg: EmbedConfig, tokenizer, raw: bool):
    """(record, start, end, ids) in file order, 0-based half-open coordinates (bytes: a record is a file)."""
    if raw:
        yield from tile_bytes(cfg.fasta, cfg.window, cfg.stride)
    elif cfg.window is None:
        for name, seq in iter_fasta(cfg.fasta):
            yield name, 0, len(seq), tokenizer.encode(seq, source=f"record {name!r} of {cfg.fasta}")
    else:
        yield from tile_windows(cfg.fasta, cfg.window, stride=cfg.stride or cfg.window, tokenizer=tokenizer)


def _batches(pieces, batch_size):
    batch = []
    for piece in pieces:
        batch.append(piece)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _pool(hidden: torch.Tensor, mask: torch.Tensor, rc_equivariant: bool) -> torch.Tensor:
    """Mean over real positions of hidden [B, L, D] -> [B, D]; for RC-equivariant models the
    strand-invariant pool of the [forward | reverse-complement] halves, [B, D/2], so x and rc(x) agree."""
    if rc_equivariant:
        return rc_invariant_pool(hidden, mask)
    m = mask.unsqueeze(-1).float()
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


def embed_outputs(cfg: EmbedConfig) -> OutputPlan:
    """The files ``embed`` writes into ``cfg.out`` and the inputs it must never replace."""
    out = Path(cfg.out)
    return OutputPlan([(out / "embeddings.npy", FILE), (out / "index.tsv", FILE)], folder=out,
                      inputs=[("checkpoint", cfg.checkpoint), ("FASTA file", cfg.fasta)], overwrite=cfg.overwrite)


@torch.no_grad()
def embed(cfg: EmbedConfig) -> EmbedResult:
    """Embed every record (or window) of ``cfg.fasta``; write ``embeddings.npy`` and ``index.tsv`` to ``cfg.out``.

    Pooled mode: ``embeddings.npy`` is float32 [R, D], the mean of the final hidden states over real bases
    (for RC-equivariant models the strand-invariant pool, [R, D/2]),
    row i described by line i of ``index.tsv``: id (``record:start-end``, 1-based inclusive as samtools
    writes regions), record, start, end (0-based half-open, as BED).
    Per-position mode: ``embeddings.npy`` is a float16 [P, D] array over all positions in file order
    (memory-mapped: open it with ``np.load(path, mmap_mode="r")``) and ``index.tsv`` gives each piece's row
    ``offset``.
    The modality is the checkpoint's (``cfg.modality`` None; a contradicting one is refused): with a
    byte-level checkpoint the records are the files of ``cfg.fasta`` (one file, or every file of a folder),
    read as raw bytes, their positions bytes.
    """
    raw = checkpoint_modality(cfg.checkpoint, "embed", given=cfg.modality, takes=("dna", "byte")) == "bytes"
    if not raw:
        require_file(cfg.fasta, "FASTA file")
    device = resolve_device(cfg.device)
    embed_outputs(cfg).check()
    model = load_checked(cfg.checkpoint, device).eval()
    tokenizer = get_tokenizer(model.config.tokenizer)
    dim = model.config.d_model // 2 if model.config.rc_equivariant and not cfg.per_position else model.config.d_model
    out = Path(cfg.out)

    if cfg.per_position:
        # One pass to count positions so the memory-mapped array can be sized before any model work.
        total = sum(end - start for _, start, end, _ in _pieces(cfg, tokenizer, raw))
        require_free_space(out, total * dim * 2, f"embeddings.npy ({total} positions × {dim} float16)")
    rows, pooled, offset = [], [], 0
    with atomic_path(out / "embeddings.npy") as tmp_npy:
        if cfg.per_position:
            array = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.float16, shape=(total, dim))
        bar = progress(desc="embed", unit="bp")
        for batch in _batches(_pieces(cfg, tokenizer, raw), cfg.batch_size):
            ids, mask = pad_batch([torch.as_tensor(piece[3]) for piece in batch], pad_id=tokenizer.pad_id)
            ids, mask = ids.to(device), mask.to(device)
            with autocast(device):
                hidden = model.backbone(ids, attention_mask=mask).float()
            first = f"{batch[0][0]}:{batch[0][1] + 1}"
            require_finite(hidden[mask], f"checkpoint {cfg.checkpoint}", f"the batch starting at {first}")
            if cfg.per_position:
                for (name, start, end, _), h in zip(batch, hidden, strict=True):
                    array[offset:offset + end - start] = h[: end - start].cpu().numpy().astype(np.float16)
                    rows.append((name, start, end, offset))
                    offset += end - start
            else:
                pooled.append(_pool(hidden, mask, model.config.rc_equivariant).cpu().numpy())
                rows.extend((name, start, end, None) for name, start, end, _ in batch)
            bar.update(int(mask.sum()))
        bar.close()
        if not rows:
            what = "input" if raw else "FASTA file"
            raise InputError(f"{what} {cfg.fasta!r} has no {'bytes' if raw else 'sequence'} to embed")
        if cfg.per_position:
            array.flush()
            del array
        else:
            with open(tmp_npy, "wb") as f:
                np.save(f, np.concatenate(pooled).astype(np.float32), allow_pickle=False)
        # Inside the embeddings' block: the index is renamed first and the embeddings right after, so a
        # failure leaves neither new file.
        with atomic_path(out / "index.tsv") as tmp_tsv, open(tmp_tsv, "w") as f:
            f.write("id\trecord\tstart\tend" + ("\toffset" if cfg.per_position else "") + "\n")
            for name, start, end, off in rows:
                tail = f"\t{off}" if cfg.per_position else ""
                f.write(f"{name}:{start + 1}-{end}\t{name}\t{start}\t{end}{tail}\n")
    return EmbedResult(embeddings=out / "embeddings.npy", index=out / "index.tsv", count=len(rows), dim=dim)
