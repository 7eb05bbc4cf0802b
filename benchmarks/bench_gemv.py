"""Decode projections: F.linear, torch.mv and the Triton GEMV kernels (seqssm.kernels.gemv), and the decode step.

Projections section: the four projections of a Mamba block's decode step, of d_model 768 (in_proj [3072, 768],
x_proj [80, 1536], dt_proj [1536, 48], out_proj [768, 1536]) and d_model 1536 ([6144, 1536], [128, 3072],
[3072, 96], [1536, 3072]), bf16, at B = 1, 4 and 64 rows; the x_proj -> dt_proj pair as two F.linear, two
``gemv`` and the fused ``gemv_x_dt`` (the conv update fused with x_proj lost: benchmarks/NOTES-gemv.md); and the
fused decode pieces against what they replace: ``add_norm_gemv`` against ``add_rms_norm_fused`` then ``gemv``
(in_proj), ``selective_state_update_x_dt`` against ``gemv_x_dt`` then ``selective_state_update_fused``.
Each variant is timed inside a CUDA graph of back-to-back calls on distinct copies of the weight (together at least
twice the L2 cache, so every call reads its weight from HBM, as a decode step does), replayed many times, the
variants alternated rep by rep; the median per call is reported with the weight bandwidth it achieved (weight bytes
/ time) and its relative error against F.linear.

Decode-step section: a random d_model 768 x 24-layer model, bf16 weights, ``Decoder`` CUDA graphs of K steps, with
the GEMV path on (``seqssm.models.mixer.GEMV_MAX_ROWS`` = 4, the default), "fused decode" (GEMV on and
``FUSE_DECODE``: the add + norm inside in_proj, x_proj's sum + dt_proj + the state update in one kernel; 5 launches
a layer instead of 7) and off (0, F.linear everywhere), the graphs replayed alternately; per-step time and
whether the paths sampled the same tokens.
The issue-20 target is at most half of mamba_ssm's 0.973 ms a token at batch 1 (benchmarks/RESULTS.md), i.e. <= 486
us.

Sweep (``--sweep``): the kernel's launch shapes (``GemvConfig``) on the d_model 768 projections at B = 1.

    python benchmarks/bench_gemv.py --out $OUT/gemv [--sweep]     # GPU: prints the tables, writes gemv.tsv
    python benchmarks/bench_gemv.py --cpu-smoke --out /tmp/gemv    # tiny sizes, Triton's interpreter (a check)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

SHAPES = {  # name -> (d_model, N, K)
    "in_proj": (768, 3072, 768), "x_proj": (768, 80, 1536), "dt_proj": (768, 1536, 48),
    "out_proj": (768, 768, 1536),
    "in_proj 1536": (1536, 6144, 1536), "x_proj 1536": (1536, 128, 3072), "dt_proj 1536": (1536, 3072, 96),
    "out_proj 1536": (1536, 1536, 3072),
}
PAIRS = {"x_proj+dt_proj": (768, 1536, 48, 16), "x_proj+dt_proj 1536": (1536, 3072, 96, 16)}  # d, E, R, N
SMOKE_SHAPES = {"in_proj": (16, 64, 16), "x_proj": (16, 9, 32), "odd": (16, 37, 53)}
SMOKE_PAIRS = {"x_proj+dt_proj": (16, 32, 1, 4)}
SWEEP_MAX = 24  # launch shapes timed per projection (each one compiles)
COLUMNS = ["section", "shape", "d_model", "N", "K", "B", "variant", "us", "GB/s", "rel_err", "note"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder for gemv.tsv and table.md")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 64])
    p.add_argument("--reps", type=int, default=30, help="graph replays per variant (median)")
    p.add_argument("--decode-layers", type=int, default=24)
    p.add_argument("--decode-batches", type=int, nargs="+", default=[1, 4, 64])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 32], help="decode steps per graph replay")
    p.add_argument("--sweep", action="store_true", help="time GemvConfig launch shapes at B = 1 (d_model 768)")
    p.add_argument("--sections", default="proj,decode", help="comma-separated: proj, decode")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU under TRITON_INTERPRET=1")
    return p.parse_args()


class Bench:
    """Rows (printed as they come, kept for the TSV) and the timing of variants, alternated rep by rep."""

    def __init__(self, torch, cuda: bool, reps: int, out: Path, header: str):
        self.torch, self.cuda, self.reps, self.rows = torch, cuda, reps, []
        self.out, self.header = out, header
        self.l2 = 0
        if cuda:
            self.l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 64 * 2**20

    def add(self, **row) -> None:
        """Print the row and rewrite the files with it (a run the timeout stops keeps every row it made)."""
        self.rows.append(row)
        print("\t".join(_fmt(row.get(c, "")) for c in COLUMNS), flush=True)
        write(self, self.out, self.header)

    def copies(self, nbytes: int) -> int:
        """Weight copies a graph cycles through: together >= 2x L2, at least 8, at most 1024."""
        if not self.cuda:
            return 1
        return max(8, min(1024, -(-2 * self.l2 // max(nbytes, 1))))

    def time(self, variants: dict) -> dict:
        """name -> median microseconds of one call; variants: name -> list of thunks (one per weight copy)."""
        torch = self.torch
        if not self.cuda:
            out = {}
            for name, calls in variants.items():
                calls[0]()  # compile (interpreted: nothing to compile, but the same code path)
                t0 = time.perf_counter()
                for c in calls:
                    c()
                out[name] = (time.perf_counter() - t0) / len(calls) * 1e6
            return out
        graphs = {}
        for name, calls in variants.items():
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):  # warm-up off the capture: Triton compiles, cuBLAS picks its kernels
                for c in calls[:2]:
                    c()
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for c in calls:
                    c()
            graphs[name] = (g, len(calls))
        times = {name: [] for name in graphs}
        for g, _ in graphs.values():
            g.replay()
        torch.cuda.synchronize()
        for _ in range(self.reps):
            for name, (g, n) in graphs.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                g.replay()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end) * 1e3 / n)
        return {name: statistics.median(t) for name, t in times.items()}


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def rel_err(got, ref) -> float:
    return ((got.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-12)).item()


def _two(linear, x, wx, wdt):
    """x_proj then dt_proj as two calls of ``linear``."""
    x_dbl = linear(x, wx)
    return x_dbl, linear(x_dbl[:, : wdt.shape[1]], wdt)


def proj_section(torch, bench: Bench, shapes: dict, pairs: dict, batches: list[int], device, dtype) -> None:
    import torch.nn.functional as F

    from seqssm.kernels.gemv import gemv, gemv_x_dt

    g = torch.Generator(device=device).manual_seed(0)
    elem = torch.finfo(dtype).bits // 8
    for name, (d_model, n, k) in shapes.items():
        copies = bench.copies(n * k * elem)
        ws = [(torch.randn(n, k, device=device, generator=g) * k**-0.5).to(dtype) for _ in range(copies)]
        for b in batches:
            x = torch.randn(b, k, device=device, generator=g).to(dtype)
            variants = {"F.linear": [partial(F.linear, x, w) for w in ws], "gemv": [partial(gemv, x, w) for w in ws]}
            if b == 1:
                variants["torch.mv"] = [partial(torch.mv, w, x[0]) for w in ws]
            ref = F.linear(x, ws[0])
            errs = {"F.linear": 0.0, "gemv": rel_err(gemv(x, ws[0]), ref)}
            if b == 1:
                errs["torch.mv"] = rel_err(torch.mv(ws[0], x[0])[None], ref)
            for variant, us in bench.time(variants).items():
                bench.add(section="proj", shape=name, d_model=d_model, N=n, K=k, B=b, variant=variant, us=us,
                          **{"GB/s": n * k * elem / us / 1e3}, rel_err=errs[variant],
                          note=f"{copies} weight copies a graph")
        del ws
    for name, (d_model, e, rank, d_state) in pairs.items():
        n1 = rank + 2 * d_state
        copies = bench.copies((n1 * e + e * rank) * elem)
        ws = [((torch.randn(n1, e, device=device, generator=g) * e**-0.5).to(dtype),
               (torch.randn(e, rank, device=device, generator=g) * rank**-0.5).to(dtype)) for _ in range(copies)]
        nbytes = (n1 * e + e * rank) * elem
        for b in batches:
            x = torch.randn(b, e, device=device, generator=g).to(dtype)
            fns = {"F.linear x2": partial(_two, F.linear), "gemv x2": partial(_two, gemv),
                   "gemv_x_dt (fused)": gemv_x_dt}
            ref = _two(F.linear, x, *ws[0])
            errs = {v: max(rel_err(a, r) for a, r in zip(f(x, *ws[0]), ref, strict=True)) for v, f in fns.items()}
            variants = {v: [partial(f, x, *w) for w in ws] for v, f in fns.items()}
            for variant, us in bench.time(variants).items():
                bench.add(section="proj", shape=name, d_model=d_model, N=f"{n1}->{e}", K=f"{e}->{rank}", B=b,
                          variant=variant, us=us, **{"GB/s": nbytes / us / 1e3}, rel_err=errs[variant],
                          note=f"{copies} weight copies a graph")
        del ws


def _norm_then_gemv(x, residual, nw, w):
    from seqssm.kernels.gemv import gemv
    from seqssm.kernels.rms_norm import add_rms_norm_fused

    normed, residual = add_rms_norm_fused(x, residual, nw, 1e-5, True)
    return gemv(normed, w), residual


def _x_dt_then_update(state, x, wx, wdt, A, D, z, dt_bias):
    from seqssm.kernels.gemv import gemv_x_dt
    from seqssm.kernels.selective_scan import selective_state_update_fused

    x_dbl, dt = gemv_x_dt(x, wx, wdt)
    n = A.shape[1]
    _, B, C = x_dbl.split([wdt.shape[1], n, n], dim=-1)
    return selective_state_update_fused(state, x, dt, A, B, C, D, z, dt_bias, True)


def fused_section(torch, bench: Bench, pairs: dict, batches: list[int], device, dtype) -> None:
    """The fused decode pieces (``FUSE_DECODE``) against the two kernels each replaces, at the pairs' shapes
    (in_proj of d_model, the update of E channels)."""
    from seqssm.kernels.gemv import add_norm_gemv
    from seqssm.kernels.selective_scan import selective_state_update_x_dt

    g = torch.Generator(device=device).manual_seed(2)
    elem = torch.finfo(dtype).bits // 8
    for name, (d_model, e, rank, d_state) in pairs.items():
        n1 = rank + 2 * d_state
        copies = bench.copies(2 * e * d_model * elem)
        ws = [(torch.randn(2 * e, d_model, device=device, generator=g) * d_model**-0.5).to(dtype)
              for _ in range(copies)]
        nw = (1 + 0.1 * torch.randn(d_model, device=device, generator=g)).to(dtype)
        for b in batches:
            x = torch.randn(b, d_model, device=device, generator=g).to(dtype)
            res = torch.randn(b, d_model, device=device, generator=g)
            fns = {"add_rms_norm + gemv": _norm_then_gemv,
                   "add_norm_gemv (fused)": lambda x, r, nw, w: add_norm_gemv(x, r, nw, 1e-5, True, w)}
            ref = _norm_then_gemv(x, res, nw, ws[0])[0]
            errs = {v: rel_err(f(x, res, nw, ws[0])[0], ref) for v, f in fns.items()}
            variants = {v: [partial(f, x, res, nw, w) for w in ws] for v, f in fns.items()}
            for variant, us in bench.time(variants).items():
                bench.add(section="fused", shape=name.replace("x_proj+dt_proj", "norm+in_proj"), d_model=d_model,
                          N=2 * e, K=d_model, B=b, variant=variant, us=us,
                          **{"GB/s": 2 * e * d_model * elem / us / 1e3}, rel_err=errs[variant],
                          note=f"{copies} weight copies a graph; residual fp32")
        del ws
        nbytes = (n1 * e + e * rank) * elem
        copies = bench.copies(nbytes)
        ws = [((torch.randn(n1, e, device=device, generator=g) * e**-0.5).to(dtype),
               (torch.randn(e, rank, device=device, generator=g) * rank**-0.5).to(dtype)) for _ in range(copies)]
        A = -torch.rand(e, d_state, device=device, generator=g) - 0.5
        D, dt_bias = torch.ones(e, device=device), torch.full((e,), -4.0, device=device)
        for b in batches:
            xz = torch.randn(b, 2 * e, device=device, generator=g).to(dtype)
            x, z = xz[:, :e], xz[:, e:]
            state = torch.randn(b, e, d_state, device=device, generator=g)
            fns = {"gemv_x_dt + state update": _x_dt_then_update,
                   "selective_state_update_x_dt (fused)": lambda s, x, wx, wdt, A, D, z, bias:
                       selective_state_update_x_dt(s, x, wx, wdt, A, D, z, bias, True)}
            ref = _x_dt_then_update(state.clone(), x, *ws[0], A, D, z, dt_bias)
            errs = {v: rel_err(f(state.clone(), x, *ws[0], A, D, z, dt_bias), ref) for v, f in fns.items()}
            variants = {v: [partial(f, state, x, *w, A, D, z, dt_bias) for w in ws] for v, f in fns.items()}
            for variant, us in bench.time(variants).items():
                bench.add(section="fused", shape=name.replace("x_proj+dt_proj", "x_proj+dt_proj+update"),
                          d_model=d_model, N=f"{n1}->{e}", K=f"{e}->{rank}", B=b, variant=variant, us=us,
                          **{"GB/s": nbytes / us / 1e3}, rel_err=errs[variant],
                          note=f"{copies} weight copies a graph; the state shifts every call")
        del ws


def _distance(c, d) -> float:
    """How far launch shape c is from d, in factors of two."""
    return sum(abs(math.log2(a / b)) for a, b in ((c.block_k, d.block_k), (c.block_n, d.block_n),
                                                  (c.splits, d.splits)))


def sweep_section(torch, bench: Bench, shapes: dict, device, dtype) -> None:
    from seqssm.kernels.gemv import GemvConfig, gemv, gemv_config

    g = torch.Generator(device=device).manual_seed(1)
    elem = torch.finfo(dtype).bits // 8
    for name, (d_model, n, k) in shapes.items():
        if d_model != 768:
            continue
        copies = bench.copies(n * k * elem)
        ws = [(torch.randn(n, k, device=device, generator=g) * k**-0.5).to(dtype) for _ in range(copies)]
        x = torch.randn(1, k, device=device, generator=g).to(dtype)
        default = gemv_config(1, n, k, elem, x.device)
        cands = {default}
        for block_k in (64, 128, 256, 512):
            for block_n in (1, 2, 4, 8, 16, 32):
                for splits in (1, 2, 4, 8):
                    tiles = -(-k // block_k)
                    programs = -(-n // block_n) * min(splits, tiles)
                    if block_k > max(16, 1 << (k - 1).bit_length()) or splits > tiles or not 64 <= programs <= 4096:
                        continue
                    warps = max(1, min(8, block_n * block_k // 256))
                    cands.add(GemvConfig(1, block_n, block_k, splits, warps))
        # Nearest the default first (in factors of two): its neighbourhood is what gets timed.
        cands = sorted(cands, key=lambda c: (_distance(c, default), c.block_k, c.block_n, c.splits))[:SWEEP_MAX]
        for start in range(0, len(cands), 8):  # 8 graphs alive at a time
            chunk = cands[start : start + 8]
            variants = {c: [partial(gemv, x, w, config=c) for w in ws] for c in chunk}
            for c, us in bench.time(variants).items():
                label = f"n{c.block_n} k{c.block_k} s{c.splits} w{c.num_warps}" + (" default" if c == default else "")
                bench.add(section="sweep", shape=name, d_model=d_model, N=n, K=k, B=1, variant=label, us=us,
                          **{"GB/s": n * k * elem / us / 1e3}, note="")
        del ws


def decode_section(torch, bench: Bench, layers: int, batches: list[int], ks: list[int], device, dtype,
                   smoke: bool) -> None:
    from seqssm.config import MambaConfig
    from seqssm.models import MambaLMHeadModel
    from seqssm.models import mixer as mixer_module
    from seqssm.pipelines.decoding import Decoder

    torch.manual_seed(0)
    d_model = 16 if smoke else 768
    impl = "triton" if smoke else "auto"
    model = MambaLMHeadModel(MambaConfig(d_model=d_model, n_layer=layers, vocab_size=10), impl=impl,
                             device=device, dtype=dtype).eval()
    saved = mixer_module.GEMV_MAX_ROWS, mixer_module.FUSE_DECODE
    try:
        for batch in batches:
            prompts = torch.randint(5, 9, (batch, 8 if smoke else 64), device=device)
            for k in ks:
                decoders, tokens = {}, {}
                for label, rows, fuse in (("GEMV on", 4, False), ("fused decode", 4, True),
                                          ("GEMV off (F.linear)", 0, False)):
                    # read when the graph is captured
                    mixer_module.GEMV_MAX_ROWS, mixer_module.FUSE_DECODE = rows, fuse
                    dec = Decoder(model, batch, cuda_graph=bench.cuda, steps_per_replay=k)
                    tokens[label] = dec.decode(prompts, 2 if smoke else 64, seed=3).tokens
                    decoders[label] = dec
                base = tokens["GEMV off (F.linear)"]
                same = {label: (t == base).float().mean().item() for label, t in tokens.items()}
                if bench.cuda:
                    times = {label: [] for label in decoders}
                    for _ in range(bench.reps):
                        for label, dec in decoders.items():
                            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                            start.record()
                            dec.graph.replay()
                            end.record()
                            end.synchronize()
                            times[label].append(start.elapsed_time(end) * 1e3 / k)
                    per_step = {label: statistics.median(t) for label, t in times.items()}
                else:
                    per_step = {label: float("nan") for label in decoders}
                off = per_step["GEMV off (F.linear)"]
                for label, us in per_step.items():
                    bench.add(section="decode", shape=f"{d_model} x {layers}", d_model=d_model, N="", K=f"K={k}",
                              B=batch, variant=label, us=us, rel_err="",
                              note=f"speedup {off / us:.2f}x; same tokens as F.linear: {same[label]:.3f}; "
                                   "target <= 486 us at B=1")
                del decoders
                if bench.cuda:
                    torch.cuda.empty_cache()
    finally:
        mixer_module.GEMV_MAX_ROWS, mixer_module.FUSE_DECODE = saved


def write(bench: Bench, out: Path, header: str) -> None:
    """gemv.tsv and table.md (each through a temporary file: a run cut short leaves whole files)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(COLUMNS)] + ["\t".join(_fmt(r.get(c, "")) for c in COLUMNS) for r in bench.rows]
    tmp = out / "gemv.tsv.tmp"
    tmp.write_text(f"# {header}\n" + "\n".join(lines) + "\n")
    tmp.replace(out / "gemv.tsv")
    md = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    md += ["| " + " | ".join(_fmt(r.get(c, "")) for c in COLUMNS) + " |" for r in bench.rows]
    tmp = out / "table.md.tmp"
    tmp.write_text("\n".join(md) + "\n")
    tmp.replace(out / "table.md")


