"""The quick-start: pretrain on the bundled lambda phage genome, embed it, generate DNA.

Training runs for a fixed number of optimiser steps (``DemoConfig.steps``), not for a wall-clock budget, so a
busy machine takes longer but reaches the same model; ``DemoConfig.minutes`` is only a safety cap that warns
when it cuts training short. The sizes below were measured on 2 busy CPU cores (benchmarks/NOTES-demo.md).
"""

from __future__ import annotations

import gzip
import math
import os
import threading
from pathlib import Path

import numpy as np
import torch

from seqssm.data import lambda_phage_fasta
from seqssm.pipelines.common import OutputPlan, load_checked, resolve_device
from seqssm.pipelines.configs_sequence import DemoConfig
from seqssm.pipelines.embed import EmbedConfig, embed, embed_outputs
from seqssm.pipelines.generate import GenerateConfig, generate, generate_outputs
from seqssm.pipelines.pretrain import PretrainConfig, pretrain, pretrain_outputs
from seqssm.tokenizers import get_tokenizer

# The demo's model and recipe, sized so that the step budget takes under 3 minutes on 2 CPU cores (measured as
# 1-thread CPU time on a busy machine, benchmarks/NOTES-demo.md): a small, shallow model with a 4-number state
# per channel and no expansion (the scan's cost is D·N per base), on windows long enough to see a few codons.
D_MODEL, N_LAYER, D_STATE, EXPAND, WINDOW, BATCH, LR, WARMUP = 64, 2, 4, 1, 256, 16, 5e-3, 20
VAL_FRACTION = 0.1  # pretrain's default: the last 10% of the genome is the validation part
MARKOV_ORDERS = (2, 4)  # 3-mer and 5-mer Markov models: the cheap classical baseline


def _read_genome(fasta: Path) -> str:
    with gzip.open(fasta, "rt") as handle:
        return "".join(line.strip() for line in handle if not line.startswith(">")).upper()


def split_genome(fasta: Path) -> tuple[np.ndarray, np.ndarray]:
    """Base codes 0..3 (A, C, G, T) of the train and validation parts, split as ``pretrain`` splits them."""
    seq = _read_genome(fasta)
    codes = np.frombuffer(seq.encode(), dtype=np.uint8)
    lut = np.full(256, 255, dtype=np.uint8)
    lut[list(b"ACGT")] = [0, 1, 2, 3]
    codes = lut[codes].astype(np.int64)
    if (codes == 255).any():
        raise ValueError(f"{fasta} has bases other than ACGT; the demo's baseline expects the bundled genome")
    train_end = len(codes) - round(VAL_FRACTION * len(codes))
    return codes[:train_end], codes[train_end:]


def _contexts(codes: np.ndarray, order: int) -> np.ndarray:
    """The index of the ``order`` preceding bases of each position ≥ ``order`` (base-4 number)."""
    ctx = np.zeros(len(codes) - order, dtype=np.int64)
    for j in range(order, 0, -1):
        ctx = ctx * 4 + codes[order - j:len(codes) - j]
    return ctx


def markov_bits(train: np.ndarray, val: np.ndarray, order: int, skip: int) -> float:
    """Bits per base of an order-``order`` Markov model (add-½ counts, fitted on both strands of ``train``) on
    the bases ``val[skip:]`` (``skip`` ≥ ``order``), context taken from ``val`` itself."""
    counts = np.full((4 ** order, 4), 0.5)
    for strand in (train, (3 - train)[::-1]):  # reverse complement, as pretrain samples both strands
        np.add.at(counts, (_contexts(strand, order), strand[order:]), 1)
    probs = counts / counts.sum(1, keepdims=True)
    ctx, target = _contexts(val, order)[skip - order:], val[skip:]
    return float(-np.log2(probs[ctx, target]).mean())


