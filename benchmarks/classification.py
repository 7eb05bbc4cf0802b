"""seqssm's default fine-tuning recipe against `seqssm baseline` on every shared classification task, paired
over split seeds (issue 16 item 5).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/classification.py --quick --out /tmp/cls      # CPU, minutes
    python benchmarks/classification.py --device cuda --out runs/cls                           # GPU, full data
    python benchmarks/classification.py --summarize --out runs/cls                             # the table again

Tasks (inputs from ``--data-root``, default ``../shared/data``, built into ``{out}/data`` at run time; nothing
is copied into the repository): ``promoters`` (E. coli promoter or not, 81 nt, 5,720 rows), ``sigma`` (the
promoters' sigma factor, 6 imbalanced classes), ``fsdd`` (spoken digits, 8 kHz waveforms, FSDD's own test split
of takes 0-4) and ``segments`` (``benchmarks/genome_segments.py``: 1-2 kb genome segments, 14 imbalanced
region-and-strand classes, at most 150 a class: 1,549 rows). For every task and split seed S:
``seqssm.pipelines.finetune.finetune`` with ``--seed S --baseline`` and otherwise the command's defaults (the
recipe run.json records; each row keeps it), so the baseline is fitted on exactly the model's train / val rows
and scored on its test rows. ``--quick`` (a CPU smoke run, stated in every row) shrinks the data (seeded
subsets: 300 promoters, 300 sigma rows, FSDD takes 0 and 5-7, 12 segments a class) and the model (d_model 16,
1 layer, 2 epochs; audio patches of 32 samples, 1-s training crops): it checks the machinery, and its numbers
say little about the recipe. ``--set KEY=VALUE`` overrides any other FinetuneConfig field (recorded in the
rows' recipe).

Per task and metric (accuracy, macro F1, balanced accuracy) the table gives the means over seeds of the model
and the baseline, the mean paired difference d = model - baseline, its standard error sd(d) / sqrt(n), and
whether d > 2 SE ("above"). Results are written as they come: ``{out}/rows/{task}_s{S}.json`` per run, and
``{out}/rows.tsv`` and ``{out}/results.md`` rebuilt from all rows after every run; ``--resume`` skips done runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

TASKS = ("promoters", "sigma", "fsdd", "segments")
METRICS = ("accuracy", "macro_f1", "balanced_accuracy")
SHORT = {"accuracy": "acc", "macro_f1": "macro F1", "balanced_accuracy": "bal. acc"}
# --quick: sized for a 2-core machine shared with other jobs (the CPU scan ran ~1 s a step of 32 x 81 nt here).
QUICK_MODEL = {"d_model": 16, "n_layer": 1, "epochs": 2}
QUICK_AUDIO = {"patch_size": 32, "clip_seconds": 1.0}
QUICK_ROWS = {"promoters": 300, "sigma": 300, "segments": 12}  # segments: rows per class (test >= 14 rows)
# Full runs keep at most this many segments a class (of ~410): the k-mer baseline's 36 logistic regressions on
# 1-2 kb rows are the slowest part of a seed (minutes of CPU at 4,000 rows); the rare classes keep all of theirs.
SEGMENTS_PER_CLASS = 150
QUICK_FSDD_TAKES = (0, 5, 6, 7)  # take 0 is the (FSDD) test split, 5-7 train and val
# run.json config fields that are data, output or machine, not recipe.
NOT_RECIPE = {"data", "out", "overwrite", "resume", "device", "num_workers", "seed", "init_seed", "baseline",
              "data_format", "genome", "bed_labels", "length", "sequence_column", "label_column", "id_column",
              "fsdd_split", "sample_rate", "modality", "split", "impl", "level", "problem_type", "folds"}
RECIPE_SHOWN = ("d_model", "n_layer", "pooling", "epochs", "batch_size", "lr", "class_weights", "metric", "frontend",
                "self_pretrain_steps", "patch_size", "clip_seconds")


def _load_segments():
    path = Path(__file__).resolve().parent / "genome_segments.py"
    spec = importlib.util.spec_from_file_location("genome_segments", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _subset_table(src: Path, dst: Path, rows: int) -> None:
    """A seeded, label-stratified subset of ``rows`` rows of a labelled TSV (same columns)."""
    from seqssm.datasets.tables import split_indices

    with open(src) as f:
        reader = list(csv.reader(f, delimiter="\t"))
    header, body = reader[0], reader[1:]
    labels = [r[header.index("label")] for r in body]
    keep, _ = split_indices(len(body), (rows / len(body), 1 - rows / len(body)), 0, labels)
    dst.write_text("\t".join(header) + "\n" + "".join("\t".join(body[i]) + "\n" for i in keep))


def prepare(task: str, root: Path, data_dir: Path, quick: bool) -> dict:
    """Build the task's input under ``data_dir``; returns FinetuneConfig's data fields for it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if task in ("promoters", "sigma"):
        src = root / "labelled" / ("ecoli_promoters.tsv" if task == "promoters" else "ecoli_sigma_subtypes.tsv")
        if not quick:
            return {"data": str(src), "modality": "dna"}
        dst = data_dir / f"{task}_quick.tsv"
        if not dst.exists():
            _subset_table(src, dst, QUICK_ROWS[task])
        return {"data": str(dst), "modality": "dna"}
    if task == "fsdd":
        src = root / "audio" / "fsdd"
        if not quick:
            return {"data": str(src), "modality": "audio", "data_format": "fsdd"}
        dst = data_dir / "fsdd_quick"
        if not dst.exists():
            tmp = data_dir / "fsdd_quick.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            for wav in sorted(src.glob("*.wav")):
                if int(wav.stem.rsplit("_", 1)[1]) in QUICK_FSDD_TAKES:
                    (tmp / wav.name).symlink_to(wav.resolve())
            tmp.rename(dst)
        return {"data": str(dst), "modality": "audio", "data_format": "fsdd"}
    if task == "segments":
        per_class = QUICK_ROWS["segments"] if quick else SEGMENTS_PER_CLASS
        dst = data_dir / f"segments{'_quick' if quick else ''}.tsv"
        if not dst.exists():
            seg = _load_segments()
            seg.write_table(seg.build_rows(root, 0, per_class), dst)
        return {"data": str(dst), "modality": "dna"}
    raise ValueError(task)


