"""Time the first optimiser steps of the FSDD fine-tune, with each step's Triton compiles (issues 14 and 16).

Runs the real ``seqssm.pipelines.finetune.finetune`` (the architectures benchmark's FSDD recipe by default: 4
bidirectional layers of d_model 128, patch 32, 1-s crops, batch 32, 4 workers) and stops it after ``--steps``
optimiser steps (or once ``--max-seconds`` have passed). Per step: wall seconds (step end to step end, the GPU
synchronised), the batch's padded length in samples, and the Triton compiles that happened in it (count and
seconds, ``compile_times.time_compiles``). The collate's rounding of batch lengths is ``SEQSSM_PAD_TOKENS`` (16
by default; 1 = the old unrounded batches), read when seqssm is imported, so run one process per setting; with
``--specialize-norm-rows`` too, a run compiles what the code before the fix compiled:

    SEQSSM_PAD_TOKENS=1 python benchmarks/fsdd_step.py --fsdd .carry/archbench/fsdd --label old --specialize-norm-rows
    python benchmarks/fsdd_step.py --fsdd .carry/archbench/fsdd --label rounded --json out.json

Use a fresh ``TRITON_CACHE_DIR`` per run for cold-machine compiles (benchmarks/device/fsdd_step.sh does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compile_times import time_compiles


class _Done(Exception):
    """Raised from the optimiser's step hook to end the run after the steps asked for."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fsdd", type=Path, required=True, help="folder of {digit}_{speaker}_{take}.wav")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--max-seconds", type=float, default=110.0, help="stop after the step that passes this")
    ap.add_argument("--label", default="")
    ap.add_argument("--patch", type=int, default=32, help="samples per token; 0: the default (a 10 ms hop)")
    ap.add_argument("--clip", type=float, default=1.0, help="training crop seconds")
    ap.add_argument("--frontend", default="auto")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", type=Path, help="also write the rows and summary here")
    ap.add_argument("--specialize-norm-rows", action="store_true",
                    help="the RMSNorm kernels specialise their row and tile counts again, as before 2026-12-04 (with "
                    "SEQSSM_PAD_TOKENS=1: the old code's compiles)")
    args = ap.parse_args()
    if not args.fsdd.is_dir():
        print(f"--fsdd {args.fsdd}: not a folder", file=sys.stderr)
        sys.exit(2)

    import torch
    import triton
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from seqssm.pipelines import classify
    from seqssm.pipelines import finetune as ft
    from seqssm.pipelines.configs_train import FinetuneConfig

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{args.label}: {gpu}, torch {torch.__version__}, triton {triton.__version__}, pad_tokens "
          f"{classify.pad_tokens_for(args.device)}, {vars(args)}", flush=True)
    if args.specialize_norm_rows:
        from seqssm.kernels.rms_norm import triton_bwd, triton_fwd

        for kernel in (triton_fwd._add_rms_norm_fwd_kernel, triton_bwd._add_rms_norm_bwd_kernel):
            for param in getattr(kernel, "params", ()):  # read when the kernel's binder is built, at its first launch
                param.do_not_specialize = False
    times, counts = time_compiles()
    lengths: list[int] = []
    inputs = ft.model_inputs

    def recorded(batch, device):  # finetune's own call, patched: the padded length of each batch
        lengths.append(int(batch["input_values"].shape[1]))
        return inputs(batch, device)

    ft.model_inputs = recorded
    rows: list[dict] = []
    seen = {"n": 0, "s": 0.0, "t": None}
    start = time.perf_counter()

    def after_step(optimizer, *_):
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        now, n, s = time.perf_counter(), sum(counts.values()), sum(times.values())
        row = {"step": len(rows) + 1, "s": now - (seen["t"] or start), "samples": lengths[-1],
               "compiles": n - seen["n"], "compile_s": s - seen["s"]}
        rows.append(row)
        seen.update(n=n, s=s, t=now)
        print(f"{args.label} step {row['step']:3d}  {row['s']:7.3f} s  L {row['samples']:6d}  compiles "
              f"{row['compiles']:2d} ({row['compile_s']:.2f} s)", flush=True)
        if len(rows) >= args.steps or now - start > args.max_seconds:
            raise _Done

    register_optimizer_step_post_hook(after_step)
    with tempfile.TemporaryDirectory() as out:
        cfg = FinetuneConfig(data=str(args.fsdd), modality="audio", data_format="fsdd", out=out,
                             d_model=args.d_model, n_layer=args.n_layer, patch_size=args.patch or None,
                             frontend=args.frontend, clip_seconds=args.clip, batch_size=args.batch, lr=2e-3,
                             weight_decay=0.05, warmup_steps=50, num_workers=args.workers, device=args.device,
                             seed=0, self_pretrain_steps=0, overwrite=True)
        try:
            ft.finetune(cfg)
        except _Done:
            pass
    later = [r["s"] for r in rows[1:]]
    summary = {
        "label": args.label, "pad_tokens": classify.pad_tokens_for(args.device),
        "specialize_norm_rows": args.specialize_norm_rows, "steps": len(rows),
        "wall_s": round(time.perf_counter() - start, 1),
        "first_step_s": round(rows[0]["s"], 2) if rows else None,
        "median_step_s_after_first": round(statistics.median(later), 4) if later else None,
        "mean_step_s_after_first": round(statistics.fmean(later), 4) if later else None,
        "distinct_lengths": len(set(lengths)), "compiles": sum(counts.values()),
        "compile_s": round(sum(times.values()), 1),
        # What a step costs besides compiling: milliseconds if the compiles were all of it.
        "median_step_s_less_compiles_after_first": round(statistics.median(
            r["s"] - r["compile_s"] for r in rows[1:]), 4) if later else None,
        "compiles_after_first_step": sum(r["compiles"] for r in rows[1:]),
        "compile_s_after_first_step": round(sum(r["compile_s"] for r in rows[1:]), 1),
        "kernels": {k: [counts[k], round(times[k], 2)] for k in sorted(times, key=lambda k: -times[k])},
    }
    print("summary " + json.dumps(summary), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
