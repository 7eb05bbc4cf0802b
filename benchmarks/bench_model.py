"""Whole-model speed: seqssm's Mamba LM beside mamba_ssm's, in one process, alternated rep by rep.

Sections (each optional):
  --train    training step (fp32 parameters, bf16 autocast, next-token loss, forward + backward) at the
             issue's shapes; median ms, tokens/s, ratio, peak memory of each model's step.
  --profile  torch.profiler breakdown of one training step and one decode step per model, GPU time per op
             class (matmul, scan, conv, norm, elementwise, copy, reduce, other) and the launch gap
             (step wall time minus the sum of kernel times).
  --prefill  one parallel pass over a long prompt (no grad), ms.
  --compile  first-call time of a fresh process, cold Triton cache then warm.

mamba_ssm is used when importable (say so in the header); its causal-conv1d CUDA kernel when that is too.
Weights are copied from the seqssm model (state-dict names match one to one), so both compute the same
function. Results go to stdout as Markdown tables and, with --json, to a file as each section ends.

Example (H200):  python benchmarks/bench_model.py --train --profile --prefill --json $OUT/model.json
CPU smoke test:  python benchmarks/bench_model.py --cpu-smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel

TRAIN_SHAPES = [  # d_model, n_layer, batch, length
    (768, 24, 8, 2048),
    (768, 24, 2, 32768),
    (256, 4, 1, 262144),
    (1536, 48, 4, 2048),
]
VOCAB = 16  # the nucleotide tokenizer's size; padded to 16 by both models


def _mamba_ssm():
    """(MambaLMHeadModel class, InferenceParams, description) or (None, None, why not)."""
    try:
        import mamba_ssm
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel as Peer
        from mamba_ssm.utils.generation import InferenceParams
    except Exception as err:  # noqa: BLE001  (any import failure means "not available")
        return None, None, f"mamba_ssm not importable ({type(err).__name__}: {err})"
    try:
        import causal_conv1d  # noqa: F401

        conv = f"causal-conv1d {getattr(causal_conv1d, '__version__', '?')}"
    except Exception:  # noqa: BLE001
        conv = "without causal-conv1d (its PyTorch conv path)"
    return Peer, InferenceParams, f"mamba_ssm {mamba_ssm.__version__}, {conv}"


def build_pair(d_model: int, n_layer: int, device: str, *, with_peer: bool = True, impl: str = "auto"):
    """A seqssm model and (when available) a mamba_ssm model with the same fp32 weights."""
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=VOCAB)
    ours = MambaLMHeadModel(cfg, impl=impl).to(device)
    Peer, _, _ = _mamba_ssm() if with_peer else (None, None, None)
    if Peer is None:
        return ours, None
    from mamba_ssm.models.config_mamba import MambaConfig as PeerConfig

    pcfg = PeerConfig(d_model=d_model, n_layer=n_layer, d_intermediate=0, vocab_size=VOCAB,
                      ssm_cfg={"layer": "Mamba1"}, rms_norm=True, residual_in_fp32=True,
                      fused_add_norm=True, pad_vocab_size_multiple=8, tie_embeddings=True)
    peer = Peer(pcfg, device=device, dtype=torch.float32)
    missing, unexpected = peer.load_state_dict(ours.state_dict(), strict=False)
    if [k for k in missing if k != "lm_head.weight"] or unexpected:
        raise RuntimeError(f"state dicts differ: missing {missing[:4]}, unexpected {unexpected[:4]}")
    peer.tie_weights()
    return ours, peer


def _logits(model, ids):
    out = model(ids)
    return out.logits[..., :VOCAB] if hasattr(out, "logits") else out


def train_step(model, ids) -> None:
    for p in model.parameters():
        p.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ids.is_cuda):
        logits = _logits(model, ids)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()


def _time(fn, sync: bool) -> float:
    if sync:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def peak_gb(model, fn, device) -> float:
    """Peak bytes one call of fn allocates on top of what was there, plus the model's own parameters."""
    if device != "cuda":
        return float("nan")
    for p in model.parameters():
        p.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    return (torch.cuda.max_memory_allocated() - base + params) / 1e9


