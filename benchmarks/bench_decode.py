"""Decoding speed: seqssm's Decoder (CUDA graphs of K steps) against an eager ``model.step`` loop and mamba_ssm.

Decode section: a random d_model 768 x 24-layer causal DNA model with bf16 weights; batch 1 and 64; the
prompt (context 1k or 100k random bases) is prefilled, then 512 tokens are decoded. Per-token latency is
the decode loop's wall time over its steps (prefill and graph capture excluded); tokens/s counts all rows.
Rows: the eager loop (``model.step`` then on-device sampling, one Python iteration per token), the
Decoder eager (same loop as the graph path, no capture), the Decoder with CUDA graphs of K = 1, 8, 32
steps, and mamba_ssm's ``MambaLMHeadModel.generate(..., cg=True)`` on the same weights (state-dict names
match one to one) when ``import mamba_ssm`` works: its decode time is generate to L + 512 minus generate to
L + 1 (prefill and one token), the graph captured beforehand. Every row draws from the full distribution
(temperature 1, no top-k/top-p).

Generate section: ``seqssm.pipelines.generate.generate`` of 1,000,000 bases from a d_model 256 x 4-layer
checkpoint at batch 1, wall time of the whole call (load, capture, FASTA written); mamba_ssm's generate at
the same length beside it.

    python benchmarks/bench_decode.py --json $OUT/decode.json            # GPU, both sections
    python benchmarks/bench_decode.py --sections generate --json x.json  # one section
    python benchmarks/bench_decode.py --cpu-smoke --json /tmp/decode.json  # tiny sizes on the CPU, a check
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.decoding import Decoder
from seqssm.pipelines.generate import GenerateConfig, generate
from seqssm.pipelines.sampling import sample_tokens

VOCAB = 10
GPU = {"decode_model": (768, 24), "batches": (1, 64), "contexts": (1024, 102400), "new_tokens": 512,
       "ks": (1, 8, 32), "generate_model": (256, 4), "generate_length": 1_000_000}
SMOKE = {"decode_model": (32, 2), "batches": (1, 3), "contexts": (16, 200), "new_tokens": 24,
         "ks": (1, 8), "generate_model": (32, 2), "generate_length": 3000}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_model(d_model: int, n_layer: int, device: torch.device, dtype: torch.dtype) -> MambaLMHeadModel:
    torch.manual_seed(0)
    return MambaLMHeadModel(MambaConfig(d_model=d_model, n_layer=n_layer, vocab_size=VOCAB),
                            device=device, dtype=dtype).eval()


@torch.no_grad()
def eager_step_loop(model, prompts: torch.Tensor, new: int) -> float:
    """Seconds per token of the plain loop: chunked prefill, then model.step and sampling per token."""
    device = prompts.device
    cache, chunk = None, max(1, 2**20 // prompts.shape[0])
    for start in range(0, prompts.shape[1], chunk):
        logits, cache = model.prefill(prompts[:, start : start + chunk], cache)
    logits = logits[:, -1]
    gen = torch.Generator(device=device).manual_seed(0)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(new):
        ids, _ = sample_tokens(logits, torch.rand(logits.shape, generator=gen, device=device))
        logits = model.step(ids, cache)
    sync(device)
    return (time.perf_counter() - t0) / new


def decoder_loop(model, prompts: torch.Tensor, new: int, graph: bool, k: int) -> float:
    """Seconds per token of Decoder.decode's step loop (a short decode first compiles and captures)."""
    decoder = Decoder(model, prompts.shape[0], cuda_graph=graph, steps_per_replay=k)
    decoder.decode(prompts[:, :1], 2 * k)
    result = decoder.decode(prompts, new)
    return result.seconds / result.steps