def main() -> None:
    args = parse_args()
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
    import torch
    import triton

    cuda = not args.cpu_smoke
    if cuda and not torch.cuda.is_available():
        sys.exit("bench_gemv needs a CUDA GPU; pass --cpu-smoke to check it on the CPU")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    name = torch.cuda.get_device_name(device) if cuda else "CPU (TRITON_INTERPRET=1)"
    header = (f"{name}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
              f"triton {triton.__version__}, {str(dtype).removeprefix('torch.')}")
    print(header + "\n" + "\t".join(COLUMNS), flush=True)
    bench = Bench(torch, cuda, args.reps if cuda else 1, args.out, header)
    sections = set(args.sections.split(","))
    with torch.no_grad():
        if "proj" in sections:
            proj_section(torch, bench, SHAPES if cuda else SMOKE_SHAPES, PAIRS if cuda else SMOKE_PAIRS,
                         args.batches if cuda else [1, 3], device, dtype)
            fused_section(torch, bench, PAIRS if cuda else SMOKE_PAIRS,
                          [b for b in args.batches if b <= 8] if cuda else [1, 3], device, dtype)
        if "decode" in sections:
            decode_section(torch, bench, args.decode_layers if cuda else 1, args.decode_batches if cuda else [1],
                           args.ks if cuda else [1], device, dtype, smoke=not cuda)
        if args.sweep:
            sweep_section(torch, bench, SHAPES if cuda else {"x_proj": (768, 9, 32)}, device, dtype)
    print("\n" + (args.out / "table.md").read_text() if bench.rows else "no rows")
    print(f"wrote {args.out / 'gemv.tsv'} and {args.out / 'table.md'}")


if __name__ == "__main__":
    main()