@torch.no_grad()
def model_bits(checkpoint: Path, val: np.ndarray, window: int, skip: int, device: str) -> float:
    """Bits per base of the causal LM on ``val[skip:]`` (forward strand): the validation part is cut into
    pieces of ``window + 1`` bases overlapping by one, so every base after the first is predicted from at
    most ``window`` bases before it (the context the model was trained with)."""
    model = load_checked(checkpoint, device).eval()
    ids = torch.from_numpy(val + get_tokenizer("nucleotide").a_id)  # A, C, G, T ids are consecutive
    bits = torch.empty(len(val) - 1)
    for start in range(0, len(val) - 1, window):
        piece = ids[start:start + window + 1].to(device)
        logits = model(piece[None, :-1]).float()[0]
        nats = torch.nn.functional.cross_entropy(logits, piece[1:], reduction="none")
        bits[start:start + len(piece) - 1] = nats.cpu() / math.log(2)
    return float(bits[skip - 1:].mean())


class _Progress:
    """Echoes a line per validation of ``pretrain`` (read from its train_log.tsv, which it replaces whole at
    each one) with the step, training loss, validation bits per base, elapsed time and ETA."""

    def __init__(self, log_path: Path, steps: int, echo, every: float = 0.5):
        self.log_path, self.steps, self.echo, self.every = log_path, steps, echo, every
        self.seen = 1  # the header
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self._poll()  # the final validation's line

    def _run(self):
        while not self.stop.wait(self.every):
            self._poll()

    def _poll(self):
        try:
            rows = self.log_path.read_text().splitlines()
        except OSError:  # not written yet (the folder appears at the first validation), or being replaced
            return
        for row in rows[self.seen:]:
            step, loss, bits, _, seconds = row.split("\t")
            step, seconds = int(step), float(seconds)
            eta = seconds / step * (self.steps - step) if step else math.nan
            self.echo(f"      step {step:4d}/{self.steps}  loss {float(loss):.3f}  val {float(bits):.3f} bits/base  "
                      f"{seconds:4.0f} s  ETA {eta:3.0f} s")
        self.seen = max(self.seen, len(rows))


