"""Pretraining a DNA language model on windows of a genome (causal LM)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.datasets.windows import GenomeWindowDataset
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model
from seqssm.pipelines.common import (
    atomic_path,
    autocast,
    progress,
    require_file,
    resolve_device,
    seed_everything,
)
from seqssm.pipelines.train_utils import cosine_schedule, param_groups, write_run_record
from seqssm.tokenizers import get_tokenizer


@dataclass
class PretrainConfig:
    """Everything `seqssm pretrain` takes; the Python API takes the same object."""

    fasta: str
    out: str
    objective: str = "clm"
    window: int = 1024
    batch_size: int = 16
    steps: int = 1000
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    grad_clip: float = 1.0
    val_every: int = 100
    val_windows: int = 64
    val_fraction: float = 0.1
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"
    init_from: str | None = None
    d_model: int = 128
    n_layer: int = 4
    d_state: int = 16
    expand: int = 2
    impl: str = "auto"

    def __post_init__(self):
        if self.objective not in ("clm",):
            raise InputError(f"objective {self.objective!r} is not supported; use 'clm'")
        for name in ("window", "batch_size", "steps", "val_every", "val_windows", "d_model", "n_layer"):
            if getattr(self, name) <= 0:
                raise InputError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0 < self.val_fraction < 1:
            raise InputError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")


@dataclass
class PretrainResult:
    checkpoint: Path
    val_bits_per_token: float
    uniform_bits: float
    steps: int
    seconds: float
    history: list


def causal_lm_loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over positions 1..L-1 of ids [B, L]."""
    logits = model(ids[:, :-1])
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate_bits(model, batches, device) -> float:
    """Validation loss in bits per predicted token, averaged over every predicted position."""
    model.eval()
    total, count = 0.0, 0
    for ids in batches:
        ids = ids.to(device)
        with autocast(device):
            loss = causal_lm_loss(model, ids)
        n = ids.shape[0] * (ids.shape[1] - 1)
        total += loss.item() * n
        count += n
    model.train()
    return total / count / math.log(2)


def _build_model(cfg: PretrainConfig, vocab_size: int) -> MambaLMHeadModel:
    if cfg.init_from:
        return load_model(cfg.init_from)
    config = MambaConfig(
        d_model=cfg.d_model, n_layer=cfg.n_layer, vocab_size=vocab_size, d_state=cfg.d_state, expand=cfg.expand
    )
    return MambaLMHeadModel(config, impl=cfg.impl)


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Train a causal DNA LM on random windows of ``cfg.fasta``; validate on the held-out tail of each contig.

    Writes ``{out}/checkpoint`` (config.json + model.safetensors, replaced atomically at every validation),
    ``{out}/train_log.tsv`` and ``{out}/run.json`` (resolved config, versions, results).
    """
    require_file(cfg.fasta, "FASTA file")
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    tokenizer = get_tokenizer("nucleotide")
    # +1: the model sees `window` tokens and predicts the next one at each position.
    train = GenomeWindowDataset(
        cfg.fasta, cfg.window + 1, tokenizer=tokenizer, num_samples=cfg.steps * cfg.batch_size,
        seed=cfg.seed, split="train", val_fraction=cfg.val_fraction,
    )
    val = GenomeWindowDataset(
        cfg.fasta, cfg.window + 1, tokenizer=tokenizer, num_samples=cfg.val_windows,
        seed=cfg.seed + 1, split="val", val_fraction=cfg.val_fraction,
    )
    train_loader = torch.utils.data.DataLoader(train, batch_size=cfg.batch_size, shuffle=False)
    val_batches = list(torch.utils.data.DataLoader(val, batch_size=cfg.batch_size))

    model = _build_model(cfg, tokenizer.vocab_size).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.steps)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train_log.tsv"
    log_path.write_text("step\ttrain_loss\tval_bits_per_token\tlr\tseconds\n")

    def validate_and_save(step: int, train_loss: float) -> float:
        bits = evaluate_bits(model, val_batches, device)
        with atomic_path(out / "checkpoint") as tmp:
            model.save_pretrained(tmp)
        elapsed = time.perf_counter() - start
        history.append({"step": step, "train_loss": train_loss, "val_bits": bits, "seconds": elapsed})
        with log_path.open("a") as f:
            f.write(f"{step}\t{train_loss:.4f}\t{bits:.4f}\t{scheduler.get_last_lr()[0]:.3g}\t{elapsed:.1f}\n")
        return bits

    history: list = []
    start = time.perf_counter()
    deadline = None if cfg.max_minutes is None else start + 60 * cfg.max_minutes
    bar = progress(total=cfg.steps, desc="pretrain", unit="step")
    step, running, bits = 0, float("nan"), float("nan")
    model.train()
    for ids in train_loader:
        ids = ids.to(device)
        with autocast(device):
            loss = causal_lm_loss(model, ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{running:.3f}", val_bits=f"{bits:.3f}")
        out_of_time = deadline is not None and time.perf_counter() > deadline
        if step % cfg.val_every == 0 or step == cfg.steps or out_of_time:
            bits = validate_and_save(step, running)
        if step >= cfg.steps or out_of_time:
            break
    bar.close()
    seconds = time.perf_counter() - start
    result = PretrainResult(
        checkpoint=out / "checkpoint", val_bits_per_token=bits, uniform_bits=math.log2(4), steps=step,
        seconds=seconds, history=history,
    )
    write_run_record(out, cfg, {
        "result": {"val_bits_per_base": bits, "steps": step, "seconds": round(seconds, 1)}, "history": history,
    })
    return result
