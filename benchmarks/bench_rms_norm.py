"""Residual add + RMSNorm speed on a CUDA GPU: the fused Triton kernels against the PyTorch reference.

Shape and dtypes of a deep Mamba block under bf16 autocast: x [M, D] bf16 (the mixer's output), residual
[M, D] fp32 (``residual_in_fp32``), weight [D] fp32, normed emitted in bf16 (``out_dtype``) for the next
Linear; M = 16384 rows, D = 768 and 1536, both plain and ``rc_halves``. For each implementation: forward and
forward+backward time (median of CUDA-event timings, L2 flushed before each repeat), the forward's achieved
bandwidth over its minimum traffic (x 2 B + residual 4 B read, residual 4 B + normed 2 B written: 12 B an
element), the forward+backward step's peak memory above its inputs, and the largest relative error
(‖got − ref‖ / ‖ref‖) of its outputs and gradients against the reference evaluated in float64.

Implementations: ``add_rms_norm_fused``; ``add_rms_norm_ref`` eagerly; the reference under ``torch.compile``
(compiled once per shape, forward and backward; ``--no-compile`` skips it).

    python benchmarks/bench_rms_norm.py                  # the table
    python benchmarks/bench_rms_norm.py --sweep          # launch-shape sweep of the kernels first
    python benchmarks/bench_rms_norm.py --cpu-smoke      # tiny sizes on the CPU under TRITON_INTERPRET=1
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date

ROWS = 16384
DIMS = (768, 1536)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=ROWS)
    p.add_argument("--dims", type=int, nargs="+", default=list(DIMS))
    p.add_argument("--reps", type=int, default=50)
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile'd reference")
    p.add_argument("--sweep", action="store_true", help="time the kernels' launch shapes (NormConfig) first")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="check the script on the CPU: Triton's interpreter, 8 rows, D = 38 and 66, one repeat")
    return p.parse_args()


class Timer:
    """Median milliseconds of fn() over reps; on CUDA with CUDA events, each repeat after an L2 flush."""

    def __init__(self, torch, cuda: bool):
        self.torch, self.cuda = torch, cuda
        self.flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda") if cuda else None

    def __call__(self, fn, reps: int) -> float:
        torch = self.torch
        fn()  # warm-up: compiles, autotunes, allocates
        times = []
        for _ in range(reps):
            if not self.cuda:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
                continue
            self.flush.zero_()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        return statistics.median(times)


def make_inputs(torch, rows: int, dim: int, rc_halves: bool, device: str, seed: int = 0) -> dict:
    g = torch.Generator(device=device).manual_seed(seed)

    def randn(*shape, dtype=torch.float32, scale=1.0):
        return (scale * torch.randn(*shape, generator=g, device=device)).to(dtype)

    return {
        "x": randn(rows, dim, dtype=torch.bfloat16),
        "residual": randn(rows, dim, scale=4.0),
        "weight": 1 + 0.1 * randn(dim // 2 if rc_halves else dim),
        "dy": randn(rows, dim, dtype=torch.bfloat16),
        "dres": randn(rows, dim),
    }


def _kwargs(torch, rc_halves: bool, out_dtype) -> dict:
    return dict(eps=1e-5, residual_in_fp32=True, rc_halves=rc_halves, out_dtype=out_dtype)


def run_once(torch, fn, inp: dict, rc_halves: bool, out_dtype) -> list:
    """normed, residual and the gradients of x, residual, weight (for dy, dres) of one forward+backward."""
    leaves = [inp[k].detach().clone().requires_grad_() for k in ("x", "residual", "weight")]
    normed, res = fn(*leaves, **_kwargs(torch, rc_halves, out_dtype))
    grads = torch.autograd.grad([normed, res], leaves, grad_outputs=[inp["dy"], inp["dres"]])
    return [normed.detach(), res.detach(), *grads]


def measure(torch, timer: Timer, fn, inp: dict, rc_halves: bool, reps: int, cuda: bool) -> dict:
    kw = _kwargs(torch, rc_halves, torch.bfloat16)
    x, residual, weight = inp["x"], inp["residual"], inp["weight"]
    row = {}
    with torch.no_grad():
        row["fwd_ms"] = timer(lambda: fn(x, residual, weight, **kw), reps)
    leaves = [t.detach().clone().requires_grad_() for t in (x, residual, weight)]

    def step():
        normed, res = fn(*leaves, **kw)
        return torch.autograd.grad([normed, res], leaves, grad_outputs=[inp["dy"], inp["dres"]])

    row["fwdbwd_ms"] = timer(step, reps)
    row["gbps"] = 12 * x.numel() / (row["fwd_ms"] * 1e6)
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        grads = step()
        torch.cuda.synchronize()
        row["peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        del grads
    return row


def rel_err(got, ref) -> float:
    """‖got − ref‖ / ‖ref‖ in float64."""
    return ((got.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-12)).item()


def sweep(torch, timer: Timer, inp: dict, rc_halves: bool, reps: int) -> list[str]:
    """Forward and backward kernel time of each launch shape (the kernels alone, through the host functions)."""
    from seqssm.kernels.host import next_power_of_2
    from seqssm.kernels.rms_norm.triton_bwd import add_rms_norm_bwd
    from seqssm.kernels.rms_norm.triton_fwd import NormConfig, add_rms_norm_fwd, launch_config

    dim = inp["x"].shape[1]
    default = launch_config(dim, inp["x"].device)
    args = (inp["x"], inp["residual"], inp["weight"], 1e-5, torch.float32, torch.bfloat16, rc_halves)
    _, res_out, rstd = add_rms_norm_fwd(*args)
    lines = [f"sweep D = {dim}{' rc_halves' if rc_halves else ''} (default {default}): block_m warps "
             "programs/SM  fwd_ms bwd_ms"]
    print(lines[0], flush=True)
    for block_m in (1, 2, 4, 8, 16):
        if block_m * next_power_of_2(dim) > 16384:
            continue
        for warps in (2, 4, 8, 16):
            for per_sm in (2, 4, 8):
                cfg = NormConfig(block_m, warps, per_sm)
                fwd = timer(lambda cfg=cfg: add_rms_norm_fwd(*args, config=cfg), reps) if per_sm == 4 else None
                bwd = timer(lambda cfg=cfg: add_rms_norm_bwd(res_out, inp["weight"], rstd, inp["dy"], inp["dres"],
                                                             torch.bfloat16, torch.float32, rc_halves, config=cfg),
                            reps)
                fwd_s = f"{fwd:.4f}" if fwd is not None else "-"
                lines.append(f"  {block_m:2d} {warps:2d} {per_sm}  {fwd_s:>7} {bwd:.4f}")
                print(lines[-1], flush=True)
    return lines


def main() -> None:
    args = parse_args()
    if args.cpu_smoke:
        # Must be set before triton is first imported.
        os.environ["TRITON_INTERPRET"] = "1"
        args.rows, args.dims, args.reps, args.no_compile = 8, [38, 66], 1, True  # even D for rc_halves
    import torch
    import triton

    from seqssm import __version__
    from seqssm.kernels.rms_norm import add_rms_norm_fused, add_rms_norm_ref

    cuda = not args.cpu_smoke
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench_rms_norm: needs a CUDA GPU (or --cpu-smoke to check the script on the CPU)")
    device = "cuda" if cuda else "cpu"
    timer = Timer(torch, cuda)
    impls = {"fused (Triton)": add_rms_norm_fused, "ref (PyTorch eager)": add_rms_norm_ref}
    if not args.no_compile:
        impls["ref (torch.compile)"] = torch.compile(add_rms_norm_ref, dynamic=False)

    name = torch.cuda.get_device_name() if cuda else f"CPU {platform.processor() or platform.machine()}, interpreter"
    versions = (f"torch {torch.__version__}, triton {triton.__version__}, cuda {torch.version.cuda}, "
                f"seqssm {__version__}")
    lines = [f"{name}, {date.today()}, {versions}",
             f"M = {args.rows} rows, x bf16, residual fp32 (residual_in_fp32), weight fp32, normed bf16; "
             f"median of {args.reps}" + (", L2 flushed" if cuda else ""), ""]
    for line in lines:
        print(line, flush=True)
    table = ["| D | rc_halves | implementation | fwd ms | fwd GB/s | fwd+bwd ms | peak MB (fwd+bwd) | max rel err |",
             "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for dim in args.dims:
        for rc in (False, True):
            inp = make_inputs(torch, args.rows, dim, rc, device)
            if args.sweep:
                lines += sweep(torch, timer, inp, rc, min(args.reps, 20)) + [""]
            # The reference in float64 on the same values: the yardstick for every implementation's outputs and
            # gradients (bf16 ones are off by their rounding, ~2e-3 relative).
            exact = run_once(torch, add_rms_norm_ref, {k: v.double() for k, v in inp.items()}, rc, torch.float64)
            for label, fn in impls.items():
                row = measure(torch, timer, fn, inp, rc, args.reps, cuda)
                outs = run_once(torch, fn, inp, rc, torch.bfloat16)
                err = max(rel_err(a, b) for a, b in zip(outs, exact, strict=True))
                peak = f"{row['peak_mb']:.0f}" if "peak_mb" in row else "-"
                table.append(f"| {dim} | {rc} | {label} | {row['fwd_ms']:.4f} | {row['gbps']:.0f} | "
                             f"{row['fwdbwd_ms']:.4f} | {peak} | {err:.2e} |")
                print(table[-1], flush=True)
    print()
    print("\n".join(lines + table))


if __name__ == "__main__":
    main()