def cpu_threads(requested: int | None) -> int:
    """Torch CPU threads for the demo: ``requested``, else the cores that the 1-minute load average leaves
    idle, at least 1. OpenMP threads that share busy cores with other jobs mostly wait for one another: on 2
    cores at a load average of 14, a demo step took 14.7 s on 2 threads and 1.3 s on 1 (NOTES-demo.md)."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on this platform
        load = 0.0
    return max(1, min(cores, round(cores - load)))


def demo(cfg: DemoConfig, echo=print) -> dict:
    """Run the main job end to end on the bundled genome and return where each output is.

    Pretrains a causal Mamba LM (d_model 64, 2 layers, d_state 4, expand 1) for ``cfg.steps`` steps (default
    400) of 16 windows of 256 bases at a peak learning rate of 5e-3, printing a line per validation (every
    50 steps); then scores the whole validation part (the genome's last 10%) and compares it with a uniform
    model (2 bits) and with 3-mer and 5-mer Markov models fitted on the training part; then embeds the genome
    and generates 1 kb. On the CPU it uses ``cfg.threads`` threads (default: the idle cores, ``cpu_threads``).

    The outputs of all three steps are checked before the first starts, so a demo run into an earlier one's
    folder stops at once (unless ``overwrite``) instead of after pretraining.
    """
    saved = torch.get_num_threads()
    try:
        if resolve_device(cfg.device).type == "cpu":
            torch.set_num_threads(cpu_threads(cfg.threads))
        return _demo(cfg, echo)
    finally:  # the caller's setting back (tests and notebooks call this in-process)
        torch.set_num_threads(saved)


def _demo(cfg: DemoConfig, echo) -> dict:
    out = Path(cfg.out)
    fasta = lambda_phage_fasta()
    checkpoint = out / "pretrain" / "checkpoint"
    pretrain_cfg = PretrainConfig(
        data=str(fasta), out=str(out / "pretrain"), window=WINDOW, batch_size=BATCH, steps=cfg.steps, lr=LR,
        warmup_steps=min(WARMUP, max(cfg.steps // 10, 1)), val_every=min(50, cfg.steps), val_windows=64,
        val_fraction=VAL_FRACTION, max_minutes=cfg.minutes, seed=cfg.seed, device=cfg.device, d_model=D_MODEL,
        n_layer=N_LAYER, d_state=D_STATE, expand=EXPAND, overwrite=cfg.overwrite,
    )
    embed_cfg = EmbedConfig(checkpoint=str(checkpoint), fasta=str(fasta), out=str(out / "embeddings"), window=1024,
                            device=cfg.device, overwrite=cfg.overwrite)
    generate_cfg = GenerateConfig(checkpoint=str(checkpoint), out=str(out / "generated.fa"), length=1000,
                                  seed=cfg.seed, device=cfg.device, temperature=0.9, overwrite=cfg.overwrite)
    OutputPlan([], folder=out).check()  # --out itself must be (or become) a folder
    for plan in (pretrain_outputs(pretrain_cfg), embed_outputs(embed_cfg), generate_outputs(generate_cfg)):
        plan.check()
    n = torch.get_num_threads()
    threads = f" on {n} CPU thread{'s' * (n != 1)}" if resolve_device(cfg.device).type == "cpu" else ""
    echo(f"[1/3] pretraining a causal Mamba DNA model (d_model {D_MODEL}, {N_LAYER} layers, d_state {D_STATE}) on "
         f"{fasta.name} (48,502 bp) for {cfg.steps} steps of {BATCH} × {WINDOW} bases{threads}")
    with _Progress(out / "pretrain" / "train_log.tsv", cfg.steps, echo):
        result = pretrain(pretrain_cfg)
    echo(f"      {result.steps} steps in {result.seconds:.0f} s "
         f"({result.steps * BATCH * WINDOW / max(result.seconds, 1e-9):,.0f} bases/s)")
    if result.steps < cfg.steps:
        echo(f"      warning: stopped at the --minutes {cfg.minutes:g} safety cap after {result.steps} of "
             f"{cfg.steps} steps; the result below is from an under-trained model (raise --minutes)")
    train, val = split_genome(fasta)
    skip = max(MARKOV_ORDERS)  # every model is scored on the same bases: those with a full Markov context
    bits = model_bits(checkpoint, val, WINDOW, skip, resolve_device(cfg.device))
    markov = {order: markov_bits(train, val, order, skip) for order in MARKOV_ORDERS}
    best_order = min(markov, key=markov.get)
    echo(f"      on the validation part ({len(val) - skip:,} bases, the genome's last 10%): "
         + ", ".join(f"{k + 1}-mer Markov {v:.3f}" for k, v in markov.items()) + ", uniform 2.000 bits/base")
    verdict = "beats" if bits < markov[best_order] else "does NOT beat"
    echo(f"summary: the model scores {bits:.3f} bits per base on the held-out part of the genome; it {verdict} "
         f"the best Markov baseline ({best_order + 1}-mer, {markov[best_order]:.3f}) and the uniform 2.000")
    echo("[2/3] embedding the genome in 1 kb windows")
    emb = embed(embed_cfg)
    echo(f"      {emb.count} windows × {emb.dim} dims")
    echo("[3/3] generating 1 kb of DNA")
    fasta_out = generate(generate_cfg)
    outputs = {
        "checkpoint": result.checkpoint,
        "training log": result.checkpoint.parent / "train_log.tsv",
        "embeddings": emb.embeddings,
        "embedding index": emb.index,
        "generated DNA": fasta_out,
    }
    echo("outputs:")
    for what, path in outputs.items():
        echo(f"  {what:16s} {path}")
    return {"val_bits_per_base": bits, "pretrain_val_bits": result.val_bits_per_token, "steps": result.steps,
            "markov_bits": {f"{k + 1}-mer": v for k, v in markov.items()}, "seconds": result.seconds,
            **{k: str(v) for k, v in outputs.items()}}