def recipe_of(run: dict) -> dict:
    """The recipe a run used: run.json's config fields that are not data / output / machine, and any run.json
    top-level record whose name says recipe or pretraining (the data-chosen recipe, when finetune writes one)."""
    recipe = {k: v for k, v in run.get("config", {}).items() if k not in NOT_RECIPE}
    for key, value in run.items():
        if any(word in key for word in ("recipe", "pretrain", "front")):
            recipe[f"run.{key}"] = value
    return recipe


def run_one(task: str, seed: int, fields: dict, args, out: Path) -> dict:
    """One finetune --baseline run; the row written to ``{out}/rows/{task}_s{seed}.json``."""
    from seqssm.pipelines.configs_train import FinetuneConfig
    from seqssm.pipelines.finetune import finetune

    extra = dict(QUICK_MODEL) if args.quick else {}
    if args.quick and fields["modality"] == "audio":
        extra.update(QUICK_AUDIO)
    extra.update(args.overrides)
    if fields["modality"] == "audio" and args.device != "cpu":
        extra["num_workers"] = args.workers
    cfg = FinetuneConfig(**fields, out=str(out / "runs" / f"{task}_s{seed}"), seed=seed, device=args.device,
                         baseline=True, overwrite=True, **extra)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()) if args.quiet_finetune else contextlib.nullcontext():
        result = finetune(cfg)
    wall = time.perf_counter() - start
    run = json.loads((Path(cfg.out) / "run.json").read_text())
    base = result.baseline or {}
    row = {"task": task, "seed": seed, "device": args.device, "quick": args.quick,
           "model": {m: (result.test_metrics or {}).get(m, math.nan) for m in (*METRICS, "auroc", "mcc")},
           "baseline": {m: (base.get("test_metrics") or {}).get(m, math.nan) for m in (*METRICS, "auroc", "mcc")},
           "baseline_choice": f"{base.get('features')} C={base.get('C')}", "baseline_seconds": base.get("seconds"),
           "steps": result.steps, "finetune_seconds": round(result.seconds, 1), "wall_seconds": round(wall, 1),
           "sizes": result.sizes, "status": run.get("status"), "warnings": run.get("warnings", []),
           "recipe": recipe_of(run), "versions": run.get("versions", {})}
    return row


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_rows(out: Path) -> list[dict]:
    rows = [json.loads(p.read_text()) for p in sorted(out.rglob("rows/*.json"))]
    order = {t: i for i, t in enumerate(TASKS)}
    return sorted(rows, key=lambda r: (order.get(r["task"], 99), r["seed"]))


