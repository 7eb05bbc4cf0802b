"""Where the time of one selective-scan forward+backward goes on a CUDA GPU: the GPU time of each kernel (torch
profiler) beside the CUDA-event time of the whole step, for seqssm's Triton scan and mamba_ssm's CUDA scan when
importable. The difference is time the GPU waited for the host (launches, autograd, allocations), which
matters at short L.

    python benchmarks/profile_scan.py --lengths 4096 16384 65536
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from collections import defaultdict

import torch
from bench_scan import DIM, make_inputs, scan_impls, time_ms
from torch.profiler import ProfilerActivity, profile

from seqssm.kernels.selective_scan.fused import BWD_CONFIG, FWD_CONFIG
from seqssm.kernels.selective_scan.fused_v2 import SEQ_CONFIG


def kernel_times(step, reps: int = 5) -> dict[str, float]:
    """Mean GPU milliseconds per step of each kernel name."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            step()
        torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            times[evt.name[:60]] += evt.device_time / 1000 / reps
    return dict(times)


def host_ms(fn, reps: int = 20, setup=None) -> float:
    """Median host milliseconds to issue fn(setup()) or fn() (no synchronisation inside; the GPU queue is
    drained between)."""
    times = []
    for _ in range(reps):
        arg = setup() if setup is not None else None
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn() if setup is None else fn(arg)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def host_profile(fn, top: int = 25) -> str:
    """cProfile of fn() issued 20 times, the top entries by own time."""
    prof = cProfile.Profile()
    for _ in range(20):
        torch.cuda.synchronize()
        prof.enable()
        fn()
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="*", default=[4096, 16384, 65536])
    parser.add_argument("--host-profile", action="store_true", help="also cProfile the host side of each step")
    args = parser.parse_args()
    impls = scan_impls(FWD_CONFIG, BWD_CONFIG, SEQ_CONFIG, quick=True)
    for length in args.lengths:
        for name, (fn, _) in impls.items():
            leaves = {k: v.requires_grad_() for k, v in make_inputs(length).items()}
            dout = torch.randn(1, DIM, length, device="cuda", dtype=torch.bfloat16)

            def step(fn=fn, leaves=leaves, dout=dout):
                for v in leaves.values():
                    v.grad = None
                fn(**leaves).backward(dout)

            step()
            torch.cuda.synchronize()
            wall = time_ms(step, 10)
            kernels = kernel_times(step)
            with torch.no_grad():
                fwd_host = host_ms(lambda fn=fn, leaves=leaves: fn(**leaves))
            bwd_host = host_ms(lambda out, dout=dout: out.backward(dout),
                               setup=lambda fn=fn, leaves=leaves: fn(**leaves))
            print(f"\n{name}, L = {length}: step {wall:.3f} ms (CUDA events), kernels {sum(kernels.values()):.3f} ms;"
                  f" host time to issue: forward {fwd_host:.3f} ms, backward {bwd_host:.3f} ms, forward+backward "
                  f"{host_ms(step):.3f} ms")
            for kname, ms in sorted(kernels.items(), key=lambda kv: -kv[1]):
                print(f"  {ms:8.3f} ms  {kname}")
            if args.host_profile:
                print(host_profile(step))


if __name__ == "__main__":
    main()
