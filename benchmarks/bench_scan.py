"""Selective scan speed on a CUDA GPU: seqssm's Triton kernel side by side with mamba_ssm, SDPA and PyTorch.

Shape: B = 1, D = 1536, N = 16, bf16 u/Δ/z/B/C (B, C per position), fp32 A/D/delta_bias, with z, delta_bias
and softplus; L = 4,096 ... 1,048,576. For each implementation: forward and forward+backward time (median of
CUDA-event timings, L2 flushed by writing a 256 MB buffer before each repeat, random inputs), peak memory
(inputs included), and the forward's achieved bandwidth over the minimum bytes (4·D + 2·N)·L·2 (u, Δ, z, B, C
read once, out written once) next to the measured device copy bandwidth. Also the output error of each scan
against the fp32 loop reference at the smallest L.

Implementations: seqssm Triton (``selective_scan_fused``); mamba_ssm's CUDA ``selective_scan_fn`` when
importable; PyTorch SDPA flash attention (12 heads × 64, causal) for scale; the chunked PyTorch scan and the
loop reference at small L only.

    python benchmarks/bench_scan.py --out $OUT            # the table
    python benchmarks/bench_scan.py --sweep --out $OUT    # launch-shape sweep of the Triton kernels first
    python benchmarks/bench_scan.py --quick --seq-sweep --out $OUT   # sequential-forward shapes; fused + mamba only
    python benchmarks/bench_scan.py --bwd-sweep --sweep-only --sweep-length 16384 --out $OUT   # backward shapes
    python benchmarks/bench_scan.py --quick --paired-lengths 16384 --out $OUT   # + fwd+bwd alternated with mamba
    python benchmarks/bench_scan.py --quick --dim 512 --lengths 262144 --bwd-segments 2 4 8 2:1 --out $OUT
        # + the segment-parallel backward (ScanConfig.segments S, carry_parts Q as S:Q), each a row of its own
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import statistics
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

from seqssm.kernels.selective_scan.triton import BWD_CONFIG, ScanConfig, selective_scan_fused
from seqssm.kernels.selective_scan.triton_fwd import SEQ_CONFIG, SeqConfig

DIM, NSTATE = 1536, 16
LENGTHS = (4096, 16384, 65536, 262144, 1048576)
FLUSH = None


def flush_l2() -> None:
    global FLUSH
    if FLUSH is None:
        FLUSH = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    FLUSH.zero_()


def time_ms(fn, reps: int, setup=None) -> float:
    """Median milliseconds of fn() over reps, each after an L2 flush (and setup, untimed)."""
    times = []
    for _ in range(reps):
        if setup is not None:
            setup()
        flush_l2()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def reps_for(length: int) -> int:
    return 20 if length <= 65536 else (10 if length <= 262144 else 5)


def make_inputs(length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    bf16 = dict(device="cuda", dtype=torch.bfloat16)

    def randn(*shape, scale=1.0, shift=0.0, **kw):
        return torch.empty(*shape, **kw).normal_(shift, scale, generator=g)

    return {
        "u": randn(1, DIM, length, **bf16),
        "delta": randn(1, DIM, length, scale=0.5, shift=-1.0, **bf16),
        "A": -torch.empty(DIM, NSTATE, device="cuda").uniform_(0.5, 16.0, generator=g),
        "B": randn(1, NSTATE, length, **bf16),
        "C": randn(1, NSTATE, length, **bf16),
        "D": randn(DIM, device="cuda"),
        "z": randn(1, DIM, length, **bf16),
        "delta_bias": randn(DIM, scale=0.5, device="cuda"),
    }


OURS = ("seqssm triton",)


def ours_names(impls) -> list[str]:
    """seqssm's rows: the default launch shapes, then any --bwd-segments variants."""
    return [name for name in impls if name.startswith(OURS[0])]


def _flipped(fn):
    """fn on every [.., L] input flipped along L, output flipped back: the reverse scan as a bidirectional layer
    pays for it (neither scan has a reverse mode)."""
    def run(**x):
        return fn(**{k: v.flip(-1) if torch.is_tensor(v) and v.dim() == 3 else v for k, v in x.items()}).flip(-1)
    return run