def mamba_twin(model):
    """mamba_ssm's MambaLMHeadModel with this model's weights, or the reason there is none."""
    try:
        from mamba_ssm.models.config_mamba import MambaConfig as TheirConfig
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel as Theirs
    except Exception as err:  # any import failure: no mamba_ssm rows
        return None, f"mamba_ssm not importable ({type(err).__name__}: {err})"
    c = model.config
    ssm_cfg = {"d_state": c.d_state, "d_conv": c.d_conv, "expand": c.expand}
    kwargs = dict(d_model=c.d_model, n_layer=c.n_layer, vocab_size=c.vocab_size, rms_norm=True,
                  residual_in_fp32=c.residual_in_fp32, fused_add_norm=True,
                  pad_vocab_size_multiple=c.pad_vocab_size_multiple, tie_embeddings=c.tie_embeddings)
    if "d_intermediate" in {f.name for f in dataclasses.fields(TheirConfig)}:  # mamba_ssm >= 2
        kwargs["d_intermediate"], ssm_cfg["layer"] = 0, "Mamba1"
    weight = model.backbone.embedding.weight
    theirs = Theirs(TheirConfig(ssm_cfg=ssm_cfg, **kwargs), device=weight.device, dtype=weight.dtype).eval()
    theirs.load_state_dict(model.state_dict())
    return theirs, None


@torch.inference_mode()
def mamba_generate(theirs, prompts: torch.Tensor, new: int) -> tuple[float, float]:
    """(seconds per decoded token, seconds of the full generate call) of mamba_ssm's cg=True generate."""
    from mamba_ssm.utils.generation import update_graph_cache

    B, L = prompts.shape
    theirs._decoding_cache = update_graph_cache(theirs, None, B, L, L + new)  # capture, untimed

    def timed(max_length: int) -> float:
        sync(prompts.device)
        t0 = time.perf_counter()
        theirs.generate(prompts, max_length=max_length, cg=True, top_k=0, temperature=1.0)
        sync(prompts.device)
        return time.perf_counter() - t0

    timed(L + 1)  # warm-up of the prefill kernels
    prefill, full = timed(L + 1), timed(L + new)
    return (full - prefill) / (new - 1), full


def mamba_per_token(model, prompts: torch.Tensor, new: int, theirs) -> float:
    return mamba_generate(theirs, prompts, new)[0]


def decode_section(sizes: dict, device: torch.device, dtype: torch.dtype, use_mamba: bool) -> list[dict]:
    model = random_model(*sizes["decode_model"], device, dtype)
    theirs, why = mamba_twin(model) if use_mamba else (None, "mamba_ssm rows skipped")
    rows, new = [], sizes["new_tokens"]
    shape = "{} x {} {}".format(*sizes["decode_model"], str(dtype).removeprefix("torch."))
    for batch in sizes["batches"]:
        for context in sizes["contexts"]:
            prompts = torch.randint(5, 9, (batch, context), device=device)
            runs = [] if sizes.get("no_eager") else [("eager model.step loop", eager_step_loop, ()),
                                                     ("Decoder eager", decoder_loop, (False, 8))]
            if device.type == "cuda":
                runs += [(f"Decoder graph K={k}", decoder_loop, (True, k)) for k in sizes["ks"]]
            if theirs is not None:
                runs.append(("mamba_ssm generate cg=True", mamba_per_token, (theirs,)))
            for name, fn, extra in runs:
                row = {"section": "decode", "impl": name, "model": shape, "batch": batch, "context": context,
                       "new_tokens": new}
                try:
                    per_token = fn(model, prompts, new, *extra)
                    row.update(ms_per_token=per_token * 1e3, tokens_per_s=batch / per_token)
                except torch.OutOfMemoryError:
                    row["note"] = "out of memory"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps(row), flush=True)
    if why:
        rows.append({"section": "decode", "impl": "mamba_ssm generate cg=True", "note": why})
    return rows


