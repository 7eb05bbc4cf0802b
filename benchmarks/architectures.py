"""A fair comparison of the architectures MambaConfig offers, at matched parameter count (issue 14, item 7).

Architectures (ARCHS): Mamba-1, Mamba-2 (SSD), S4D (LTI), a Jamba-style hybrid (layers "MMMA") and MoE-Mamba
(an MoE MLP after every 2nd mixer). d_model is chosen per architecture so that its parameter count (total, a
tied weight once) is within a few % of Mamba-1's at the reference d_model (printed; MoE's active count too).

DNA LM on E. coli 536 (``--dna``): the last 10 % of the genome is held out; every architecture trains for the
same fixed number of steps (``steps`` x ``batch`` x ``window`` tokens, never cut by a clock), on the same random
windows for a given seed, AdamW with the pretrain pipeline's groups, betas and warm-up + cosine schedule, bf16
autocast (CUDA). Reported: validation bits per base (evenly spaced windows of the held-out tail), mean and
sample standard deviation over the seeds run; training tokens/s timed (synchronised) from step ``warm`` to the
last, so the first steps' kernel compiles are left out and reported apart as "first step s" (compile + one
step, first seed); decode tokens/s at batch 1 and 16 (``seqssm.pipelines.decoding.Decoder``: CUDA graphs on
CUDA, bf16 weights; its first call, which compiles and captures, is untimed); peak training memory.

Seeds (``--seeds``): seed 0 for every architecture first (with decode and FSDD), then each further seed as a
round over all architectures, started only if the round's predicted time (from the first round's measured
steps) fits in ``--budget-s`` of wall time; so every architecture has the same seeds, and a run is never cut.

FSDD digits (``--fsdd``, a folder of ``{digit}_{speaker}_{take}.wav``; takes 0-4 are the test split): each
architecture as a fresh bidirectional backbone, matched again, through ``seqssm.pipelines.finetune`` for the same
``fsdd_epochs`` (a fixed number of optimiser steps, printed), seed 0; test accuracy. ``max_minutes`` there is
only a guard against a hang: a run it stops is marked "cut". The classical baseline (``seqssm baseline``, MFCC
logistic regression) on the same split beside it.

Results are written to ``--out`` after every architecture and seed.

    python benchmarks/architectures.py --prepare-data .carry/archbench          # copy small data (here)
    python benchmarks/architectures.py --dna .carry/archbench/ecoli_536.fna.gz \
        --fsdd .carry/archbench/fsdd --out $OUT/arch                           # on the GPU
    python benchmarks/architectures.py --smoke --out /tmp/arch                   # tiny, CPU, < 60 s
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel, count_parameters

ARCHS = {
    "mamba": {},
    "mamba2": {"mixer": "mamba2"},
    "s4d": {"mixer": "s4d"},
    "hybrid": {"layers": "MMMA"},
    "moe": {"moe_every": 2, "n_experts": 4, "top_k": 1},
}
GPU = dict(d_model=256, n_layer=8, steps=400, batch=32, window=1024, val_windows=128, lr=2e-3, warmup=40,
           warm=10, prompt=256, new_tokens=512, fsdd_d_model=128, fsdd_n_layer=4, fsdd_epochs=10, fsdd_batch=32,
           patch=32, clip=1.0, workers=4, step_multiple=8, budget_s=400, seeds="0,1,2", fsdd_guard_min=3.0)
SMOKE = dict(d_model=16, n_layer=4, steps=4, batch=2, window=64, val_windows=2, lr=2e-3, warmup=1, warm=1,
             prompt=8, new_tokens=8, fsdd_d_model=16, fsdd_n_layer=4, fsdd_epochs=1, fsdd_batch=16,
             patch=64, clip=0.25, workers=0, step_multiple=8, budget_s=1000, seeds="0,1", fsdd_guard_min=5.0)
REPO = Path(__file__).resolve().parents[1]


# ---- models ----------------------------------------------------------------------------------------------

def make_config(arch: str, d_model: int, n_layer: int, **extra) -> MambaConfig:
    kw = dict(ARCHS[arch])
    if "moe_every" in kw:
        kw["d_ff"] = 2 * d_model  # half the usual 4 d_model, so matched total params keep a usable width
    return MambaConfig(d_model=d_model, n_layer=n_layer, **kw, **extra)


def params_of(config: MambaConfig, skip_embedding: bool = False) -> tuple[int, int]:
    """(total, active per token) parameters of a model of this config, built on the meta device."""
    model = MambaLMHeadModel(config, device="meta")
    total = count_parameters(model) - (model.backbone.embedding.weight.numel() if skip_embedding else 0)
    inactive = 0
    for m in model.modules():
        if hasattr(m, "experts") and hasattr(m, "top_k"):
            per = sum(p.numel() for p in m.experts[0].parameters())
            inactive += per * (m.n_experts - m.top_k)
    return total, total - inactive


def match_d_model(arch: str, target: int, n_layer: int, multiple: int, **extra) -> tuple[int, int, int]:
    """(d_model, total, active) whose total is nearest ``target`` over valid multiples of ``multiple``."""
    best = None
    for d in range(multiple, 64 * multiple + 1, multiple):
        try:
            cfg = make_config(arch, d, n_layer, **extra)
        except Exception:  # noqa: BLE001  (a width the architecture does not allow, e.g. heads)
            continue
        total, active = params_of(cfg, skip_embedding=extra.get("tokenizer") == "mulaw8")
        if best is None or abs(total - target) < abs(best[1] - target):
            best = (d, total, active)
        if total > 1.5 * target:
            break
    return best


# ---- DNA LM ----------------------------------------------------------------------------------------------

def load_genome(path: Path) -> torch.Tensor:
    from seqssm.datasets.fasta import iter_fasta
    from seqssm.tokenizers import NucleotideTokenizer

    tok = NucleotideTokenizer()
    seq = "".join(s for _, s in iter_fasta(path))
    return torch.from_numpy(tok.encode_codes(seq, errors="unk").copy()).long()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_lm(model, train_ids, p, device, seed: int) -> dict:
    """Exactly ``p["steps"]`` steps on windows drawn with ``seed``; tokens/s timed from step ``p["warm"]`` on."""
    from seqssm.device import autocast
    from seqssm.pipelines.train_utils import cosine_schedule, param_groups

    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=p["lr"], betas=(0.9, 0.95))
    sched = cosine_schedule(opt, p["warmup"], p["steps"])
    gen = torch.Generator().manual_seed(seed)  # the same windows for every architecture at this seed
    W, B, warm = p["window"], p["batch"], p["warm"]
    train_ids = train_ids.to(device)
    offsets = torch.arange(W + 1, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    t_first = t_warm = None
    losses = []
    model.train()
    for step in range(1, p["steps"] + 1):
        starts = torch.randint(0, len(train_ids) - W - 1, (B,), generator=gen).to(device)
        ids = train_ids[starts[:, None] + offsets]
        with autocast(device):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss = loss + model.aux_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step == 1:
            sync(device)
            t_first = time.perf_counter() - t0
        if step == warm:
            sync(device)
            t_warm = time.perf_counter()
        if step % max(1, p["steps"] // 10) == 0:
            losses.append(round(float(loss.detach()), 4))
    sync(device)
    timed, secs = p["steps"] - warm, time.perf_counter() - t_warm
    return {"steps_done": p["steps"], "tokens": p["steps"] * B * W, "first_step_s": round(t_first, 2),
            "train_s": round(time.perf_counter() - t0, 2),
            "train_tok_s": timed * B * W / secs if timed > 0 else float("nan"),
            "peak_gb": torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan"),
            "loss_curve": losses}


@torch.no_grad()
def val_bits(model, val_ids, p, device) -> float:
    from seqssm.device import autocast

    model.eval()
    W, n = p["window"], p["val_windows"]
    starts = torch.linspace(0, len(val_ids) - W - 1, n).long()
    total, count = 0.0, 0
    for chunk in starts.split(16):
        ids = val_ids[chunk[:, None] + torch.arange(W + 1)].to(device)
        with autocast(device):
            logits = model(ids[:, :-1])
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum"))
        count += ids[:, 1:].numel()
    return total / count / math.log(2)


def decode_rate(model, val_ids, p, batch: int, device) -> tuple[float, str]:
    from seqssm.pipelines.decoding import Decoder

    prompts = torch.stack([val_ids[i * p["prompt"]:(i + 1) * p["prompt"]] for i in range(batch)])
    how = "cuda graph" if device.type == "cuda" else "eager"
    try:
        k = 32 if device.type == "cuda" else 4
        dec = Decoder(model, batch, steps_per_replay=k)
        dec.decode(prompts[:, :1], 2 * k)  # compile, capture
    except Exception as err:  # noqa: BLE001  (report and fall back to the eager step loop)
        how = f"eager ({type(err).__name__} in graph path)"
        dec = Decoder(model, batch, cuda_graph=False)
        dec.decode(prompts[:, :1], 8)
    res = dec.decode(prompts, p["new_tokens"])
    return batch * res.steps / res.seconds, how


def run_lm(arch, d_model, p, train_ids, val_ids, device, seed: int, decode: bool) -> dict:
    torch.manual_seed(seed)
    extra = {"attn_max_len": max(p["window"], p["prompt"] + p["new_tokens"] + 64)} if "layers" in ARCHS[arch] else {}
    cfg = make_config(arch, d_model, p["n_layer"], vocab_size=10, **extra)
    model = MambaLMHeadModel(cfg).to(device)
    row = {"seed": seed, **train_lm(model, train_ids, p, device, seed)}
    t0 = time.perf_counter()
    row["val_bits"] = val_bits(model, val_ids, p, device)
    row["val_s"] = round(time.perf_counter() - t0, 1)
    if decode:  # each phase's seconds in the row, so that a device call can be planned from the last one
        t0 = time.perf_counter()
        model = model.to(torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
        for b in (1, 16):
            row[f"decode_b{b}"], row["decode_how"] = decode_rate(model, val_ids, p, b, device)
        row["decode_s"] = round(time.perf_counter() - t0, 1)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def summarise(row: dict) -> None:
    """Mean and sample standard deviation of the seeds' validation bits; the median of their tokens/s."""
    runs = [r for r in row.get("seeds", []) if "val_bits" in r]
    if not runs:
        return
    bits = [r["val_bits"] for r in runs]
    row["val_bits"] = statistics.fmean(bits)
    row["val_bits_sd"] = statistics.stdev(bits) if len(bits) > 1 else float("nan")
    row["n_seeds"] = len(bits)
    row["train_tok_s"] = statistics.median(r["train_tok_s"] for r in runs)