def scan_impls(bwd_cfg: ScanConfig, seq_cfg: SeqConfig, quick: bool = False, reverse: bool = False,
               segments=()) -> dict[str, tuple[object, int]]:
    """name -> (fn(**inputs) -> out, largest L to run it at). quick: only the fused kernels and mamba_ssm.
    reverse: both scans on flipped copies. segments: also seqssm with each of these backward shapes, named
    by what they change (``ScanConfig.segments``, ``carry_parts``)."""
    def ours(cfg=bwd_cfg, **x):
        return selective_scan_fused(**x, delta_softplus=True, bwd_config=cfg, seq_config=seq_cfg)

    impls = {OURS[0]: (_flipped(ours) if reverse else ours, LENGTHS[-1])}
    for cfg in segments:
        if cfg != bwd_cfg:
            fn = functools.partial(ours, cfg)
            impls[f"{OURS[0]} bwd S={cfg.segments} Q={cfg.carry_parts}"] = (_flipped(fn) if reverse else fn,
                                                                            LENGTHS[-1])
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        def theirs(**x):
            return selective_scan_fn(**x, delta_softplus=True)

        impls["mamba_ssm CUDA"] = (_flipped(theirs) if reverse else theirs, LENGTHS[-1])
    except ImportError as err:
        print(f"mamba_ssm not importable ({err}); its rows are left out", flush=True)
    if quick:
        return impls
    try:
        from seqssm.kernels.selective_scan import selective_scan_chunked

        impls["seqssm chunked (PyTorch)"] = (lambda **x: selective_scan_chunked(**x, delta_softplus=True), 16384)
    except ImportError:
        print("selective_scan_chunked not importable; its rows are left out", flush=True)
    from seqssm.kernels.selective_scan import selective_scan_ref

    impls["loop reference (PyTorch)"] = (lambda **x: selective_scan_ref(**x, delta_softplus=True), 4096)
    return impls


def clear_grads(leaves: dict[str, torch.Tensor]) -> None:
    """Drop the leaves' gradients, so that a timed step assigns them instead of adding to them."""
    for v in leaves.values():
        v.grad = None


def measure_scan(fn, length: int, do_bwd: bool = True) -> dict[str, float]:
    x = make_inputs(length)
    reps = reps_for(length)
    row = {}
    with torch.no_grad():
        fn(**x)
        torch.cuda.synchronize()
        row["fwd_ms"] = time_ms(lambda: fn(**x), reps)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        fn(**x)
        torch.cuda.synchronize()
        row["fwd_peak_gb"] = (torch.cuda.max_memory_allocated() - FLUSH.numel()) / 1e9
    if do_bwd:
        leaves = {k: v.requires_grad_() for k, v in x.items()}
        dout = torch.randn(1, DIM, length, device="cuda", dtype=torch.bfloat16)

        def step():
            fn(**leaves).backward(dout)

        step()
        torch.cuda.synchronize()
        row["fwdbwd_ms"] = time_ms(step, reps, setup=lambda: clear_grads(leaves))
        clear_grads(leaves)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        row["fwdbwd_peak_gb"] = (torch.cuda.max_memory_allocated() - FLUSH.numel()) / 1e9
    row["fwd_gbps"] = (4 * DIM + 2 * NSTATE) * length * 2 / (row["fwd_ms"] * 1e6)
    return row


def paired_fwdbwd(fn_a, fn_b, length: int, reps: int = 60) -> dict[str, float]:
    """Forward+backward steps of two implementations alternated rep by rep (each after an L2 flush), so that
    drift in clocks or host load falls on both alike: their median milliseconds and the quartiles of the
    per-pair speedup (b's time over a's)."""
    x = make_inputs(length)
    dout = torch.randn(1, DIM, length, device="cuda", dtype=torch.bfloat16)
    leaves = [{k: v.detach().clone().requires_grad_() for k, v in x.items()} for _ in range(2)]

    steps = [lambda fn=fn, xs=xs: fn(**xs).backward(dout) for fn, xs in ((fn_a, leaves[0]), (fn_b, leaves[1]))]
    times: list[list[float]] = [[], []]
    for i in range(reps + 2):
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            ms = time_ms(steps[j], 1, setup=lambda j=j: clear_grads(leaves[j]))
            if i >= 2:  # two warm-up rounds
                times[j].append(ms)
    ratios = sorted(b / a for a, b in zip(*times, strict=True))
    q = statistics.quantiles(ratios, n=4)
    return {"a_ms": statistics.median(times[0]), "b_ms": statistics.median(times[1]), "ratio_q1": q[0],
            "ratio_median": q[1], "ratio_q3": q[2]}


