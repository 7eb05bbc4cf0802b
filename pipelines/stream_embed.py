"""Streaming per-position embeddings of whole chromosomes or megabase reads, resumable; streamed audio scores.

``stream_embed`` runs a causal checkpoint over one FASTA contig (or a region of it) or one read of a
SAM/BAM/CRAM file, ``chunk_size`` bases at a time, carrying every layer's states (seqssm.streaming), so
memory stays flat whatever the length. Output folder:

- ``embeddings.npy``: float16 [L, D], row i the normed final hidden state at base ``start + i``;
  open with ``np.load(path, mmap_mode="r")``.
- ``index.tsv``: one row (id ``record:start+1-end``, record, start, end, offset) as ``seqssm embed
  --per-position`` writes it; it appears only when the run is complete.
- while running: ``stream.json`` (what is being embedded: source, record, region, chunk size, the
  checkpoint's weights digest) and ``stream_state.safetensors`` (position reached and every layer's state:
  conv and SSM states, an attention layer's keys), replaced atomically every ``SAVE_EVERY_S`` seconds. A
  run started again on the same folder with the same job continues from there and writes a file identical
  to an uninterrupted run.

Why ``.npy`` (header from ``np.lib.format.open_memmap``, rows by positioned writes): zarr and h5py are not
dependencies; a ``.npy`` is written in place chunk by chunk, needs no library to read (numpy, or any .npy
reader), gives O(1) access to any row, and makes resuming trivial, since rows are at fixed offsets and a
chunk interrupted half-way is simply rewritten. What it lacks is compression: L × D × 2 bytes (512 MB per
Mbp at D = 256).

``stream_audio`` scores a long recording with a causal audio LM in one streamed pass: windows read by
seeking (``load_audio``), μ-law tokens, bits per sample of each next-sample prediction, optionally the
per-position embeddings too.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from seqssm.datasets.fasta import FastaFile, FastaStream, sniff_compression
from seqssm.datasets.reads import iter_reads
from seqssm.errors import InputError, did_you_mean, require_free_space
from seqssm.models import InferenceCache
from seqssm.pipelines.common import (
    BROKEN_WEIGHTS,
    FILE,
    LM,
    OutputPlan,
    atomic_path,
    autocast,
    check_checkpoint,
    load_checked,
    progress,
    require_file,
    require_finite,
    resolve_device,
)
from seqssm.pipelines.configs_sequence import StreamAudioConfig, StreamEmbedConfig
from seqssm.streaming import check_streamable, stream_hidden, stream_step
from seqssm.tokenizers import get_tokenizer

__all__ = ["StreamAudioConfig", "StreamAudioResult", "StreamEmbedConfig", "StreamEmbedResult", "StreamTimings",
           "stream_audio", "stream_embed"]

READ_SUFFIXES = (".sam", ".bam", ".cram")
STATE_NAME, JOB_NAME = "stream_state.safetensors", "stream.json"
SAVE_EVERY_S = 60.0  # seconds between resumable points of a streamed embedding (an fsync and a state file)
WRITEBACK_BYTES = 1 << 28  # rows written between two writeback hints (see _Rows.write)
SLOTS = 3  # pinned host buffers of a streamed embedding: computing, copying back, being written


@dataclass
class StreamEmbedResult:
    embeddings: Path
    index: Path
    record: str
    start: int
    end: int
    dim: int
    resumed_from: int


def default_chunk_size(device: torch.device) -> int:
    """Bases per chunk when none is given. On a GPU 2^18: a chunk's launches cost the host about the same
    whatever its length, so 2^16 left the H200 waiting on the host (3.6 against 4.7 M bases/s end to end,
    16 Mbp, d_model 128 x 4 layers), for 1.3 GB of device memory instead of 0.3. On the CPU 2^16 keeps the
    scan's intermediates small."""
    return 1 << 18 if device.type == "cuda" else 1 << 16


