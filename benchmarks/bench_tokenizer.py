"""Tokenizer throughput on a random genome-like string; prints a table of MB/s (1 MB = 10^6 bases).

    .venv/bin/python benchmarks/bench_tokenizer.py [--size-mb 100] [--repeats 3]

The input mimics a soft-masked assembly: ACGT upper and lower case with a few percent N. Each row is the
best of ``--repeats`` runs of one public call on the whole string (or its ids).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import torch

from seqssm.tokenizers import ByteTokenizer, NucleotideTokenizer


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def random_genome(size: int, seed: int = 0) -> str:
    alphabet = np.frombuffer(b"ACGTacgtN", dtype=np.uint8)
    probs = [0.22, 0.22, 0.22, 0.22, 0.025, 0.025, 0.025, 0.025, 0.02]
    return np.random.default_rng(seed).choice(alphabet, size=size, p=probs).tobytes().decode("ascii")


def best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100.0, help="string length in millions of bases")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    size = int(args.size_mb * 1e6)
    seq = random_genome(size)
    nuc, byte = NucleotideTokenizer(), ByteTokenizer()
    ids = nuc.encode(seq)
    ids_tensor = torch.from_numpy(ids)

    rows = [
        ("NucleotideTokenizer.encode(str)", lambda: nuc.encode(seq)),
        ("NucleotideTokenizer.encode(str, return_soft_mask=True)",
         lambda: nuc.encode(seq, return_soft_mask=True)),
        ("NucleotideTokenizer.encode_codes(str) -> uint8", lambda: nuc.encode_codes(seq)),
        ("ByteTokenizer.encode(str)", lambda: byte.encode(seq)),
        ("NucleotideTokenizer.decode(int64 ids)", lambda: nuc.decode(ids)),
        ("reverse_complement(str)", lambda: nuc.reverse_complement(seq)),
        ("reverse_complement(np.ndarray int64)", lambda: nuc.reverse_complement(ids)),
        ("reverse_complement(torch.Tensor int64, CPU)", lambda: nuc.reverse_complement(ids_tensor)),
    ]

    print(f"# seqssm tokenizer benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# CPU: {cpu_name()} ({torch.get_num_threads()} torch threads)")
    print(f"# python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"# input: {size / 1e6:g} M bases, best of {args.repeats}")
    width = max(len(name) for name, _ in rows)
    print(f"| {'call':<{width}} | {'seconds':>8} | {'MB/s':>8} |")
    print(f"| {'-' * width} | {'-' * 7}: | {'-' * 7}: |")
    for name, fn in rows:
        fn()  # warm-up: first-touch page faults and lazy initialisation are not throughput
        seconds = best_seconds(fn, args.repeats)
        print(f"| {name:<{width}} | {seconds:8.3f} | {size / seconds / 1e6:8.0f} |")


if __name__ == "__main__":
    main()