def paired(rows: list[dict], metric: str) -> dict:
    """Means of model and baseline, the mean paired difference, its SE (sd / sqrt(n); nan for n < 2), above."""
    a = [r["model"][metric] for r in rows]
    b = [r["baseline"][metric] for r in rows]
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    se = statistics.stdev(d) / math.sqrt(n) if n >= 2 else math.nan
    mean = statistics.fmean(d)
    return {"n": n, "model": statistics.fmean(a), "baseline": statistics.fmean(b), "diff": mean, "se": se,
            "above": bool(n >= 2 and mean > 2 * se), "wins": sum(x > 0 for x in d)}


def summary(rows: list[dict]) -> list[dict]:
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        for metric in METRICS:
            out.append({"task": task, "metric": metric, **paired(mine, metric)})
    return out


def table_lines(rows: list[dict]) -> list[str]:
    lines = [f"{'task':<10} {'metric':<9} {'seeds':>5} {'model':>7} {'baseline':>8} {'diff':>8} {'SE':>7} "
             f"{'wins':>5}  above by > 2 SE"]
    for s in summary(rows):
        lines.append(f"{s['task']:<10} {SHORT[s['metric']]:<9} {s['n']:>5} {s['model']:>7.4f} {s['baseline']:>8.4f} "
                     f"{s['diff']:>+8.4f} {s['se']:>7.4f} {s['wins']:>2}/{s['n']:<2}  {'yes' if s['above'] else 'no'}")
    return lines


def _recipe_text(recipe: dict) -> str:
    shown = [f"{k} {recipe[k]}" for k in RECIPE_SHOWN if k in recipe]
    shown += [f"{k} {json.dumps(v, default=str)[:120]}" for k, v in recipe.items() if k.startswith("run.")]
    return ", ".join(shown)