def generate_section(sizes: dict, device: torch.device, use_mamba: bool) -> list[dict]:
    length = sizes["generate_length"]
    model = random_model(*sizes["generate_model"], device, torch.float32)
    shape = "{} x {} fp32".format(*sizes["generate_model"])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(Path(tmp) / "checkpoint")
        t0 = time.perf_counter()
        generate(GenerateConfig(str(Path(tmp) / "checkpoint"), str(Path(tmp) / "out.fa"), length=length,
                                device=str(device)))
        seconds = time.perf_counter() - t0
    rows.append({"section": "generate", "impl": "seqssm generate()", "model": shape, "batch": 1, "context": 0,
                 "new_tokens": length, "seconds": seconds, "ms_per_token": seconds / length * 1e3,
                 "tokens_per_s": length / seconds})
    print(json.dumps(rows[-1]), flush=True)
    theirs, why = mamba_twin(model) if use_mamba else (None, "mamba_ssm rows skipped")
    if theirs is not None:
        _, seconds = mamba_generate(theirs, torch.randint(5, 9, (1, 1), device=device), length)
        rows.append({"section": "generate", "impl": "mamba_ssm generate cg=True", "model": shape, "batch": 1,
                     "context": 1, "new_tokens": length, "seconds": seconds,
                     "ms_per_token": seconds / length * 1e3, "tokens_per_s": length / seconds})
        print(json.dumps(rows[-1]), flush=True)
    elif why:
        rows.append({"section": "generate", "impl": "mamba_ssm generate cg=True", "note": why})
    return rows


def table(header: str, rows: list[dict]) -> str:
    eager = {(r["batch"], r["context"]): r["ms_per_token"] for r in rows
             if r["impl"] == "eager model.step loop" and "ms_per_token" in r}
    lines = [header, "", "| section | impl | model | batch | context | new tokens | ms/token | tokens/s | "
             "speed vs eager loop | note |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ms = r.get("ms_per_token")
        base = eager.get((r.get("batch"), r.get("context"))) if r["section"] == "decode" else None
        note = r.get("note", "whole call: load, prefill, capture, FASTA" if r["section"] == "generate" else "")
        lines.append(
            f"| {r['section']} | {r['impl']} | {r.get('model', '')} | {r.get('batch', '')} | {r.get('context', '')} "
            f"| {r.get('new_tokens', '')} | {f'{ms:.3f}' if ms else ''} "
            f"| {format(r['tokens_per_s'], ',.0f') if ms else ''} | {f'{base / ms:.2f}x' if ms and base else ''} "
            f"| {note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write the rows and header here")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (checks the script)")
    parser.add_argument("--sections", default="decode,generate", help="comma-separated: decode, generate")
    parser.add_argument("--no-mamba", action="store_true", help="leave out the mamba_ssm rows")
    parser.add_argument("--generate-length", type=int, help="bases for the generate section")
    parser.add_argument("--ks", help="comma-separated graph steps per replay, e.g. 32")
    parser.add_argument("--new-tokens", type=int, help="decoded tokens per row")
    parser.add_argument("--no-eager", action="store_true", help="leave out the two eager-loop rows")
    args = parser.parse_args()
    sizes = dict(SMOKE if args.cpu_smoke else GPU)
    if args.ks:
        sizes["ks"] = tuple(int(k) for k in args.ks.split(","))
    if args.new_tokens:
        sizes["new_tokens"] = args.new_tokens
    sizes["no_eager"] = args.no_eager
    if args.generate_length:
        sizes["generate_length"] = args.generate_length
    if args.cpu_smoke:
        device, dtype = torch.device("cpu"), torch.float32
        torch.set_num_threads(1)  # tiny ops: threads only wait
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_decode needs a CUDA GPU; pass --cpu-smoke to check it on the CPU")
        device, dtype = torch.device("cuda"), torch.bfloat16
    versions = {"torch": torch.__version__}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        pass
    try:
        import mamba_ssm

        versions["mamba_ssm"] = mamba_ssm.__version__
    except Exception:  # mamba_ssm may be present but broken
        pass
    cpu = f"CPU {platform.processor() or platform.machine()}"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    header = (f"{name}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
              + ", ".join(f"{k} {v}" for k, v in versions.items())
              + "; sampling: temperature 1, no top-k/top-p")
    print(header, flush=True)
    sections = set(args.sections.split(","))
    rows = []
    if "decode" in sections:
        rows += decode_section(sizes, device, dtype, not args.no_mamba)
    if "generate" in sections:
        rows += generate_section(sizes, device, not args.no_mamba)
    text = table(header, rows)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"header": header, "sizes": sizes, "rows": rows, "table": text}, indent=1))


if __name__ == "__main__":
    main()
