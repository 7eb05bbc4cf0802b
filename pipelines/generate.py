"""Sampling DNA from a causal checkpoint with the recurrent cache (constant memory per token)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from Bio.Seq import Seq
from Bio.SeqIO import write as write_fasta
from Bio.SeqRecord import SeqRecord

from seqssm.datasets.fasta import iter_fasta
from seqssm.errors import InputError
from seqssm.models import load_model
from seqssm.pipelines.common import atomic_path, progress, require_file, resolve_device, seed_everything
from seqssm.tokenizers import get_tokenizer


@dataclass
class GenerateConfig:
    """Everything `seqssm generate` takes; the Python API takes the same object."""

    checkpoint: str
    out: str
    length: int = 1000
    prompt: str | None = None
    prompt_fasta: str | None = None
    num_sequences: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    device: str = "auto"
    name: str = "seqssm_sample"

    def __post_init__(self):
        if self.length <= 0 or self.num_sequences <= 0:
            raise InputError("--length and --num-sequences must be positive")
        check_sampling(self.temperature, self.top_k, self.top_p)
        if self.prompt and self.prompt_fasta:
            raise InputError("give either --prompt or --prompt-fasta, not both")


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """The sampling options every generator takes, checked once here."""
    if temperature <= 0:
        raise InputError(f"--temperature must be > 0, got {temperature}")
    if not 0 < top_p <= 1:
        raise InputError(f"--top-p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise InputError(f"--top-k must be >= 0 (0 = off), got {top_k}")


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    allowed: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw one token per row from logits [B, V] with temperature, top-k and nucleus (top-p) filtering.

    ``allowed`` [V] bool restricts the draw (e.g. to bases, never pad or mask). Returns ids [B] int64.
    """
    logits = logits.float() / temperature
    if allowed is not None:
        logits = logits.masked_fill(~allowed.to(logits.device), float("-inf"))
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # Drop a token when the mass before it already reaches top_p; the most likely token always stays.
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def _prompt_text(cfg: GenerateConfig) -> str:
    if cfg.prompt_fasta:
        for _, seq in iter_fasta(require_file(cfg.prompt_fasta, "prompt FASTA")):
            return seq
    return cfg.prompt or ""


@torch.no_grad()
def generate(cfg: GenerateConfig) -> Path:
    """Sample ``num_sequences`` sequences of ``length`` bases after the prompt; write them to a FASTA file.

    The prompt is consumed in one parallel pass (prefill); each new base is one recurrent step, so memory
    per generated base is constant whatever the length. Returns the FASTA path.
    """
    device = resolve_device(cfg.device)
    generator = seed_everything(cfg.seed)
    model = load_model(cfg.checkpoint).to(device).eval()
    tokenizer = get_tokenizer(model.config.tokenizer)
    if model.config.bidirectional:
        raise InputError(f"checkpoint {cfg.checkpoint!r} is a bidirectional (masked-LM) model; generation needs "
                         "a causal one")
    # Draw only real symbols (bases, or bytes), never pad/mask/bos/eos/unk or the vocabulary's padding rows.
    allowed = torch.tensor([i not in tokenizer.special_ids for i in range(model.config.vocab_size)])
    allowed[tokenizer.vocab_size:] = False

    prompt = _prompt_text(cfg)
    batch = cfg.num_sequences
    if prompt:
        prompt_ids = torch.as_tensor(tokenizer.encode(prompt), device=device).expand(batch, -1).contiguous()
        logits, cache = model.prefill(prompt_ids)
        logits = logits[:, -1]
    else:
        # No context: the first base is drawn uniformly from the sampleable bases.
        cache = model.allocate_cache(batch, device=device)
        logits = torch.zeros(batch, model.config.vocab_size, device=device)
    out_ids = torch.empty(batch, cfg.length, dtype=torch.long)
    for t in progress(range(cfg.length), desc="generate", unit="base"):
        nxt = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, allowed, generator)
        out_ids[:, t] = nxt.cpu()
        if t + 1 < cfg.length:
            logits = model.step(nxt, cache)

    records = [
        SeqRecord(Seq(tokenizer.decode(row)), id=f"{cfg.name}_{i + 1}", description=(
            f"length={cfg.length} temperature={cfg.temperature} top_k={cfg.top_k} top_p={cfg.top_p} "
            f"seed={cfg.seed} prompt_length={len(prompt)}"))
        for i, row in enumerate(out_ids.numpy())
    ]
    out = Path(cfg.out)
    with atomic_path(out) as tmp:
        write_fasta(records, tmp, "fasta")
    return out