def bench_train(shapes, device, reps, warmup, emit) -> list[dict]:
    rows = []
    for d_model, n_layer, batch, length in shapes:
        ours, peer = build_pair(d_model, n_layer, device)
        ids = torch.randint(0, VOCAB, (batch, length), device=device)
        models = {"seqssm": ours} if peer is None else {"seqssm": ours, "mamba_ssm": peer}
        for model in models.values():
            for _ in range(warmup):
                train_step(model, ids)
        times = {name: [] for name in models}
        for _ in range(reps):  # alternated, so clock and host drift fall on both alike
            for name, model in models.items():
                times[name].append(_time(lambda m=model, x=ids: train_step(m, x), device == "cuda"))
        row = {"shape": f"{d_model}x{n_layer} @ {batch}x{length}", "tokens": batch * length}
        for name, model in models.items():
            row[f"{name}_ms"] = statistics.median(times[name])
            row[f"{name}_peak_gb"] = peak_gb(model, lambda m=model, x=ids: train_step(m, x), device)
        if peer is not None:
            ratios = [p / o for o, p in zip(times["seqssm"], times["mamba_ssm"], strict=True)]
            row["speedup"] = statistics.median(ratios)
            q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
            row["speedup_q"] = (q[0], q[2])
        rows.append(row)
        emit(row)
        print("row:", json.dumps(row), flush=True)  # as it comes: a call cut short keeps what it measured
        del ours, peer, models
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def print_train(rows) -> None:
    print("\n| model, batch x length | seqssm ms | mamba_ssm ms | seqssm tokens/s | speedup (quartiles) "
          "| peak GB seqssm / mamba_ssm |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        peer = f"{r['mamba_ssm_ms']:.2f}" if "mamba_ssm_ms" in r else "-"
        sp = f"**{r['speedup']:.3f}x** ({r['speedup_q'][0]:.3f}-{r['speedup_q'][1]:.3f})" if "speedup" in r else "-"
        pk = f"{r['seqssm_peak_gb']:.2f} / {r.get('mamba_ssm_peak_gb', float('nan')):.2f}"
        print(f"| {r['shape']} | {r['seqssm_ms']:.2f} | {peer} | {r['tokens'] / r['seqssm_ms'] * 1e3:,.0f} "
              f"| {sp} | {pk} |", flush=True)


# ---- profile -------------------------------------------------------------------------------------------

CLASSES = [  # first match wins; names of CUDA kernels as the profiler reports them
    ("matmul", r"gemm|cutlass|xmma|nvjet|sm90_|cublas|splitK|Kernel2"),
    ("conv", r"conv"),
    ("norm", r"norm|rms"),
    ("scan", r"selective_scan|_scan_|chunk_scan|segment_state|segment_start|ssm|state_update|scan"),
    ("copy", r"copy|Memcpy|Memset|cat_|CatArray|transpose|contiguous"),
    ("reduce", r"reduce|sum|softmax|cross_entropy|nll|log_softmax|max"),
    ("elementwise", r"elementwise|vectorized|unrolled|fill|silu|exp|mul|add|pow|where|index"),
]


def classify(name: str) -> str:
    for cls, pattern in CLASSES:
        if re.search(pattern, name, re.IGNORECASE):
            return cls
    return "other"


def profile_call(fn, device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    wall = _time(fn, device == "cuda")
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
    per_class: dict[str, float] = {}
    per_kernel: dict[str, list[float]] = {}
    for evt in prof.events():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = evt.device_time
        per_class[classify(evt.name)] = per_class.get(classify(evt.name), 0.0) + us
        per_kernel.setdefault(evt.name, []).append(us)
    n_kernels = sum(len(v) for v in per_kernel.values())
    busy = sum(per_class.values()) / 1e3
    top = sorted(((sum(v) / 1e3, len(v), k) for k, v in per_kernel.items()), reverse=True)[:12]
    return {"wall_ms": wall, "kernel_ms": busy, "gap_ms": max(wall - busy, 0.0), "kernels": n_kernels,
            "per_class_ms": {k: v / 1e3 for k, v in sorted(per_class.items())},
            "top": [(round(ms, 3), n, name[:90]) for ms, n, name in top]}


def decode_fns(ours, peer, batch, device):
    """One-token step callables (eager) for each model, after a short prompt."""
    fns = {}
    ids = torch.randint(0, VOCAB, (batch, 64), device=device)
    with torch.no_grad():
        _, cache = ours.prefill(ids)
    tok = ids[:, -1].contiguous()
    fns["seqssm"] = lambda: ours.step(tok, cache)
    if peer is not None:
        _, InferenceParams, _ = _mamba_ssm()
        params = InferenceParams(max_seqlen=4096, max_batch_size=batch)
        params.key_value_memory_dict = peer.allocate_inference_cache(batch, 4096, dtype=torch.bfloat16)
        with torch.no_grad():
            peer(ids, inference_params=params)
        params.seqlen_offset = ids.shape[1]
        tok2 = tok.unsqueeze(1)

        def peer_step():
            with torch.no_grad():
                peer(tok2, inference_params=params, num_last_tokens=1)
        fns["mamba_ssm"] = peer_step
    return fns


def bench_profile(shape, device, emit) -> dict:
    d_model, n_layer, batch, length = shape
    ours, peer = build_pair(d_model, n_layer, device)
    ids = torch.randint(0, VOCAB, (batch, length), device=device)
    out = {"shape": f"{d_model}x{n_layer} @ {batch}x{length}", "train": {}, "decode": {}}
    models = {"seqssm": ours} if peer is None else {"seqssm": ours, "mamba_ssm": peer}
    for name, model in models.items():
        out["train"][name] = profile_call(lambda m=model: train_step(m, ids), device)
    dec_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    ours_d = ours.to(dec_dtype).eval()
    peer_d = None if peer is None else peer.to(dec_dtype).eval()
    for name, fn in decode_fns(ours_d, peer_d, 1, device).items():
        out["decode"][name] = profile_call(fn, device)
    emit(out)
    return out


def print_profile(prof) -> None:
    for what in ("train", "decode"):
        runs = prof[what]
        classes = sorted({c for r in runs.values() for c in r["per_class_ms"]})
        names = list(runs)
        print(f"\n{what} step, {prof['shape'] if what == 'train' else prof['shape'].split(' @')[0] + ' @ batch 1'}"
              " (GPU ms per op class; gap = wall - kernel time):")
        print("| op class | " + " | ".join(names) + " |")
        print("| --- |" + " ---: |" * len(names))
        for c in classes:
            print(f"| {c} | " + " | ".join(f"{runs[n]['per_class_ms'].get(c, 0.0):.3f}" for n in names) + " |")
        for key in ("kernel_ms", "gap_ms", "wall_ms", "kernels"):
            fmt = "{:d}" if key == "kernels" else "{:.3f}"
            print(f"| {key} | " + " | ".join(fmt.format(runs[n][key]) for n in names) + " |")
        for n in names:
            print(f"top kernels, {n}:")
            for ms, count, kname in runs[n]["top"]:
                print(f"    {ms:9.3f} ms  x{count:<5d} {kname}")
    sys.stdout.flush()


# ---- prefill and compile -------------------------------------------------------------------------------

def bench_prefill(d_model, n_layer, length, device, reps, emit) -> dict:
    ours, peer = build_pair(d_model, n_layer, device)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    ours = ours.to(dtype).eval()
    ids = torch.randint(0, VOCAB, (1, length), device=device)
    fns = {"seqssm": lambda: ours.prefill(ids)}
    if peer is not None:
        peer = peer.to(dtype).eval()
        fns["mamba_ssm"] = lambda: peer(ids, num_last_tokens=1)
    times = {n: [] for n in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()
        for _ in range(reps):
            for n, fn in fns.items():
                times[n].append(_time(fn, device == "cuda"))
    row = {"shape": f"{d_model}x{n_layer} prefill 1x{length}",
           **{f"{n}_ms": statistics.median(t) for n, t in times.items()}}
    emit(row)
    return row


COMPILE_PROBE = r"""
import time, torch, sys
t0 = time.perf_counter()
from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
m = MambaLMHeadModel(MambaConfig(d_model=128, n_layer=2, vocab_size=16)).to(sys.argv[1])
ids = torch.randint(0, 16, (2, 1000), device=sys.argv[1])
t1 = time.perf_counter()
with torch.autocast("cuda", dtype=torch.bfloat16, enabled=sys.argv[1] == "cuda"):
    loss = m(ids).float().logsumexp(-1).mean()
loss.backward()
if sys.argv[1] == "cuda": torch.cuda.synchronize()
t2 = time.perf_counter()
with torch.no_grad():
    _, cache = m.prefill(ids[:, :17])
    m.step(ids[:, 0], cache)
if sys.argv[1] == "cuda": torch.cuda.synchronize()
t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def bench_compile(device, emit) -> dict:
    import tempfile

    cache_dir = tempfile.mkdtemp(prefix="triton-cache-")
    env = {**os.environ, "TRITON_CACHE_DIR": cache_dir}
    row = {}
    for label in ("cold", "warm"):
        # cwd elsewhere: the repo root's seqssm/ folder would shadow the installed package under -c.
        res = subprocess.run([sys.executable, "-c", COMPILE_PROBE, device], env=env, capture_output=True,
                             text=True, check=False, cwd=cache_dir)
        if res.returncode:
            row[label] = f"failed: {res.stderr[-400:]}"
            continue
        imp, train, decode = map(float, res.stdout.split()[-3:])
        row[label] = {"import_build_s": imp, "first_train_step_s": train, "first_prefill_step_s": decode}
    emit({"compile": row})
    return row


def header(device) -> str:
    import triton

    _, _, peer = _mamba_ssm()
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    return (f"device {gpu}, {datetime.date.today()}, torch {torch.__version__}, triton {triton.__version__}, "
            f"CUDA {torch.version.cuda}; peer: {peer}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--prefill", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--shapes", default="all", help="'all', or indices into the shape list, e.g. 0,2")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--prefill-length", type=int, default=100_000)
    ap.add_argument("--json", help="append results here as each section ends (JSON lines)")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU, every section")
    args = ap.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu"
    shapes = TRAIN_SHAPES if args.shapes == "all" else [TRAIN_SHAPES[int(i)] for i in args.shapes.split(",")]
    if args.cpu_smoke:
        shapes = [(32, 2, 2, 64)]
        args.train = args.profile = args.prefill = True
        args.reps, args.warmup, args.prefill_length = 2, 1, 256

    def emit(obj):
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(json.dumps(obj) + "\n")

    print(header(device), flush=True)
    emit({"header": header(device)})
    if args.compile:
        print("compile:", json.dumps(bench_compile(device, emit)), flush=True)
    if args.profile:
        print_profile(bench_profile(shapes[0], device, emit))
    if args.train:
        print_train(bench_train(shapes, device, args.reps, args.warmup, emit))
    if args.prefill:
        d_model, n_layer = (shapes[0][:2]) if args.cpu_smoke else (768, 24)
        row = bench_prefill(d_model, n_layer, args.prefill_length, device, args.reps, emit)
        print("\nprefill:", json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
