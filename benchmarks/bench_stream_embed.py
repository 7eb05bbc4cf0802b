"""Throughput of ``seqssm embed --per-position --stream`` (issue 20), end to end and piece by piece.

Input: a FASTA contig (``--fasta``/``--record``), or by default a random contig of ``--length`` bases written
into a temporary folder (nothing is downloaded). Model: a random causal Mamba LM, d_model 128, 4 layers
(``--d-model``, ``--n-layer``), saved as a checkpoint and loaded back as the CLI does (impl "auto": Triton on
CUDA, the chunked PyTorch scan on the CPU; bf16 autocast on CUDA).

Measured:

1. ``stream_embed`` (the function ``seqssm embed --per-position --stream`` calls), twice in one process: the
   cold run pays the kernel compiles (Triton compiles once per kernel signature; an on-disk cache, if warm,
   hides part of it), the warm run does not. For each: wall time and bases/s, the first chunk (incl.
   compile), the steady-state chunk (median interval between written chunks), and where the host time went
   (``StreamTimings``: read + tokenize, launch, wait on the device, write, state saves).
2. The pieces alone, warm, each chunk synchronised: read + tokenize, compute (``stream_step``), copy-out
   (device → pinned host float16), write (positioned write of the rows into a file).
3. Peak memory: the process's RSS high-water mark (it should not grow with the length: rows are written,
   not mapped) and, on CUDA, ``max_memory_allocated``.

    .venv/bin/python benchmarks/bench_stream_embed.py --smoke --out /tmp/bse          # CPU, tiny, < 20 s
    python benchmarks/bench_stream_embed.py --device cuda --out $OUT/stream_embed      # 4 Mbp, chunk 2^18

Prints a Markdown table; ``--out`` gets results.json and results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from seqssm.config import MambaConfig
from seqssm.device import autocast
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.common import load_checked, resolve_device
from seqssm.pipelines.configs_sequence import StreamEmbedConfig
from seqssm.pipelines.stream_embed import StreamTimings, _Rows, default_chunk_size, stream_embed
from seqssm.streaming import stream_step
from seqssm.tokenizers import get_tokenizer

START = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - START:7.1f} s] {message}", file=sys.stderr, flush=True)


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def write_fasta(path: Path, length: int, seed: int = 0) -> None:
    """One record ``chrB`` of ``length`` random bases, 80 per line, written in blocks (flat memory)."""
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    block = 80 * 50_000
    with open(path, "wb") as f:
        f.write(b">chrB\n")
        for s in range(0, length, block):
            seq = letters[rng.integers(0, 4, min(block, length - s))]
            full = len(seq) // 80 * 80
            lines = np.concatenate([seq[:full].reshape(-1, 80), np.full((full // 80, 1), 10, np.uint8)], 1)
            f.write(lines.tobytes())
            if full < len(seq):
                f.write(seq[full:].tobytes() + b"\n")


def save_model(path: Path, d_model: int, n_layer: int) -> None:
    torch.manual_seed(0)
    MambaLMHeadModel(MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=16)).save_pretrained(path)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def end_to_end(cfg: StreamEmbedConfig, label: str, length: int) -> dict:
    say(f"{label}: stream_embed over {length:,} bases, chunk {cfg.chunk_size:,} ...")
    timings = StreamTimings()
    t0 = time.perf_counter()
    stream_embed(cfg, timings=timings)
    wall = time.perf_counter() - t0
    chunks = timings.chunks
    steps = np.diff(chunks) if len(chunks) > 1 else np.array([])
    steady = float(np.median(steps[:-1])) if len(steps) > 1 else (float(steps[0]) if len(steps) else float("nan"))
    row = {"run": label, "wall_s": wall, "mbases_per_s": length / wall / 1e6, "chunks": len(chunks),
           "first_chunk_s": chunks[0] if chunks else float("nan"), "steady_chunk_s": steady,
           "steady_mbases_per_s": cfg.chunk_size / steady / 1e6 if steady == steady and steady > 0 else float("nan"),
           "read_s": timings.read, "launch_s": timings.launch, "wait_s": timings.wait, "write_s": timings.write,
           "save_s": timings.save, "sync_s": timings.sync,
           "setup_s": wall - (chunks[-1] if chunks else 0.0) - timings.sync}
    say(f"{label}: {wall:.2f} s = {row['mbases_per_s']:.3g} M bases/s (first chunk {row['first_chunk_s']:.2f} s, "
        f"steady {steady * 1e3:.1f} ms/chunk)")
    return row


def pieces(checkpoint: Path, fasta: Path, record: str, length: int, chunk: int, device: torch.device,
           n_chunks: int) -> dict:
    """Median per-chunk seconds of each stage alone, warm, synchronised after each chunk."""
    from seqssm.datasets.fasta import FastaFile

    model = load_checked(checkpoint, device).eval()
    tokenizer = get_tokenizer(model.config.tokenizer)
    source = FastaFile(fasta)
    spans = [(s, s + chunk) for s in range(0, length - chunk + 1, chunk)][:n_chunks] or [(0, length)]
    times = {"read": [], "compute": [], "copy_out": [], "write": []}
    cache = model.allocate_cache(1)
    cuda = device.type == "cuda"
    host = torch.empty(spans[0][1] - spans[0][0], model.config.d_model, dtype=torch.float16, pin_memory=cuda)
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        rows = _Rows(Path(tmp) / "rows.npy", spans[-1][1], model.config.d_model, create=True)
        for i, (s, e) in enumerate(spans):
            t0 = time.perf_counter()
            ids = torch.from_numpy(tokenizer.encode(source.fetch(record, s, e)))
            t1 = time.perf_counter()
            ids = ids.to(device)[None]
            sync(device)
            t2 = time.perf_counter()
            with autocast(device):
                hidden = stream_step(model, ids, cache)[0]
            sync(device)
            t3 = time.perf_counter()
            host[: e - s].copy_(hidden.to(torch.float16))
            sync(device)
            t4 = time.perf_counter()
            rows.write(s, host[: e - s].numpy())
            t5 = time.perf_counter()
            if i:  # the first chunk compiles
                for key, value in zip(times, (t1 - t0, t3 - t2, t4 - t3, t5 - t4), strict=True):
                    times[key].append(value)
        rows.close()
    say(f"pieces: {len(spans)} chunks timed one stage at a time")
    return {key: statistics.median(v) if v else float("nan") for key, v in times.items()}


def profile(checkpoint: Path, chunk: int, device: torch.device) -> str:
    """torch.profiler over 3 warm chunks of ``stream_step`` (one launch + copy-out each): where the host's
    launch time goes (ops by self CPU time, and the count of syncs and device-to-host copies)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = load_checked(checkpoint, device).eval()
    cache = model.allocate_cache(1)
    ids = torch.randint(0, 4, (1, chunk), device=device)
    host = torch.empty(chunk, model.config.d_model, dtype=torch.float16, pin_memory=device.type == "cuda")

    def one() -> None:
        with torch.no_grad(), autocast(device):
            host.copy_(stream_step(model, ids, cache)[0].to(torch.float16), non_blocking=True)

    one()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    t0 = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        for _ in range(3):
            one()
        sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    text = events.table(sort_by="self_cpu_time_total", row_limit=20)
    syncs = sum(e.count for e in events if "Synchronize" in e.key or "synchronize" in e.key)
    say(f"profile: 3 chunks in {wall * 1e3:.1f} ms under the profiler; {syncs} synchronize calls")
    return (f"\nProfile of 3 warm chunks ({wall * 1e3:.1f} ms under the profiler, {syncs} synchronize calls):\n\n"
            f"```\n{text}\n```\n")


