"""Where the time of one selective-scan forward+backward goes on a CUDA GPU: the GPU time of each kernel (torch
profiler) beside the CUDA-event time of the whole step, for seqssm's Triton scan and mamba_ssm's CUDA scan when
importable. The difference is time the GPU waited for the host (launches, autograd, allocations), which
matters at short L.

    python benchmarks/profile_scan.py --lengths 4096 16384 65536 [--host-profile] [--trace DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch
from bench_scan import DIM, clear_grads, make_inputs, scan_impls, time_ms
from torch.profiler import ProfilerActivity, profile

from seqssm.kernels.host import DirectLauncher
from seqssm.kernels.selective_scan import triton as scan_triton
from seqssm.kernels.selective_scan.triton import BWD_CONFIG, selective_scan_fused
from seqssm.kernels.selective_scan.triton_fwd import SEQ_CONFIG


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


def host_profile(fn, top: int = 30) -> str:
    """cProfile of fn() issued 20 times: the top entries by own time, then by cumulative time."""
    prof = cProfile.Profile()
    for _ in range(20):
        torch.cuda.synchronize()
        prof.enable()
        fn()
        prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def fresh_forward(fwd, leaves: dict[str, torch.Tensor]) -> torch.Tensor:
    """fwd() with the leaves' gradients dropped first, so that the backward timed next assigns them."""
    clear_grads(leaves)
    return fwd()


class _Null(torch.autograd.Function):
    """An autograd function with the scan's inputs that does no work: the engine's own cost."""

    @staticmethod
    def forward(ctx, grads, *xs):
        ctx.grads = grads
        return torch.empty_like(xs[0])

    @staticmethod
    def backward(ctx, dout):
        return (None, *ctx.grads)


def inner_ms(module, name: str, run, reps: int = 50) -> float:
    """Median host milliseconds spent inside ``module.name`` while ``run()`` is issued reps times."""
    inner = getattr(module, name)
    times = []

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            times.append((time.perf_counter() - t0) * 1e3)

    setattr(module, name, timed)
    try:
        for _ in range(reps):
            torch.cuda.synchronize()
            run()
    finally:
        setattr(module, name, inner)
    return statistics.median(times)


