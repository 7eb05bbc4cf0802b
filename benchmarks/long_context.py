"""Million-length sequences: training step and streamed inference of a Mamba LM, against a Transformer.

Model: MambaLMHeadModel, 4 layers, d_model 256 (d_inner 512), d_state 16, nucleotide vocab, batch 1, impl
"auto" (Triton on CUDA, the chunked PyTorch scan on the CPU); bf16 autocast on CUDA, fp32 on the CPU.

1. Training step (forward + backward of the next-token loss, no optimiser), per length L, four ways: one pass;
   one pass with every block checkpointed (``checkpoint_blocks``); ``chunked_backward`` with chunks of T
   (exact gradients, one chunk's activations alive); both. Step time is the median of the repeats after a
   warm-up (the best run on the shared CPU); peak memory is ``max_memory_allocated`` on CUDA and, on the CPU,
   the process's peak RSS (VmHWM, reset first) above its RSS before the step, each CPU measurement in a fresh
   child process.
2. Streamed inference: ``stream_hidden`` over a token stream of N bases in chunks of T (random tokens made on
   the device chunk by chunk, so nothing grows with N): bases/s and peak memory; it should be flat in N.
3. The same-size causal Transformer (4 layers, d_model 256, 4 heads × 64, MLP 4×, learned positions, PyTorch
   SDPA, which picks flash attention on CUDA): training step time and peak memory, L doubling until OOM or
   a step is over ``--max-step-s``.

    .venv/bin/python benchmarks/long_context.py --device cpu              # small lengths, 1 CPU thread
    python benchmarks/long_context.py --device cuda --out $OUT            # L = 2^14 ... 2^21, N up to 100 M

First a check that chunked results equal the one-pass ones at a small length. Tables are printed as Markdown
as each row completes (``--out`` also gets results.json); ``--budget-s`` skips a measurement whose time,
estimated from the previous length, would end past that many seconds, so a time-limited run still returns.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
from seqssm.streaming import checkpoint_blocks, chunked_backward, lm_chunk_loss, stream_hidden

VOCAB = 10
START = time.perf_counter()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def reset_peak_rss() -> None:
    """Linux resets the process's RSS high-water mark (VmHWM) when 5 is written to clear_refs."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def mamba(device: torch.device) -> MambaLMHeadModel:
    torch.manual_seed(0)
    config = MambaConfig(d_model=256, n_layer=4, vocab_size=VOCAB, d_state=16)
    return MambaLMHeadModel(config, impl="auto").to(device)


class Transformer(nn.Module):
    """Pre-norm causal Transformer LM with SDPA attention, the same width and depth as the Mamba model."""

    def __init__(self, max_len: int, d_model: int = 256, n_layer: int = 4, n_head: int = 4):
        super().__init__()
        self.n_head = n_head
        self.embed = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"ln1": nn.LayerNorm(d_model), "qkv": nn.Linear(d_model, 3 * d_model),
                           "proj": nn.Linear(d_model, d_model), "ln2": nn.LayerNorm(d_model),
                           "mlp": nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                                nn.Linear(4 * d_model, d_model))})
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        x = self.embed(ids) + self.pos(torch.arange(length, device=ids.device))
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).view(batch, length, 3, self.n_head, -1).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + blk["proj"](att.transpose(1, 2).reshape(batch, length, -1))
            x = x + blk["mlp"](blk["ln2"](x))
        return self.head(self.ln_f(x))


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(model, ids: torch.Tensor, mode: str, chunk: int, device: torch.device) -> None:
    model.zero_grad(set_to_none=True)
    with autocast(device):
        if mode.startswith("chunked"):
            chunked_backward(model, ids[:, :-1], lm_chunk_loss(ids[:, 1:]), chunk_size=chunk,
                             checkpoint_layers=mode.endswith("ckpt"))
        else:
            logits = model(ids[:, :-1]).float()
            F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1)).backward()


def measure(fn, device: torch.device, repeats: int) -> tuple[float, int]:
    """(seconds per call: median (CUDA) or best (CPU) of ``repeats`` after one warm-up; peak bytes above the
    state before the warm-up)."""
    sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
        reset_peak_rss()
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else peak_rss_bytes()
    # the CPU is shared: its least disturbed run is the best estimate; the GPU is ours alone
    return (statistics.median(times) if device.type == "cuda" else min(times)), peak - base