# ---- FSDD ------------------------------------------------------------------------------------------------

def run_fsdd(arch, d_model, p, fsdd: Path, work: Path, device) -> dict:
    from seqssm.pipelines.configs_train import FinetuneConfig
    from seqssm.pipelines.finetune import finetune

    torch.manual_seed(0)
    cfg = make_config(arch, d_model, p["fsdd_n_layer"], vocab_size=256, tokenizer="mulaw8", sample_rate=8000,
                      bidirectional=True)
    ckpt = work / f"{arch}_init"
    MambaLMHeadModel(cfg).save_pretrained(ckpt)
    res = finetune(FinetuneConfig(
        data=str(fsdd), modality="audio", data_format="fsdd", out=str(work / arch), init_from=str(ckpt),
        d_model=d_model, n_layer=p["fsdd_n_layer"], patch_size=p["patch"], clip_seconds=p["clip"],
        epochs=p["fsdd_epochs"], batch_size=p["fsdd_batch"], lr=2e-3, weight_decay=0.05, warmup_steps=50,
        num_workers=p["workers"], device=str(device), seed=0, max_minutes=p["fsdd_guard_min"], overwrite=True))
    return {"fsdd_acc": (res.test_metrics or {}).get("accuracy", float("nan")), "fsdd_steps": res.steps,
            "fsdd_cut": res.seconds >= 60 * p["fsdd_guard_min"] - 1, "fsdd_s": round(res.seconds, 1),
            "fsdd_sizes": res.sizes}