def measure_sdpa(length: int) -> dict[str, float]:
    q, k, v = (torch.randn(1, 12, length, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    reps = 3 if length > 65536 else 10
    row = {}
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
        with torch.no_grad():
            F.scaled_dot_product_attention(q, k, v, is_causal=True)
            row["fwd_ms"] = time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), reps)
        if length <= 65536:
            dout = torch.randn_like(q)

            def step():
                F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(dout)

            step()
            row["fwdbwd_ms"] = time_ms(step, reps)
    return row


def copy_bandwidth() -> float:
    """Device-to-device copy of 2 GiB, counting bytes read plus bytes written, in GB/s."""
    src = torch.randn(2**29, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = time_ms(lambda: dst.copy_(src), 10)
    return 2 * src.numel() * 4 / (ms * 1e6)


def output_errors(impls, reverse: bool = False) -> dict[str, float]:
    """‖out − ref‖ / ‖ref‖ against the fp32 loop reference at L = 4096, and for the bf16 rounding of ref."""
    from seqssm.kernels.selective_scan import selective_scan_ref

    x = make_inputs(4096, seed=1)
    ref_fn = _flipped(selective_scan_ref) if reverse else selective_scan_ref
    ref = ref_fn(**{k: v.float() for k, v in x.items()}, delta_softplus=True).double()
    errs = {"bf16 rounding of the reference": ((ref.bfloat16().double() - ref).norm() / ref.norm()).item()}
    for name, (fn, _) in impls.items():
        if name.startswith("seqssm triton") or name.startswith("mamba_ssm"):
            errs[name] = ((fn(**x).double() - ref).norm() / ref.norm()).item()
    return errs


# One channel and one warp a program is where the backward's PTX scan applies (run 7: (1, 256, 1) fastest);
# maxnreg trades spills for warps an SM. Several channels a program, one warp each, summing their dB/dC rows
# before the atomics, was 2-5x slower (run 14: a shared-memory reduction and barrier a state).
BWD_CANDIDATES = [ScanConfig(*c) for c in [(1, 256, 1), (1, 256, 1, 1, 1, 128), (1, 512, 2), (1, 128, 1)]]


def grads_agree(bwd_cfg: ScanConfig, length: int = 4000) -> float:
    """Largest relative difference (norm) over out and every gradient between the backward with ``bwd_cfg`` and
    with the default ``BWD_CONFIG`` on the same bf16 inputs: a launch shape must not change the result beyond
    the order of the fp32 atomics."""
    x = make_inputs(length, seed=2)
    dout = torch.randn_like(x["u"])
    results = []
    for cfg in (BWD_CONFIG, bwd_cfg):
        leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items()}
        out = selective_scan_fused(**leaves, delta_softplus=True, bwd_config=cfg)
        out.backward(dout)
        results.append([out.detach()] + [leaves[k].grad for k in sorted(leaves)])
    return max(((a.double() - b.double()).norm() / b.double().norm()).item() for a, b in zip(*results, strict=True))


def _fastest(candidates, length: int, log: list[str], also=()) -> ScanConfig | None:
    """The backward launch shape with the smallest backward-only time at L = length (times at the lengths
    ``also`` are logged beside), among those whose gradients agree with BWD_CONFIG's."""
    timed = []
    for cand in candidates:
        def fn(bc=cand, **x):
            return selective_scan_fused(**x, delta_softplus=True, bwd_config=bc)

        t0 = time.time()
        try:
            diff = grads_agree(cand)
            if diff > 1e-3:
                log.append(f"bwd {tuple(cand)}: gradients differ from {tuple(BWD_CONFIG)} by {diff:.2e}; left out")
                print(log[-1], flush=True)
                continue
            rows = [measure_scan(fn, n, do_bwd=True) for n in (length, *also)]
        except Exception as err:  # a shape that fails to compile or run is reported, not fatal
            log.append(f"bwd {tuple(cand)}: failed {err!r:.300}")
            print(log[-1], flush=True)
            continue
        ms = [r["fwdbwd_ms"] - r["fwd_ms"] for r in rows]
        timed.append((ms[0], cand))
        at = ", ".join(f"{t:.3f} ms at {n:,}" for t, n in zip(ms, (length, *also), strict=True))
        log.append(f"bwd {tuple(cand)}: {at} ({time.time() - t0:.1f} s with compile)")
        print(log[-1], flush=True)
    return min(timed)[1] if timed else None