def host_breakdown(length: int) -> None:
    """Host milliseconds of the pieces of one step of seqssm's scan at L = length: each kernel launch through
    the direct launcher and through ``JITFunction.run``, the forward and backward with either, an allocation,
    and autograd alone (a function with the same inputs that does nothing)."""
    x = {k: v.requires_grad_() for k, v in make_inputs(length).items()}
    dout = torch.randn(1, DIM, length, device="cuda", dtype=torch.bfloat16)

    def fwd():
        return selective_scan_fused(**x, delta_softplus=True)

    calls = []
    launch = DirectLauncher.launch

    def recorded(self, grid, args, kwargs, key=None):
        calls.append((self, grid, args, kwargs, key))
        launch(self, grid, args, kwargs, key)

    DirectLauncher.launch = recorded
    try:
        fwd().backward(dout)
    finally:
        DirectLauncher.launch = launch
    torch.cuda.synchronize()
    rows = []
    for self, grid, args, kwargs, key in calls:
        direct = host_ms(lambda s=self, g=grid, a=args, k=kwargs, key=key: s.launch(g, a, k, key), reps=50)
        jit = host_ms(lambda s=self, g=grid, a=args, k=kwargs: s.fn[g](*a, **k), reps=50)
        rows.append((f"launch {self.fn.__name__}: direct / JITFunction.run", direct, jit))
    try:
        for enabled in (True, False):
            DirectLauncher.enabled = enabled
            with torch.no_grad():
                fwd_ng = host_ms(fwd, reps=50)
            fwd_g = host_ms(fwd, reps=50)
            bwd = host_ms(lambda out: out.backward(dout), reps=50, setup=lambda: fresh_forward(fwd, x))
            step = time_ms(lambda: fwd().backward(dout), 20, setup=lambda: clear_grads(x))
            rows.append((f"{'direct' if enabled else 'JIT'} launches: forward no grad / with grad", fwd_ng, fwd_g))
            rows.append((f"{'direct' if enabled else 'JIT'} launches: backward / step (CUDA events)", bwd, step))
    finally:
        DirectLauncher.enabled = True

    def step():
        fresh_forward(fwd, x).backward(dout)

    rows.append(("inside _selective_scan_fwd / _selective_scan_bwd", inner_ms(scan_triton, "_selective_scan_fwd", step),
                 inner_ms(scan_triton, "_selective_scan_bwd", step)))
    rows.append(("inside triton_fwd.selective_scan_fwd / DirectLauncher.launch (median launch)",
                 inner_ms(scan_triton, "selective_scan_fwd", step), inner_ms(DirectLauncher, "launch", step)))
    u = x["u"]
    rows.append(("torch.empty_like(u) / torch.zeros(2, 1, 16, L)", host_ms(lambda: torch.empty_like(u), reps=100),
                 host_ms(lambda: torch.zeros(2, 1, 16, length, device="cuda"), reps=100)))
    grads = [torch.zeros_like(v) for v in x.values()]

    def null():
        return _Null.apply(grads, *x.values())

    null_bwd = host_ms(lambda out: out.backward(dout), reps=50, setup=lambda: fresh_forward(null, x))
    rows.append(("null autograd function: forward / backward", host_ms(null, reps=50), null_bwd))
    print(f"\nhost breakdown, L = {length} (ms, median, GPU drained before each):")
    for name, a, b in rows:
        print(f"  {name:<70} {a:7.3f} / {b:7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="*", default=[4096, 16384, 65536])
    parser.add_argument("--host-profile", action="store_true", help="also cProfile the host side of each step")
    parser.add_argument("--breakdown", action="store_true", help="only the host-time breakdown of seqssm's step")
    parser.add_argument("--trace", type=Path, help="also write a Chrome trace (host and GPU) of 3 steps here")
    args = parser.parse_args()
    if args.breakdown:
        for length in args.lengths:
            host_breakdown(length)
        return
    impls = scan_impls(BWD_CONFIG, SEQ_CONFIG, quick=True)
    for length in args.lengths:
        for name, (fn, _) in impls.items():
            leaves = {k: v.requires_grad_() for k, v in make_inputs(length).items()}
            dout = torch.randn(1, DIM, length, device="cuda", dtype=torch.bfloat16)

            def step(fn=fn, leaves=leaves, dout=dout):
                clear_grads(leaves)
                fn(**leaves).backward(dout)

            step()
            torch.cuda.synchronize()
            wall = time_ms(step, 10)
            per_kernel = kernel_times(step)
            with torch.no_grad():
                fwd_host = host_ms(lambda fn=fn, leaves=leaves: fn(**leaves))
            bwd_host = host_ms(lambda out, dout=dout: out.backward(dout),
                               setup=lambda fn=fn, leaves=leaves: fresh_forward(lambda: fn(**leaves), leaves))
            busy = sum(per_kernel.values())
            print(f"\n{name}, L = {length}: step {wall:.3f} ms (CUDA events), kernels {busy:.3f} ms;"
                  f" host time to issue: forward {fwd_host:.3f} ms, backward {bwd_host:.3f} ms, forward+backward "
                  f"{host_ms(step):.3f} ms")
            for kname, ms in sorted(per_kernel.items(), key=lambda kv: -kv[1]):
                print(f"  {ms:8.3f} ms  {kname}")
            if args.host_profile:
                print(host_profile(step))
            if args.trace:
                args.trace.mkdir(parents=True, exist_ok=True)
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for _ in range(3):
                        step()
                    torch.cuda.synchronize()
                slug = name.split()[0].replace(",", "")
                prof.export_chrome_trace(str(args.trace / f"{slug}_{length}.json"))


if __name__ == "__main__":
    main()