def run_baseline(fsdd: Path) -> dict:
    from seqssm.pipelines.baseline import BaselineConfig, baseline

    res = baseline(BaselineConfig(data=str(fsdd), modality="audio", data_format="fsdd", features="mfcc", seed=0))
    return {"accuracy": (res.test_metrics or {}).get("accuracy", float("nan")), "C": res.C, "sizes": res.sizes}


# ---- table -----------------------------------------------------------------------------------------------

def _f(x, fmt):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def table(header: str, rows: list[dict], base: dict | None, p: dict, note: str = "") -> str:
    lines = [header, "", "| architecture | d_model | params (active) | val bits/base (mean ± sd, seeds) | FSDD acc "
             "(steps) | MFCC baseline | train tok/s | first step s | decode tok/s b1 | decode tok/s b16 | peak "
             "train GB |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    base_acc = _f((base or {}).get("accuracy"), ".3f")
    for r in rows:
        name = r["arch"] + (f" (error: {r['error']})" if r.get("error") else "")
        par = f"{r['params']:,}" + (f" ({r['active']:,})" if r.get("active") != r.get("params") else "")
        sd = r.get("val_bits_sd", float("nan"))
        bits = _f(r.get("val_bits"), ".4f") + ("" if sd != sd else f" ± {sd:.4f}") + \
            (f" ({r['n_seeds']})" if r.get("n_seeds") else "")
        acc = _f(r.get("fsdd_acc"), ".3f") + (f" ({r['fsdd_steps']}{', cut' if r.get('fsdd_cut') else ''})"
                                              if r.get("fsdd_steps") is not None else "")
        first = r.get("seeds", [{}])[0].get("first_step_s") if r.get("seeds") else None
        lines.append(f"| {name} | {r['d_model']} | {par} | {bits} | {acc} | {base_acc} | "
                     f"{_f(r.get('train_tok_s'), ',.0f')} | {_f(first, '.2f')} | {_f(r.get('decode_b1'), ',.0f')} | "
                     f"{_f(r.get('decode_b16'), ',.0f')} | {_f(r.get('peak_gb'), '.2f')} |")
    tokens = p["steps"] * p["batch"] * p["window"]
    lines += ["", f"DNA LM: {p['n_layer']} layers, {p['steps']} steps x {p['batch']} x {p['window']} = {tokens:,} "
              f"tokens for every architecture and seed, AdamW lr {p['lr']} (warm-up {p['warmup']}, cosine); val = "
              f"{p['val_windows']} windows of the held-out tail; sd = sample standard deviation over the seeds; "
              f"train tok/s timed from step {p['warm']} (median over seeds); first step s = compile + one step, "
              f"first seed. Decode: prompt {p['prompt']}, {p['new_tokens']} new tokens, first seed's model. FSDD: "
              f"{p['fsdd_n_layer']} bidirectional layers, patch {p['patch']}, {p['fsdd_epochs']} epochs x batch "
              f"{p['fsdd_batch']} (optimiser steps in brackets), seed 0, accuracy on takes 0-4; FSDD params "
              "matched separately (in the JSON). MFCC baseline: `seqssm baseline` (MFCC logistic regression), "
              "same split."]
    if note:
        lines.append(note)
    return "\n".join(lines) + "\n"


def merge(paths: list[Path]) -> tuple[str, list[dict], dict | None, dict]:
    """The rows of several runs' architectures.json as one table (device calls are capped at 10 minutes, so the
    five architectures and their seeds may take several): per architecture the seed runs by seed (the first file
    that has a seed wins) and the other fields (decode, FSDD, memory) from its runs without an error first, so a
    part that failed in one call and ran in another is filled; an error is shown only if every run of that
    architecture had one. Runs of other settings (steps, batch, window, sizes) are refused: their numbers
    would not be comparable."""
    keep = ("budget_s", "seeds")
    runs = [json.loads(Path(f).read_text()) for f in paths]
    settings = {k: v for k, v in runs[0]["settings"].items() if k not in keep}
    for f, run in zip(paths, runs, strict=True):
        other = {k: v for k, v in run["settings"].items() if k not in keep}
        if other != settings:
            diff = sorted(k for k in settings.keys() | other.keys() if settings.get(k) != other.get(k))
            raise SystemExit(f"architectures.py: error: --merge: {f} ran other settings ({', '.join(diff)})")
    by_arch: dict[str, list[dict]] = {}
    for run in runs:
        for r in run["rows"]:
            by_arch.setdefault(r["arch"], []).append(r)
    rows: dict[str, dict] = {}
    for arch, parts in by_arch.items():
        # Runs without an error first: their fields win; an error stays only if every run of it had one.
        parts = sorted(parts, key=lambda r: bool(r.get("error")))
        row = {"seeds": []}
        for r in parts:
            have = {s["seed"] for s in row["seeds"]}
            row["seeds"] += [s for s in r.get("seeds", []) if s["seed"] not in have and "error" not in s]
            for k, v in r.items():
                if k not in ("seeds", "error") and not (isinstance(v, float) and math.isnan(v)):
                    row.setdefault(k, v)
        if all(r.get("error") for r in parts):
            row["error"] = parts[-1]["error"]
        rows[arch] = row
    for row in rows.values():
        row["seeds"].sort(key=lambda s: s["seed"])
        summarise(row)
    base = next((run["baseline"] for run in runs if run.get("baseline")), None)
    headers = sorted({run["header"] for run in runs})
    header = headers[0] + (f" (merged from {len(runs)} runs: {'; '.join(headers[1:])})" if len(headers) > 1 else "")
    order = [a for a in ARCHS if a in rows] + [a for a in rows if a not in ARCHS]
    return header, [rows[a] for a in order], base, runs[0]["settings"]


def write(out: Path, header: str, rows, base, p, note: str = "") -> str:
    from seqssm.pipelines.common import atomic_path

    text = table(header, rows, base, p, note)
    with atomic_path(out / "architectures.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "architectures.json") as tmp:
        tmp.write_text(json.dumps({"header": header, "settings": p, "rows": rows, "baseline": base, "note": note},
                                  indent=1, default=str) + "\n")
    return text


# ---- main ------------------------------------------------------------------------------------------------

def prepare_data(dest: Path, data_root: Path, takes: int) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(data_root / "dna" / "ecoli_536.fna.gz", dest / "ecoli_536.fna.gz")
    (dest / "fsdd").mkdir(exist_ok=True)
    n = 0
    for f in sorted((data_root / "audio" / "fsdd").glob("*.wav")):
        if int(f.stem.rsplit("_", 1)[1]) < takes:
            shutil.copy2(f, dest / "fsdd" / f.name)
            n += 1
    print(f"copied E. coli and {n} FSDD clips (takes 0-{takes - 1}) into {dest}")


def smoke_fsdd(src: Path, work: Path) -> Path:
    dst = work / "fsdd_smoke"
    dst.mkdir()
    for f in sorted(src.glob("*_jackson_*.wav")):
        if int(f.stem.rsplit("_", 1)[1]) in (0, 5, 6, 7):
            (dst / f.name).symlink_to(f.resolve())
    return dst


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--dna", type=Path, help="default: DATA_ROOT/dna/ecoli_536.fna.gz")
    ap.add_argument("--fsdd", type=Path, help="default: DATA_ROOT/audio/fsdd")
    ap.add_argument("--out", type=Path, default=Path("runs/architectures"))
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--budget-s", type=float, help="wall time within which further seed rounds are started "
                    "(default 400 on the GPU); no run is ever cut short")
    ap.add_argument("--seeds", help="DNA LM seeds, comma-separated (default 0,1,2 on the GPU)")
    ap.add_argument("--skip-fsdd", action="store_true", help="the DNA LM only (no FSDD runs, no baseline)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--prepare-data", type=Path, metavar="DIR", help="copy the data the GPU run needs into DIR")
    ap.add_argument("--fsdd-takes", type=int, default=30, help="--prepare-data: FSDD takes 0..N-1 (0-4 are test)")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="write one table (into --out) from several runs' architectures.json")
    args = ap.parse_args(argv)
    if args.prepare_data:
        prepare_data(args.prepare_data, args.data_root, args.fsdd_takes)
        return ""
    if args.merge:
        from seqssm.pipelines.common import FILE, OutputPlan

        OutputPlan([(args.out / "architectures.md", FILE), (args.out / "architectures.json", FILE)],
                   folder=args.out, overwrite=args.overwrite).check()
        header, rows, base, p = merge(args.merge)
        seeds = sorted({s["seed"] for r in rows for s in r["seeds"]})
        uneven = [r["arch"] for r in rows if [s["seed"] for s in r["seeds"]] != seeds]
        note = f"Merged: seeds {', '.join(map(str, seeds))}" + (
            f"; not every seed for {', '.join(uneven)}." if uneven else " for every architecture.")
        text = write(args.out, header, rows, base, p, note)
        print(text, flush=True)
        return text
    import triton

    from seqssm.pipelines.common import FILE, OutputPlan

    p = dict(SMOKE if args.smoke else GPU)
    if args.budget_s:
        p["budget_s"] = args.budget_s
    if args.seeds:
        p["seeds"] = args.seeds
    seeds = [int(x) for x in str(p["seeds"]).split(",")]
    t_start = time.perf_counter()
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    OutputPlan([(args.out / "architectures.md", FILE), (args.out / "architectures.json", FILE)], folder=args.out,
               overwrite=args.overwrite).check()
    dna = args.dna or args.data_root / "dna" / "ecoli_536.fna.gz"
    fsdd = args.fsdd or args.data_root / "audio" / "fsdd"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"Architectures at matched parameters: {gpu}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} "
              f"UTC, torch {torch.__version__}, triton {triton.__version__}" + (" (smoke sizes)" if args.smoke else ""))
    print(header, flush=True)
    archs = args.archs.split(",")
    genome = load_genome(dna)
    cut = int(len(genome) * 0.9)
    train_ids, val_ids = genome[:cut], genome[cut:]
    target = params_of(make_config("mamba", p["d_model"], p["n_layer"], vocab_size=10))[0]
    audio = dict(vocab_size=256, tokenizer="mulaw8", sample_rate=8000, bidirectional=True)
    fsdd_target = params_of(make_config("mamba", p["fsdd_d_model"], p["fsdd_n_layer"], **audio), True)[0]
    rows, base, note = [], None, ""
    with tempfile.TemporaryDirectory(prefix="archbench-") as tmp:
        work = Path(tmp)
        if args.smoke:
            fsdd = smoke_fsdd(fsdd, work)
        try:
            base = None if args.skip_fsdd else run_baseline(fsdd)
            print("baseline:", json.dumps(base), flush=True)
        except Exception as err:  # noqa: BLE001  (one failed part must not lose the others)
            base = {"error": f"{type(err).__name__}: {err}"}
        for arch in archs:  # round 1: the first seed, decode and FSDD
            d, total, active = match_d_model(arch, target, p["n_layer"], p["step_multiple"], vocab_size=10)
            fd, ftotal, _ = match_d_model(arch, fsdd_target, p["fsdd_n_layer"], p["step_multiple"], **audio)
            row = {"arch": arch, "d_model": d, "params": total, "active": active, "fsdd_d_model": fd,
                   "fsdd_params": ftotal, "param_ratio": round(total / target, 4), "seeds": []}
            print(f"{arch}: d_model {d}, {total:,} params ({active:,} active, {total / target:.3f} x mamba); "
                  f"FSDD d_model {fd}, {ftotal:,} params", flush=True)
            t_arch = time.perf_counter()
            try:
                lm = run_lm(arch, d, p, train_ids, val_ids, device, seeds[0], decode=True)
                row.update({k: lm[k] for k in ("decode_b1", "decode_b16", "decode_how", "peak_gb")})
                row["seeds"].append({k: v for k, v in lm.items() if not k.startswith("decode")})
                summarise(row)
                if not args.skip_fsdd:
                    row.update(run_fsdd(arch, fd, p, fsdd, work, device))
            except Exception as err:  # noqa: BLE001
                traceback.print_exc()
                row["error"] = f"{type(err).__name__}: {str(err)[:120]}"
            row["seconds"] = round(time.perf_counter() - t_arch, 1)
            print("row:", json.dumps(row, default=str), flush=True)
            rows.append(row)
            text = write(args.out, header, rows, base, p)
        ok = [r for r in rows if not r.get("error")]
        for i, seed in enumerate(seeds[1:], 1):  # further rounds: all architectures or none
            # A round repeats each architecture's first training minus its compile, plus validation.
            need = 1.2 * sum(r["seeds"][0]["train_s"] - r["seeds"][0]["first_step_s"] + 2 for r in ok)
            left = p["budget_s"] - (time.perf_counter() - t_start)
            if need > left:
                note = (f"Seeds {', '.join(map(str, seeds[i:]))} not run: a round needs about {need:.0f} s, "
                        f"{max(left, 0):.0f} s of the {p['budget_s']:.0f} s budget were left.")
                print(note, flush=True)
                break
            for r in ok:
                try:
                    lm = run_lm(r["arch"], r["d_model"], p, train_ids, val_ids, device, seed, decode=False)
                except Exception as err:  # noqa: BLE001
                    traceback.print_exc()
                    r["seeds"].append({"seed": seed, "error": f"{type(err).__name__}: {str(err)[:120]}"})
                    continue
                r["seeds"].append(lm)
                summarise(r)
                print(f"{r['arch']} seed {seed}: val {lm['val_bits']:.4f} bits, {lm['train_tok_s']:,.0f} tok/s",
                      flush=True)
                text = write(args.out, header, rows, base, p)
        if len(seeds) == 1 or not ok:
            note = note or "One seed only: differences of a few hundredths of a bit are within run-to-run noise."
        text = write(args.out, header, rows, base, p, note)
    print(text, flush=True)
    return text


if __name__ == "__main__":
    main()