def _weights_digest(checkpoint: str) -> str:
    digest = hashlib.sha256()
    with open(Path(checkpoint) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_source(cfg: StreamEmbedConfig) -> tuple[str, int, Callable[[int, int], str]]:
    """(record name, record length, fetch(start, end) -> bases) for the record ``cfg`` names."""
    path = require_file(cfg.source, "sequence file")
    if path.suffix.lower() in READ_SUFFIXES:
        names = []
        with iter_reads(path, reference=cfg.reference) as reads:
            for read in reads:
                if cfg.record is None or read.name == cfg.record:
                    names.append(read.name)
                    sequence = read.sequence
        if len(names) != 1:
            what = "no read" if not names else f"{len(names)} reads"
            raise InputError(f"{path}: {what} named {cfg.record!r}; pass --region with one read's name"
                             if cfg.record is not None else
                             f"{path} holds {len(names)} reads; pass --region with the name of the one to embed")
        return names[0], len(sequence), lambda s, e: sequence[s:e]
    # Plain gzip cannot be indexed, but one pass front to back is all a streamed job needs.
    fasta = FastaStream(path) if sniff_compression(path) == "gzip" else FastaFile(path)
    shown = ", ".join(fasta.contigs[:5]) + (", ..." if len(fasta.contigs) > 5 else "")
    if cfg.record is None and len(fasta.contigs) != 1:
        raise InputError(f"{path} has {len(fasta.contigs)} records ({shown}); pass --region with one of them")
    name = cfg.record if cfg.record is not None else fasta.contigs[0]
    if name not in fasta.lengths:
        raise InputError(f"{path} has no record {name!r}{did_you_mean(name, fasta.contigs)}; pass --region with "
                         f"one of {shown}")
    return name, fasta.lengths[name], lambda s, e: fasta.fetch(name, s, e)


# Tensor names in the state file: Mamba-style states keep the short names of earlier files (conv.i, ssm.i);
# other state fields (an attention layer's k, v, pos) go by their field name.
_SHORT = {"conv_state": "conv", "ssm_state": "ssm"}


def _state_tensors(cache: InferenceCache):
    for i, layer in enumerate(cache.layers):
        for f in dataclasses.fields(layer):
            yield f"{_SHORT.get(f.name, f.name)}.{i}", getattr(layer, f.name)


def _save_state(path: Path, cache: InferenceCache, position: int) -> None:
    tensors = {name: t.detach().cpu().contiguous() for name, t in _state_tensors(cache)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"position": str(position)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def _load_state(path: Path, cache: InferenceCache) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        position = int(f.metadata()["position"])
    tensors = load_file(str(path))
    for name, t in _state_tensors(cache):
        if name not in tensors or tensors[name].shape != t.shape:
            raise InputError(f"{path}: the saved stream state does not fit this checkpoint's layers ({name}); "
                             "start over with --overwrite")
        t.copy_(tensors[name])
    cache.seqlen_offset = position
    return position


def _load_causal(checkpoint: str, device: torch.device, what: str):
    """The checkpoint's model on ``device``, without the probe forward of ``load_checked``: the streamed jobs
    check every chunk's outputs for NaN / inf (the first chunk's check stops a broken checkpoint with the
    probe's error), and a probe would load (or compile) a second signature of every GPU kernel."""
    model = load_checked(checkpoint, device, probe=False).eval()
    if model.config.bidirectional:
        raise InputError(f"{what}: checkpoint {checkpoint} is bidirectional; streaming carries states left to "
                         "right and needs a causal model (for a bidirectional one use seqssm.streaming."
                         "chunked_forward with out= a memory-mapped array)")
    return model


def stream_embed_outputs(cfg: StreamEmbedConfig) -> OutputPlan:
    """The files ``stream_embed`` writes into ``cfg.out`` and the inputs it must never replace."""
    out = Path(cfg.out)
    return OutputPlan([(out / name, FILE) for name in ("embeddings.npy", "index.tsv", JOB_NAME, STATE_NAME)],
                      folder=out, overwrite=cfg.overwrite, inputs=[("checkpoint", cfg.checkpoint),
                                                                   ("sequence file", cfg.source),
                                                                   ("reference", cfg.reference)])


@dataclass
class StreamTimings:
    """Where a ``stream_embed`` run spent its host time, in seconds (filled when passed in)."""

    read: float = 0.0  # fetch and tokenize a chunk (overlaps with the device running the previous chunk)
    launch: float = 0.0  # enqueue a chunk's forward and its copy back (on the CPU: the forward itself)
    wait: float = 0.0  # blocked on the device: compute and copy not hidden behind reading
    write: float = 0.0  # blocked on the writer thread (rows into embeddings.npy not hidden behind the rest)
    save: float = 0.0  # resumable points: fsync of the rows, then the state file
    sync: float = 0.0  # the last fsync of the rows, before index.tsv says the file is complete
    chunks: list = field(default_factory=list)  # seconds since the loop started when each chunk was written


class _Rows:
    """embeddings.npy written with positioned writes (``os.pwrite``), not a memmap: the pages go through
    the page cache without ever being mapped into this process, so its memory stays flat on any length."""

    def __init__(self, path: Path, length: int, dim: int, create: bool):
        if create:
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(length, dim))  # header, sparse
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            self.offset = f.tell()
        if tuple(shape) != (length, dim) or dtype != np.float16:
            raise InputError(f"{path}: holds {dtype} {list(shape)}, not float16 [{length}, {dim}]; start over "
                             "with --overwrite")
        self.row_bytes = dim * 2
        self.fd = os.open(path, os.O_RDWR)
        self.unflushed: tuple[int, int] | None = None  # byte range written since the last writeback hint

    def write(self, start: int, rows: np.ndarray) -> None:
        view = memoryview(np.ascontiguousarray(rows)).cast("B")
        at = self.offset + start * self.row_bytes
        first = at
        while view:
            done = os.pwrite(self.fd, view, at)
            view, at = view[done:], at + done
        lo, hi = self.unflushed or (first, at)
        lo, hi = min(lo, first), max(hi, at)
        self.unflushed = (lo, hi)
        if hi - lo >= WRITEBACK_BYTES and hasattr(os, "posix_fadvise"):
            # DONTNEED starts the writeback of these dirty pages without waiting for it, and lets the clean
            # ones go: the disk works while the stream goes on (instead of all of it in the last fsync, 1.7 s
            # for 4 GB on the H200's machine), and the page cache this job fills stays bounded.
            os.posix_fadvise(self.fd, lo, hi - lo, os.POSIX_FADV_DONTNEED)
            self.unflushed = None

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@torch.no_grad()
def stream_embed(cfg: StreamEmbedConfig, *, on_chunk: Callable[[int, int], None] | None = None,
                 save_every_s: float = SAVE_EVERY_S, timings: StreamTimings | None = None) -> StreamEmbedResult:
    """Embed one record per position, chunk by chunk, resumable; see the module notes for the files.

    The loop keeps the device busy: chunk k + 1 is read and tokenized while chunk k runs; rows come back
    through pinned buffers (two, alternating) and are written while the next chunk computes; the only
    waits are for a chunk's own rows. Every chunk has the same shape (the last is padded, see
    ``seqssm.streaming.stream_step``), so compiled kernels are reused from the second chunk on. States are
    saved (rows fsynced first) every ``save_every_s`` seconds, not every chunk; an interrupted run resumes
    from the last save and rewrites the rows after it. ``on_chunk(k, position)`` is called after each save
    (chunk k, 0-based from where this call started, done; ``position`` reached) and after the last chunk;
    an exception there stops the run in a resumable state. ``timings``: filled with where the time went.
    """
    require_file(Path(cfg.checkpoint) / "model.safetensors", "checkpoint weights")
    check_checkpoint(cfg.checkpoint, "embed --stream", modality=("dna", "byte"), causal=True)
    device = resolve_device(cfg.device)
    model = _load_causal(cfg.checkpoint, device, "stream_embed")
    check_streamable(model, "stream_embed")
    tokenizer = get_tokenizer(model.config.tokenizer)
    record, record_length, fetch = _open_source(cfg)
    end = record_length if cfg.end is None else cfg.end
    if end > record_length:
        raise InputError(f"--region {record}:{cfg.start + 1}-{end} ends past the end of {record} (length "
                         f"{record_length}); give an END of at most {record_length}")
    dim, length = model.config.d_model, end - cfg.start
    if cfg.chunk_size is None:
        cfg = dataclasses.replace(cfg, chunk_size=default_chunk_size(device))
    if "A" in model.config.layer_kinds and length > model.config.attn_max_len:
        raise InputError(f"{cfg.checkpoint} has attention layers, which carry every earlier key and hold at most "
                         f"{model.config.attn_max_len} positions (its attn_max_len, set by pretrain --attn-max-len); "
                         f"this region has {length}: give a shorter --region")
    job = {"source": str(Path(cfg.source).resolve()), "record": record, "start": cfg.start, "end": end,
           "chunk_size": cfg.chunk_size, "weights_sha256": _weights_digest(cfg.checkpoint), "dim": dim}
    out = Path(cfg.out)
    paths = {name: out / name for name in ("embeddings.npy", "index.tsv", JOB_NAME, STATE_NAME)}
    result = StreamEmbedResult(paths["embeddings.npy"], paths["index.tsv"], record, cfg.start, end, dim, 0)

    previous = json.loads(paths[JOB_NAME].read_text()) if paths[JOB_NAME].is_file() else None
    if cfg.resume and previous is not None and previous != job and not cfg.overwrite:
        raise InputError(f"--out {out} holds an embedding of another job ({previous['record']} "
                         f"[{previous['start']}, {previous['end']}), chunk size {previous['chunk_size']}); "
                         "use another --out, or --overwrite to replace it")
    plan = stream_embed_outputs(cfg)
    if cfg.resume and previous == job:
        plan.overwrite = True  # its own files, continued
    plan.check()
    if cfg.resume and previous == job and paths["index.tsv"].is_file():
        result.resumed_from = length
        return result
    resuming = cfg.resume and previous == job and paths[STATE_NAME].is_file() and paths["embeddings.npy"].is_file()
    if not resuming:
        require_free_space(out, length * dim * 2, f"embeddings.npy ({length} positions × {dim} float16)")
    created = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    cache = model.allocate_cache(1)
    position = 0
    if resuming:
        position = _load_state(paths[STATE_NAME], cache)
    else:
        for name in ("index.tsv", STATE_NAME):
            paths[name].unlink(missing_ok=True)
        with atomic_path(paths[JOB_NAME]) as tmp:
            tmp.write_text(json.dumps(job, indent=1) + "\n")
    rows = _Rows(paths["embeddings.npy"], length, dim, create=not resuming)
    result.resumed_from = position

    bar = progress(total=length, initial=position, desc=f"stream-embed {record}", unit="bp", unit_scale=True)
    try:
        _run(cfg, model, tokenizer, fetch, cache, rows, record, position, length, device, bar,
             on_chunk, paths[STATE_NAME], save_every_s, timings if timings is not None else StreamTimings())
    except InputError:
        # Bad input (a character that is no base) stops every rerun at the same place: a run that started
        # from nothing leaves nothing. Other exceptions (an interrupt) keep the files to resume from.
        if not resuming:
            rows.close()
            for name in ("embeddings.npy", JOB_NAME, STATE_NAME):
                paths[name].unlink(missing_ok=True)
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise
    finally:
        bar.close()
        rows.close()
    with atomic_path(paths["index.tsv"]) as tmp:
        tmp.write_text(f"id\trecord\tstart\tend\toffset\n{record}:{cfg.start + 1}-{end}\t{record}\t{cfg.start}"
                       f"\t{end}\t0\n")
    paths[STATE_NAME].unlink(missing_ok=True)
    return result


def _run(cfg, model, tokenizer, fetch, cache, rows: _Rows, record: str, position: int, length: int,
         device: torch.device, bar, on_chunk, state_path: Path, save_every_s: float, t: StreamTimings) -> None:
    """The chunk loop of ``stream_embed`` (see there): rows [position, length) written, states saved.

    Three stages overlap: the device computes chunk k + 1 while the host waits for chunk k's rows and hands
    them to a writer thread, which writes them (``os.pwrite`` lets go of the GIL) while the host reads,
    tokenizes and launches the next chunks. Measured on an H200 (d_model 128 x 4 layers, chunk 2^16),
    launching a chunk and writing its 16 MB of rows take about 7 ms each; done one after the other on the
    host they capped the stream at 4 M bases/s, side by side at about twice that.
    """
    # One width for the whole job (not for what is left of it), so a resumed run computes the very same
    # shapes, hence the very same bytes, as an uninterrupted one.
    size = min(cfg.chunk_size, length)
    # Attention layers hold every key up to attn_max_len: padding would spend that budget, and their shapes
    # grow with every chunk anyway; SSM-only models get one shape for every chunk.
    pad = all(layer.kind != "A" for layer in model.backbone.layers)
    cuda = device.type == "cuda"
    # SLOTS pinned buffers: chunk k computes into slot k % SLOTS while chunk k - 1 waits for its copy and
    # chunk k - 2 may still be being written; a slot is reused only once its rows are on their way to disk.
    ids_host = [torch.zeros(size, dtype=torch.long, pin_memory=cuda) for _ in range(SLOTS)]
    out_host = [torch.empty(size, model.config.d_model, dtype=torch.float16, pin_memory=cuda) for _ in range(SLOTS)]
    ok_host = [torch.ones((), dtype=torch.bool, pin_memory=cuda) for _ in range(SLOTS)]
    events = [torch.cuda.Event() if cuda else None for _ in range(SLOTS)]
    spans = [(s, min(s + size, length)) for s in range(position, length, size)]
    clock, last_save, pending = time.perf_counter(), time.perf_counter(), None
    writing: collections.deque = collections.deque()  # (slot, rows, future) in chunk order

    def written(until_slot: int | None = None) -> None:
        """Wait for the writes in flight, oldest first: all of them, or up to the one that holds a slot."""
        while writing:
            slot, n, future = writing.popleft()
            w0 = time.perf_counter()
            future.result()  # an OSError in the writer (disk full) surfaces here
            w1 = time.perf_counter()
            t.write += w1 - w0
            t.chunks.append(w1 - clock)
            bar.update(n)
            if slot == until_slot:
                return

    def finish(job, writer) -> None:
        slot, s, e, region = job
        w0 = time.perf_counter()
        if events[slot] is not None:
            events[slot].synchronize()
        t.wait += time.perf_counter() - w0
        if not bool(ok_host[slot]):
            raise InputError(f"checkpoint {cfg.checkpoint} gives non-finite outputs (NaN or inf) for {region}: "
                             f"{BROKEN_WEIGHTS}")
        writing.append((slot, e - s, writer.submit(rows.write, s, out_host[slot][: e - s].numpy())))

    with ThreadPoolExecutor(1, thread_name_prefix="stream-embed-rows") as writer:
        try:
            for k, (s, e) in enumerate(spans):
                slot, n = k % SLOTS, e - s
                if any(w[0] == slot for w in writing):
                    written(until_slot=slot)
                r0 = time.perf_counter()
                region = f"{record}:{cfg.start + s + 1}-{cfg.start + e}"
                codes = tokenizer.encode(fetch(cfg.start + s, cfg.start + e), source=region)
                ids_host[slot][:n] = torch.from_numpy(codes)
                width = size if pad else n
                ids_host[slot][n:width] = 0  # padding: any valid token; causal layers never let it reach real rows
                r1 = time.perf_counter()
                with autocast(device):
                    hidden = stream_step(model, ids_host[slot][None, :width].to(device, non_blocking=True), cache,
                                         valid=n if width != n else None)[0, :n]
                out_host[slot][:n].copy_(hidden.to(torch.float16), non_blocking=True)
                ok_host[slot].copy_(torch.isfinite(hidden).all(), non_blocking=True)
                if events[slot] is not None:
                    events[slot].record()
                r2 = time.perf_counter()
                t.read, t.launch = t.read + r1 - r0, t.launch + r2 - r1
                if pending is not None:
                    finish(pending, writer)
                pending = (slot, s, e, region)
                last = e == length
                if last or time.perf_counter() - last_save >= save_every_s:
                    finish(pending, writer)
                    pending = None
                    written()
                    s0 = time.perf_counter()
                    rows.sync()  # rows on disk before the state that says they are done (or before index.tsv)
                    if not last:  # the last chunk's states include its padding; index.tsv marks the end instead
                        _save_state(state_path, cache, e)
                        last_save = time.perf_counter()
                        t.save += last_save - s0
                    else:
                        t.sync += time.perf_counter() - s0
                    if on_chunk is not None:
                        on_chunk(k, e)
        finally:
            # On any way out (an error, an interrupt) no write may still be running when the caller closes
            # the file; the rows already written stay, a resumed run rewrites those after the last save.
            for _, _, future in writing:
                future.cancel()
            wait([w[2] for w in writing])


# ------------------------------------------------------------------------------------------ audio


@dataclass
class StreamAudioResult:
    scores: Path
    embeddings: Path | None
    samples: int
    sample_rate: int
    bits_per_sample: float


def stream_audio_outputs(cfg: StreamAudioConfig) -> OutputPlan:
    """The files ``stream_audio`` writes into ``cfg.out`` and the inputs it must never replace."""
    out = Path(cfg.out)
    names = ["scores.tsv", "stream_audio.json"] + (["embeddings.npy"] if cfg.embeddings else [])
    return OutputPlan([(out / name, FILE) for name in names], folder=out, overwrite=cfg.overwrite,
                      inputs=[("checkpoint", cfg.checkpoint), ("recording", cfg.audio)])


@torch.no_grad()
def stream_audio(cfg: StreamAudioConfig) -> StreamAudioResult:
    """Bits per sample of a causal audio LM over a recording, streamed; writes ``scores.tsv`` (one row per
    second: second, first sample, samples, bits per sample) and, with ``embeddings``, ``embeddings.npy``
    (float16 [T, D]) to ``cfg.out``. Sample t is scored from samples < t; the first sample is not scored.
    """
    # torchaudio and the audio readers: imported here, not for the start-up of every DNA stream
    from seqssm.datasets.audio import audio_info, decoded_frames
    from seqssm.datasets.audio_stream import ResampledWindows
    from seqssm.transforms import AudioTokenizer

    check_checkpoint(cfg.checkpoint, "score-audio", modality="audio", kind=LM, causal=True)
    stream_audio_outputs(cfg).check()
    device = resolve_device(cfg.device)
    model = _load_causal(cfg.checkpoint, device, "stream_audio")
    tokenizer = AudioTokenizer.from_name(model.config.tokenizer)
    info = audio_info(cfg.audio)
    frames = decoded_frames(cfg.audio) if info.format == "MP3" else info.frames
    if frames == 0:
        raise InputError(f"{cfg.audio}: the recording has no frames (zero length); give one that holds audio")
    a = cfg.offset
    b = frames if cfg.num_frames is None else a + cfg.num_frames
    if not 0 <= a < b <= frames:
        raise InputError(f"{cfg.audio}: slice [{a}, {b}) is outside the recording's {frames} frames")
    rate = model.config.sample_rate or info.sample_rate
    windows = ResampledWindows(cfg.audio, a, b, info.sample_rate, rate, round(cfg.window_seconds * info.sample_rate))
    out = Path(cfg.out)
    emb_path = out / "embeddings.npy" if cfg.embeddings else None
    if cfg.embeddings:
        dim = model.config.d_model
        require_free_space(out, windows.total * dim * 2, f"embeddings.npy ({windows.total} samples × {dim} float16)")
    # Every file is written under a temporary name and all are renamed at the end, so a failed run leaves
    # no output (and no empty folder) behind.
    with contextlib.ExitStack() as outputs:
        array = None
        if cfg.embeddings:
            array = np.lib.format.open_memmap(outputs.enter_context(atomic_path(emb_path)), mode="w+",
                                              dtype=np.float16, shape=(windows.total, model.config.d_model))
        bits = np.zeros(windows.total, dtype=np.float64)  # bits[t]: the prediction of sample t; bits[0] unscored
        cache, last_logits, position = model.allocate_cache(1), None, 0
        bar = progress(total=windows.total, desc="stream-audio", unit="sample", unit_scale=True)
        for wave in windows:
            ids = tokenizer.encode(wave).to(device)
            for s in range(0, ids.shape[0], cfg.chunk_size):
                piece = ids[s:s + cfg.chunk_size]
                with autocast(device):
                    (hidden,) = stream_hidden(model, [piece[None]], cache)
                    logits = model.lm_head(hidden[0])[:, : model.config.vocab_size].float()
                require_finite(logits, f"checkpoint {cfg.checkpoint}", f"samples {position}-{position + len(piece)}")
                if last_logits is not None:
                    logits_for = torch.cat([last_logits, logits[:-1]])
                    targets, at = piece, position
                else:
                    logits_for, targets, at = logits[:-1], piece[1:], 1
                nll = F.cross_entropy(logits_for, targets, reduction="none") / math.log(2)
                bits[at:at + len(nll)] = nll.cpu().numpy()
                if array is not None:
                    array[position:position + len(piece)] = hidden[0].float().cpu().numpy().astype(np.float16)
                last_logits = logits[-1:]
                position += len(piece)
                bar.update(len(piece))
        bar.close()
        if array is not None:
            array.flush()
            del array
        tmp = outputs.enter_context(atomic_path(out / "scores.tsv"))
        with open(tmp, "w") as f:
            f.write("second\tstart_sample\tsamples\tbits_per_sample\n")
            for sec, s in enumerate(range(0, position, rate)):
                lo, hi = max(s, 1), min(s + rate, position)
                mean = bits[lo:hi].mean() if hi > lo else float("nan")
                f.write(f"{sec}\t{s}\t{hi - lo}\t{mean:.4f}\n")
        run = {"config": asdict(cfg), "sample_rate": rate, "samples": position,
               "bits_per_sample": float(bits[1:position].mean()) if position > 1 else float("nan")}
        outputs.enter_context(atomic_path(out / "stream_audio.json")).write_text(json.dumps(run, indent=1) + "\n")
    return StreamAudioResult(out / "scores.tsv", emb_path, position, rate, run["bits_per_sample"])