def markdown(rows: list[dict]) -> str:
    lines = ["| task | metric | seeds | model | baseline | model − baseline | paired SE | model ahead "
             "| above by > 2 SE |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary(rows):
        lines.append(f"| {s['task']} | {SHORT[s['metric']]} | {s['n']} | {s['model']:.4f} | {s['baseline']:.4f} | "
                     f"{s['diff']:+.4f} | {s['se']:.4f} | {s['wins']} of {s['n']} | "
                     f"{'**yes**' if s['above'] else 'no'} |")
    lines += ["", "Per run:", "",
              "| task | seed | rows train / val / test | steps | finetune s | model acc / macro F1 / bal. acc | "
              "baseline acc / macro F1 / bal. acc | baseline choice |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        sizes = " / ".join(str(r["sizes"].get(k, "?")) for k in ("train", "val", "test"))
        m = " / ".join(f"{r['model'][k]:.4f}" for k in METRICS)
        b = " / ".join(f"{r['baseline'][k]:.4f}" for k in METRICS)
        lines.append(f"| {r['task']} | {r['seed']} | {sizes} | {r['steps']} | {r['finetune_seconds']} | {m} | {b} | "
                     f"{r['baseline_choice']} |")
    lines += ["", "Recipe per task (run.json config; the same for every seed unless listed twice):", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        for text in dict.fromkeys(_recipe_text(r["recipe"]) for r in rows if r["task"] == task):
            lines.append(f"- {task}: {text}")
    if rows:
        v = rows[0]["versions"]
        lines += ["", f"Device {rows[0]['device']}{' (quick)' if rows[0]['quick'] else ''}; "
                  + ", ".join(f"{k} {v[k]}" for k in sorted(v))]
    return "\n".join(lines) + "\n"


def write_results(out: Path) -> list[dict]:
    """Rebuild ``rows.tsv`` and ``results.md`` from every row under ``out``."""
    rows = read_rows(out)
    if not rows:
        return rows
    head = ["task", "seed", "device", "quick", *(f"model_{m}" for m in METRICS), *(f"baseline_{m}" for m in METRICS),
            "baseline_choice", "steps", "finetune_seconds", "wall_seconds", "status", "recipe"]
    buf = io.StringIO()
    w = csv.writer(buf, delimiter="\t", lineterminator="\n")
    w.writerow(head)
    for r in rows:
        w.writerow([r["task"], r["seed"], r["device"], r["quick"], *(f"{r['model'][m]:.5f}" for m in METRICS),
                    *(f"{r['baseline'][m]:.5f}" for m in METRICS), r["baseline_choice"], r["steps"],
                    r["finetune_seconds"], r["wall_seconds"], r["status"], json.dumps(r["recipe"], default=str)])
    _atomic_write(out / "rows.tsv", buf.getvalue())
    _atomic_write(out / "results.md", markdown(rows))
    return rows


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="work and results folder")
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    ap.add_argument("--seeds", default="0-4", help="split seeds: 0-4 or 0,1,2")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--quick", action="store_true", help="small data and model (CPU smoke run)")
    ap.add_argument("--workers", type=int, default=4, help="DataLoader workers for audio off the CPU")
    ap.add_argument("--resume", action="store_true", help="keep the rows already in --out, run the rest")
    ap.add_argument("--overwrite", action="store_true", help="start --out afresh")
    ap.add_argument("--summarize", action="store_true", help="only rebuild and print the table from --out")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a FinetuneConfig field (JSON value or plain string), e.g. --set epochs=5")
    ap.add_argument("--quiet-finetune", action="store_true", help="hide finetune's own stdout")
    args = ap.parse_args(argv)
    out = Path(args.out)
    args.overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            args.overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            args.overrides[key] = value
    if args.summarize:
        rows = write_results(out)
        print("\n".join(table_lines(rows)))
        return rows
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    root = Path(args.data_root)
    if bad or not root.is_dir():
        print(f"error: unknown task {bad} (use {', '.join(TASKS)})" if bad else
              f"error: --data-root {root} is not a folder (the shared data, see its README)", file=sys.stderr)
        raise SystemExit(2)
    if (out / "rows").exists() and not (args.resume or args.overwrite):
        print(f"error: {out} already holds results; add --resume or --overwrite", file=sys.stderr)
        raise SystemExit(2)
    if args.overwrite:
        shutil.rmtree(out / "rows", ignore_errors=True)
    (out / "rows").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for task in tasks:
        fields = prepare(task, root, out / "data", args.quick)
        for seed in _seeds(args.seeds):
            path = out / "rows" / f"{task}_s{seed}.json"
            if path.exists():
                print(f"[{time.perf_counter() - t0:6.0f} s] {task} seed {seed}: done before, kept", flush=True)
                continue
            print(f"[{time.perf_counter() - t0:6.0f} s] {task} seed {seed}: finetune --baseline on {fields['data']}",
                  flush=True)
            row = run_one(task, seed, fields, args, out)
            _atomic_write(path, json.dumps(row, indent=1, default=str) + "\n")
            m, b = row["model"], row["baseline"]
            print(f"[{time.perf_counter() - t0:6.0f} s] {task} seed {seed}: model acc {m['accuracy']:.4f} macro F1 "
                  f"{m['macro_f1']:.4f} bal {m['balanced_accuracy']:.4f} | baseline acc {b['accuracy']:.4f} macro F1 "
                  f"{b['macro_f1']:.4f} bal {b['balanced_accuracy']:.4f} ({row['baseline_choice']}) | "
                  f"{row['steps']} steps, {row['wall_seconds']} s", flush=True)
            write_results(out)
    rows = write_results(out)
    print("\n".join(table_lines(rows)))
    return rows


if __name__ == "__main__":
    main()