SEQ_CANDIDATES = [SeqConfig(*c) for c in [
    (32, 8, 1, 2048), (32, 8, 1, 2048, 128), (32, 8, 1, 4096), (32, 8, 1, 4096, 128), (32, 8, 1, 1024),
    (64, 8, 2, 2048), (64, 8, 2, 2048, 128)]]


def seq_sweep(length: int, log: list[str]) -> SeqConfig:
    """The fastest launch shape of the sequential forward at L = length."""
    timed = []
    for cand in SEQ_CANDIDATES:
        def fn(cand=cand, **x):
            return selective_scan_fused(**x, delta_softplus=True, seq_config=cand)

        try:
            ms = measure_scan(fn, length, do_bwd=False)["fwd_ms"]
        except Exception as err:  # a shape that fails to compile or run is reported, not fatal
            log.append(f"seq {tuple(cand)}: failed {err!r:.300}")
            print(log[-1], flush=True)
            continue
        timed.append((ms, cand))
        log.append(f"seq {tuple(cand)}: {ms:.3f} ms")
        print(log[-1], flush=True)
    return min(timed)[1] if timed else SEQ_CONFIG


def sweep(length: int, log: list[str], also=()) -> ScanConfig:
    """Time launch shapes of the backward (the forward's: --seq-sweep)."""
    return _fastest(BWD_CANDIDATES, length, log, also) or BWD_CONFIG