def run_train(device: torch.device, length: int, mode: str, chunk: int, repeats: int) -> dict:
    if mode == "transformer":
        model = Transformer(length).to(device)
        ids = torch.randint(0, VOCAB, (1, length + 1), device=device)

        def fn():
            model.zero_grad(set_to_none=True)
            with autocast(device):
                loss = F.cross_entropy(model(ids[:, :-1]).float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
            loss.backward()
    else:
        model = mamba(device).train()
        checkpoint_blocks(model, mode == "one-pass+ckpt")  # the chunked path checkpoints its own layers
        ids = torch.randint(0, VOCAB, (1, length + 1), device=device)

        def fn():
            train_step(model, ids, mode, chunk, device)
    seconds, peak = measure(fn, device, repeats)
    return {"L": length, "mode": mode, "chunk": chunk if mode.startswith("chunked") else None,
            "step_s": seconds, "peak_bytes": peak}


@torch.no_grad()
def run_infer(device: torch.device, total: int, chunk: int) -> dict:
    model = mamba(device).eval()
    gen = torch.Generator(device=device).manual_seed(0)

    def chunks():
        for s in range(0, total, chunk):
            yield torch.randint(0, VOCAB, (1, min(chunk, total - s)), device=device, generator=gen)

    def fn():
        with autocast(device):
            for _ in stream_hidden(model, chunks()):
                pass

    seconds, peak = measure(fn, device, repeats=1)
    return {"N": total, "chunk": chunk, "seconds": seconds, "bases_per_s": total / seconds, "peak_bytes": peak}


def check_chunked_equals_one_pass(device: torch.device, length: int = 3000, chunk: int = 1024) -> str:
    """Max |chunked - one pass| / max |one pass| of the hidden states and of every parameter gradient."""
    model = mamba(device).train()
    ids = torch.randint(0, VOCAB, (1, length + 1), device=device)
    with torch.no_grad(), autocast(device):
        ref = model.backbone(ids[:, :-1]).float()
        got = torch.cat([h.float() for h in stream_hidden(model, ids[:, :-1].split(chunk, dim=1))], dim=1)
    out_err = ((got - ref).abs().max() / ref.abs().max()).item()
    train_step(model, ids, "one-pass", chunk, device)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    train_step(model, ids, "chunked", chunk, device)
    grad_err = max(((p.grad - grads[n]).abs().max() / grads[n].abs().max().clamp_min(1e-30)).item()
                   for n, p in model.named_parameters())
    return (f"chunked vs one pass at L = {length:,}, chunks of {chunk:,}: hidden states {out_err:.2e}, worst "
            f"parameter gradient {grad_err:.2e} (relative to the largest entry)")


def in_child(kind: str, **kwargs) -> dict:
    """Run one CPU measurement in a fresh process so its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--child", json.dumps({"kind": kind, **kwargs})]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1], **kwargs}
    return json.loads(done.stdout.strip().splitlines()[-1])


def gb(n: int) -> str:
    return f"{n / 2**30:.2f}"


def header(device: torch.device) -> str:
    name = torch.cuda.get_device_name() if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    versions = f"torch {torch.__version__}"
    with contextlib.suppress(ImportError):
        import triton

        versions += f", triton {triton.__version__}"
    return f"{name}, {datetime.date.today()}, Python {platform.python_version()}, {versions}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--budget-s", type=float, default=1e9)
    parser.add_argument("--max-step-s", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: robust on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="tiny lengths, to check the script runs")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        torch.set_num_threads(spec.pop("threads"))
        kind = spec.pop("kind")
        result = run_train(torch.device("cpu"), **spec) if kind == "train" else run_infer(torch.device("cpu"),
                                                                                          **spec)
        print(json.dumps(result))
        return

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if not cuda:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if cuda else 3)
    lengths = [2**k for k in range(14, 22)] if cuda else [2**10, 2**12, 2**14]
    chunk = 2**16 if cuda else 2**10
    stream_total = [10**6, 10**7, 10**8] if cuda else [2**14, 2**16, 2**18]
    stream_chunk = 2**18 if cuda else 2**12
    if args.quick:
        lengths, chunk, stream_total, stream_chunk = [256, 512], 128, [1024, 4096], 512
    results: dict = {"header": header(device), "train": [], "infer": [], "transformer": []}
    print(f"# long_context on {results['header']}\n", flush=True)

    def one(kind, **kw):
        if cuda:
            try:
                return run_train(device, **kw) if kind == "train" else run_infer(device, **kw)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                return {"error": "OOM", **kw}
            except Exception as err:  # noqa: BLE001 - a time-limited run reports the failure and goes on
                torch.cuda.empty_cache()
                return {"error": f"{type(err).__name__}: {err}"[:120].replace("|", "/"), **kw}
        return in_child(kind, threads=args.threads, **kw)

    try:
        print(check_chunked_equals_one_pass(device, *((3000, 1024) if cuda else (300, 128))) + "\n", flush=True)
    except Exception as err:  # noqa: BLE001 - the timings below are still worth having
        print(f"equality check failed: {type(err).__name__}: {err}\n", flush=True)

    def fits(estimate_s: float) -> bool:
        return time.perf_counter() - START + estimate_s < args.budget_s

    print(f"## Streamed inference (chunks of {stream_chunk:,})\n\n| N bases | seconds | bases/s | peak GB |\n"
          "| ---: | ---: | ---: | ---: |", flush=True)
    rate = None
    for total in stream_total:
        if not fits(0 if rate is None else 2 * total / rate):  # warm-up + timed pass
            print(f"| {total:,} | skipped: over the time budget | | |", flush=True)
            continue
        row = one("infer", total=total, chunk=stream_chunk)
        results["infer"].append(row)
        if "error" in row:
            print(f"| {total:,} | {row['error']} | | |", flush=True)
            continue
        rate = row["bases_per_s"]
        print(f"| {total:,} | {row['seconds']:.2f} | {rate:,.0f} | {gb(row['peak_bytes'])} |", flush=True)

    print("\n## Training step, Mamba 4 × 256\n\n| L | mode | chunk | step s | tokens/s | peak GB |\n"
          "| ---: | --- | ---: | ---: | ---: | ---: |", flush=True)
    last = {}
    for length in lengths:
        for mode in ("one-pass", "one-pass+ckpt", "chunked", "chunked+ckpt"):
            if mode in last and not fits(2.2 * last[mode] * (repeats + 1)):
                print(f"| {length:,} | {mode} | | skipped: over the time budget | | |", flush=True)
                continue
            row = one("train", length=length, mode=mode, chunk=chunk, repeats=repeats)
            results["train"].append(row)
            if "error" in row:
                print(f"| {length:,} | {mode} | {chunk if mode.startswith('chunked') else ''} | {row['error']} "
                      "| | |", flush=True)
                continue
            last[mode] = row["step_s"]
            print(f"| {length:,} | {mode} | {row['chunk'] or ''} | {row['step_s']:.3f} | "
                  f"{length / row['step_s']:,.0f} | {gb(row['peak_bytes'])} |", flush=True)

    print("\n## Transformer 4 × 256 (SDPA), training step\n\n| L | step s | tokens/s | peak GB |\n"
          "| ---: | ---: | ---: | ---: |", flush=True)
    length, step_s = (2**12 if cuda else lengths[0]), 0.0
    while fits(2.2 * 2 * step_s):
        row = one("train", length=length, mode="transformer", chunk=0, repeats=1)
        results["transformer"].append(row)
        if "error" in row:
            print(f"| {length:,} | {row['error']} | | |", flush=True)
            break
        step_s = row["step_s"]
        print(f"| {length:,} | {step_s:.3f} | {length / step_s:,.0f} | {gb(row['peak_bytes'])} |", flush=True)
        if step_s > args.max_step_s or length >= (2**22 if cuda else lengths[-1]):
            break
        length *= 2
    print(f"\n(total {time.perf_counter() - START:.0f} s, budget {args.budget_s:.0f} s)")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