def table(rows: list[dict], parts: dict, chunk: int, meta: dict) -> str:
    lines = [f"Streamed per-position embedding: {meta['length']:,} bases, chunk {chunk:,}, d_model "
             f"{meta['d_model']} × {meta['n_layer']} layers, {meta['device']} ({meta['device_name']})", "",
             "| run | wall s | M bases/s | chunks | first chunk s | steady ms/chunk | steady M bases/s | read s | "
             "launch s | wait s | write s | save s | last fsync s | setup s |",
             "|---|" + "---:|" * 13]
    for r in rows:
        lines.append(f"| {r['run']} | {r['wall_s']:.2f} | {r['mbases_per_s']:.3g} | {r['chunks']} | "
                     f"{r['first_chunk_s']:.2f} | {r['steady_chunk_s'] * 1e3:.1f} | {r['steady_mbases_per_s']:.3g} | "
                     f"{r['read_s']:.2f} | {r['launch_s']:.2f} | {r['wait_s']:.2f} | {r['write_s']:.2f} | "
                     f"{r['save_s']:.2f} | {r['sync_s']:.2f} | {r['setup_s']:.2f} |")
    lines += ["", "Each stage alone (warm, synchronised, median per chunk):", "",
              "| read + tokenize ms | compute ms | copy-out ms | write ms |", "|---:|---:|---:|---:|",
              f"| {parts['read'] * 1e3:.2f} | {parts['compute'] * 1e3:.2f} | {parts['copy_out'] * 1e3:.2f} | "
              f"{parts['write'] * 1e3:.2f} |", "",
              f"Peak RSS {meta['peak_rss_mb']:.0f} MB; peak CUDA memory allocated {meta['cuda_peak_mb']:.0f} MB.",
              "write s: blocked on the writer thread; last fsync s: the rows synced before index.tsv; setup s: model "
              "load, checks, index and state files (wall minus the chunk loop and the fsync)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", help="a FASTA to embed (default: a random contig in a temporary folder)")
    parser.add_argument("--record", help="its record (default: the only one)")
    parser.add_argument("--length", type=int, default=4_000_000, help="bases of the random contig")
    parser.add_argument("--chunk-size", type=int, help="default: the pipeline's (2^18 on a GPU, 2^16 on the CPU)")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--piece-chunks", type=int, default=16, help="chunks timed in the per-stage part")
    parser.add_argument("--profile", action="store_true", help="also a torch.profiler table of 3 warm chunks")
    parser.add_argument("--smoke", action="store_true", help="CPU, 3 kbp, chunk 512, d_model 16 × 2 layers (seconds)")
    parser.add_argument("--out", help="folder for results.json and results.md")
    args = parser.parse_args(argv)
    if args.smoke:
        args.length, args.chunk_size, args.d_model, args.n_layer = 3000, 512, 16, 2
        args.device, args.piece_chunks = "cpu", 3
    device = resolve_device(args.device)
    args.chunk_size = args.chunk_size or default_chunk_size(device)
    # Progress bars on for this run only: called in-process (the smoke test), it must not leak into the caller.
    before = os.environ.get("SEQSSM_PROGRESS")
    os.environ.setdefault("SEQSSM_PROGRESS", "1")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_stream_embed_") as tmp:
            tmp = Path(tmp)
            fasta = Path(args.fasta) if args.fasta else tmp / "random.fa"
            if not args.fasta:
                say(f"writing a random contig of {args.length:,} bases to {fasta}")
                write_fasta(fasta, args.length)
            from seqssm.datasets.fasta import FastaFile

            index = FastaFile(fasta)  # builds the .fai once, outside the timings
            record = args.record or index.contigs[0]
            length = index.lengths[record]
            save_model(tmp / "ckpt", args.d_model, args.n_layer)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rows = []
            for label in ("cold", "warm"):
                cfg = StreamEmbedConfig(checkpoint=str(tmp / "ckpt"), source=str(fasta), record=record,
                                        chunk_size=args.chunk_size, device=str(device), out=str(tmp / label))
                rows.append(end_to_end(cfg, label, length))
            rss = peak_rss_bytes()
            cuda_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
            parts = pieces(tmp / "ckpt", fasta, record, length, args.chunk_size, device, args.piece_chunks)
            profile_text = profile(tmp / "ckpt", args.chunk_size, device) if args.profile else ""
        meta = {"length": length, "chunk_size": args.chunk_size, "d_model": args.d_model, "n_layer": args.n_layer,
                "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                else platform.processor() or platform.machine(), "torch": torch.__version__,
                "peak_rss_mb": rss / 2**20, "cuda_peak_mb": cuda_peak / 2**20}
        text = table(rows, parts, args.chunk_size, meta) + profile_text
        print(text)
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps({"meta": meta, "runs": rows, "pieces_s": parts}, indent=1)
                                              + "\n")
            (out / "results.md").write_text(text)
            say(f"wrote {out / 'results.json'} and {out / 'results.md'}")
        return text
    finally:
        if before is None:
            os.environ.pop("SEQSSM_PROGRESS", None)
        else:
            os.environ["SEQSSM_PROGRESS"] = before


if __name__ == "__main__":
    main()