def main() -> None:
    global DIM
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--sweep", action="store_true", help="sweep launch shapes at --sweep-length first")
    parser.add_argument("--bwd-sweep", action="store_true", help="the same as --sweep (kept for old commands)")
    parser.add_argument("--sweep-length", type=int, default=65536, help="the length at which shapes are chosen")
    parser.add_argument("--sweep-also", type=int, nargs="*", default=[], help="more lengths the sweep times")
    parser.add_argument("--sweep-only", action="store_true", help="write the chosen shapes to OUT/sweep.json, stop")
    parser.add_argument("--configs", type=Path, help="a sweep.json from an earlier --sweep to take shapes from")
    parser.add_argument("--lengths", type=int, nargs="*", default=list(LENGTHS))
    parser.add_argument("--seq-sweep", action="store_true",
                        help="sweep the sequential forward's launch shapes at --sweep-length first")
    parser.add_argument("--quick", action="store_true", help="only the fused kernels and mamba_ssm, no SDPA")
    parser.add_argument("--paired-lengths", type=int, nargs="*", default=[],
                        help="also time seqssm's and mamba_ssm's fwd+bwd alternated rep by rep at these lengths")
    parser.add_argument("--reverse", action="store_true",
                        help="both scans on flipped copies (the reverse half of a bidirectional layer)")
    parser.add_argument("--dim", type=int, default=DIM, help=f"channels D (batch 1; default {DIM})")
    parser.add_argument("--bwd-segments", nargs="*", default=[], metavar="S[:Q]",
                        help="also time seqssm with the backward cut into S segments (ScanConfig.segments; Q: "
                             "carry_parts), each a row of its own; gradients are checked against one segment's")
    args = parser.parse_args()
    try:
        shapes = [[int(v) for v in spec.split(":")] for spec in args.bwd_segments]
    except ValueError:
        shapes = [[0]]
    if args.dim < 1 or any(len(v) > 2 or min(v) < 1 for v in shapes):
        parser.error("--dim takes a positive integer, --bwd-segments positive S or S:Q")
    DIM = args.dim
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    log: list[str] = []
    bwd_cfg = BWD_CONFIG
    if args.sweep or args.bwd_sweep:
        bwd_cfg = sweep(args.sweep_length, log, also=args.sweep_also)
        log.append(f"chosen bwd {bwd_cfg}")
        print(log[-1], flush=True)
        (args.out / "sweep.json").write_text(json.dumps({"bwd": bwd_cfg, "log": log}, indent=1))
        if args.sweep_only:
            return
    if args.configs:
        bwd_cfg = ScanConfig(*json.loads(args.configs.read_text())["bwd"])
    seq_cfg = seq_sweep(args.sweep_length, log) if args.seq_sweep else SEQ_CONFIG
    if args.seq_sweep:
        log.append(f"chosen sequential {seq_cfg}")
        print(log[-1], flush=True)
    seg_cfgs = [bwd_cfg._replace(segments=v[0], **({"carry_parts": v[1]} if len(v) > 1 else {})) for v in shapes]
    for cfg in seg_cfgs:
        diff = grads_agree(cfg)
        log.append(f"bwd S={cfg.segments} Q={cfg.carry_parts}: gradients differ from {tuple(BWD_CONFIG)}'s by "
                   f"{diff:.2e} at L = 4,000")
        print(log[-1], flush=True)
    impls = scan_impls(bwd_cfg, seq_cfg, quick=args.quick, reverse=args.reverse, segments=seg_cfgs)
    versions = {"torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda}
    try:
        import mamba_ssm

        versions["mamba_ssm"] = mamba_ssm.__version__
    except ImportError:
        pass
    copy_gbps = copy_bandwidth()
    errors = output_errors(impls, args.reverse)
    rows = []
    for length in args.lengths:
        for name, (fn, max_len) in impls.items():
            if length > max_len:
                continue
            t0 = time.time()
            try:
                row = measure_scan(fn, length)
            except torch.OutOfMemoryError:
                row = {"note": "out of memory"}
            rows.append({"impl": name, "L": length, **row})
            print(f"{name} L={length}: {row} ({time.time() - t0:.1f} s)", flush=True)
            torch.cuda.empty_cache()
        if length <= 262144 and not args.quick:
            row = measure_sdpa(length)
            rows.append({"impl": "SDPA flash attention 12x64 causal", "L": length, **row})
            print(f"SDPA L={length}: {row}", flush=True)

    device = torch.cuda.get_device_name()
    direction = "REVERSE scans, " if args.reverse else ""
    header = (f"{device}, {date.today()}, {direction}" + ", ".join(f"{k} {v}" for k, v in versions.items())
              + f"; bwd {bwd_cfg}, fwd {seq_cfg}"
              + f"; copy bandwidth {copy_gbps:.0f} GB/s")
    lines = [header, "",
             "| impl | L | fwd ms | fwd+bwd ms | peak fwd GB | peak fwd+bwd GB | fwd GB/s (% of copy) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def f(v, fmt):
        return format(v, fmt) if isinstance(v, float) else "-"

    for r in rows:
        gbps = r.get("fwd_gbps")
        bw = f"{gbps:.0f} ({100 * gbps / copy_gbps:.0f}%)" if gbps else "-"
        lines.append(f"| {r['impl']} | {r['L']:,} | {f(r.get('fwd_ms'), '.3f')} | {f(r.get('fwdbwd_ms'), '.3f')} | "
                     f"{f(r.get('fwd_peak_gb'), '.2f')} | {f(r.get('fwdbwd_peak_gb'), '.2f')} | {bw} |")
    theirs = {r["L"]: r for r in rows if r["impl"] == "mamba_ssm CUDA"}
    if theirs:
        lines += ["", "| impl | L | fwd speedup vs mamba_ssm | fwd+bwd speedup | peak fwd+bwd ratio (ours/theirs) |",
                  "| --- | ---: | ---: | ---: | ---: |"]
    for name in ours_names(impls) if theirs else ():
        ours = {r["L"]: r for r in rows if r["impl"] == name}
        for length in sorted(set(ours) & set(theirs)):
            a, b = ours[length], theirs[length]
            if "fwd_ms" in a and "fwd_ms" in b:
                lines.append(f"| {name} | {length:,} | {b['fwd_ms'] / a['fwd_ms']:.2f}x | "
                             f"{b['fwdbwd_ms'] / a['fwdbwd_ms']:.2f}x | "
                             f"{a['fwdbwd_peak_gb'] / b['fwdbwd_peak_gb']:.2f} |")
    if theirs and args.paired_lengths:
        lines += ["", "Paired fwd+bwd (alternated rep by rep, 60 pairs):", "",
                  "| L | seqssm ms | mamba_ssm ms | speedup median (quartiles) |", "| ---: | ---: | ---: | ---: |"]
        for length, name in itertools.product(args.paired_lengths, ours_names(impls)):
            p = paired_fwdbwd(impls[name][0], impls["mamba_ssm CUDA"][0], length)
            label = f"{length:,}" + name.removeprefix(OURS[0])
            lines.append(f"| {label} | {p['a_ms']:.3f} | {p['b_ms']:.3f} | {p['ratio_median']:.3f}x "
                         f"({p['ratio_q1']:.3f}-{p['ratio_q3']:.3f}) |")
            print(lines[-1], flush=True)
    lines += ["", "Output error vs fp32 loop reference at L = 4096: "
              + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())]
    table = "\n".join(lines)
    (args.out / "bench_scan.md").write_text(table + "\n")
    print("\n" + "\n".join(log) + "\n\n" + table)


if __name__ == "__main__":
    main()
