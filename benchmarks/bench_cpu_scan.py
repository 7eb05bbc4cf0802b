"""Selective scan speed on the CPU: the chunked PyTorch scan against the sequential fp32 loop reference.

Shape: B = 1, D = 256, N = 16, fp32, B/C per position ([B, N, L]), with D, z, delta_bias and softplus, as in a
Mamba block; L = 4,096 and 65,536 (with --quick: D = 64, L = 1,024 and 8,192). For each implementation:
forward time and throughput in tokens/s (B·L per second, under no_grad) and forward+backward time (gradients
of u, Δ, A, B, C, D, z, delta_bias). Each number is the best of a few repeats after one warm-up; the reference
at the longest L gets one timed run. A second table sweeps chunk_size for the chunked scan at the shorter L.

    .venv/bin/python benchmarks/bench_cpu_scan.py [--quick] [--threads 2] [--repeats 3]

The machine may be shared: the best of the repeats is the least disturbed run, not a mean.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch

from seqssm.kernels.selective_scan import selective_scan_chunked, selective_scan_ref

NSTATE = 16


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_inputs(dim: int, length: int, requires_grad: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    t = {
        "u": torch.randn(1, dim, length, generator=gen),
        "delta": torch.randn(1, dim, length, generator=gen) * 0.5 - 2.0,
        "A": -torch.arange(1, NSTATE + 1, dtype=torch.float32).repeat(dim, 1),  # Mamba's S4D-real init
        "B": torch.randn(1, NSTATE, length, generator=gen),
        "C": torch.randn(1, NSTATE, length, generator=gen),
        "D": torch.ones(dim),
        "z": torch.randn(1, dim, length, generator=gen),
        "delta_bias": torch.randn(dim, generator=gen) * 0.1,
    }
    return {k: v.requires_grad_(requires_grad) for k, v in t.items()}


def best_seconds(fn, repeats: int, warmup: bool = True) -> float:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def time_scan(scan, dim: int, length: int, repeats: int, warmup: bool, **kw) -> tuple[float, float]:
    """(forward seconds, forward+backward seconds) of one scan."""
    t = make_inputs(dim, length, requires_grad=False)

    def forward():
        with torch.no_grad():
            scan(**t, delta_softplus=True, **kw)

    fwd = best_seconds(forward, repeats, warmup)
    t = make_inputs(dim, length, requires_grad=True)

    def forward_backward():
        for X in t.values():
            X.grad = None
        scan(**t, delta_softplus=True, **kw).sum().backward()

    return fwd, best_seconds(forward_backward, repeats, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="D = 64, L = 1,024 and 8,192")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=32, help="chunk_size of the main table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dim, lengths = (64, (1024, 8192)) if args.quick else (256, (4096, 65536))

    print(f"# CPU selective scan, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# torch {torch.__version__}, {cpu_name()}, {torch.get_num_threads()} threads")
    print(f"# shape B = 1, D = {dim}, N = {NSTATE}, fp32, B/C [B, N, L], with D, z, delta_bias, softplus")
    print()
    print("| L | scan | fwd ms | fwd tokens/s | fwd+bwd ms | fwd speedup | fwd+bwd speedup |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for length in lengths:
        longest = length == lengths[-1]
        rows = [
            ("ref", *time_scan(selective_scan_ref, dim, length, 1 if longest else args.repeats, not longest)),
            (
                f"chunked T={args.chunk_size}",
                *time_scan(selective_scan_chunked, dim, length, args.repeats, True, chunk_size=args.chunk_size),
            ),
        ]
        ref_fwd, ref_fb = rows[0][1], rows[0][2]
        for name, fwd, fb in rows:
            print(
                f"| {length:,} | {name} | {fwd * 1e3:,.0f} | {length / fwd:,.0f} | {fb * 1e3:,.0f} "
                f"| {ref_fwd / fwd:.1f}x | {ref_fb / fb:.1f}x |",
                flush=True,
            )

    length = lengths[0]
    print()
    print(f"chunk_size sweep, L = {length:,}")
    print()
    print("| chunk_size | fwd ms | fwd tokens/s | fwd+bwd ms |")
    print("| ---: | ---: | ---: | ---: |")
    for chunk in (8, 16, 32, 64, 128, 256):
        fwd, fb = time_scan(selective_scan_chunked, dim, length, args.repeats, True, chunk_size=chunk)
        print(f"| {chunk} | {fwd * 1e3:,.1f} | {length / fwd:,.0f} | {fb * 1e3:,.1f} |", flush=True)


if __name__ == "__main__":
    main()
