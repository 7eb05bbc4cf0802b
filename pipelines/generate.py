"""Sampling DNA (or, from a byte-level model, raw bytes) from a causal checkpoint with the recurrent cache
(constant memory per token)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from Bio.Seq import Seq
from Bio.SeqIO import write as write_fasta
from Bio.SeqRecord import SeqRecord

from seqssm.datasets.fasta import iter_fasta
from seqssm.errors import InputError
from seqssm.pipelines.common import (
    FILE,
    LM,
    OutputPlan,
    atomic_path,
    checkpoint_modality,
    load_checked,
    require_file,
    require_finite,
    resolve_device,
    seed_everything,
)
from seqssm.pipelines.configs_sequence import GenerateConfig
from seqssm.pipelines.decoding import Decoder
from seqssm.pipelines.sampling import symbol_mask
from seqssm.tokenizers import ByteTokenizer, NucleotideTokenizer, get_tokenizer

# N and the IUPAC ambiguity codes; the nucleotide vocabulary holds them all as one id, N.
_AMBIGUOUS = "NRYSWKMBDHV"


def dna_symbols(tokenizer, allow_ambiguous: bool = False) -> list[int]:
    """Token ids DNA generation may draw: A, C, G, T, plus N and the IUPAC ambiguity codes the vocabulary has
    when ``allow_ambiguous``; never specials. Both cases for a byte tokenizer (lowercase is soft-masked DNA).
    """
    letters = "ACGT" + (_AMBIGUOUS if allow_ambiguous else "")
    if isinstance(tokenizer, ByteTokenizer):
        letters += letters.lower()
    return sorted({int(i) for i in tokenizer.encode(letters)} - set(tokenizer.special_ids))


def _prompt_text(cfg: GenerateConfig) -> str | bytes:
    if cfg.prompt_file:
        from seqssm.datasets.byte_windows import read_bytes

        return read_bytes(require_file(cfg.prompt_file, "prompt file (--prompt-file)")).tobytes()
    if cfg.prompt_fasta:
        for _, seq in iter_fasta(require_file(cfg.prompt_fasta, "prompt FASTA")):
            return seq
    return cfg.prompt or ""


def generate_outputs(cfg: GenerateConfig) -> OutputPlan:
    """The FASTA file ``generate`` writes and the inputs it must never replace."""
    return OutputPlan([(cfg.out, FILE)], inputs=[("checkpoint", cfg.checkpoint), ("prompt FASTA", cfg.prompt_fasta),
                                                 ("prompt file", cfg.prompt_file)], overwrite=cfg.overwrite)


@torch.no_grad()
def generate(cfg: GenerateConfig) -> Path:
    """Sample ``num_sequences`` sequences of ``length`` bases after the prompt; write them to a FASTA file.

    The prompt is consumed in one parallel pass (prefill); each new base is one recurrent step, so memory
    per generated base is constant whatever the length. Only A, C, G and T are drawn, unless
    ``allow_ambiguous`` also admits N (and, for a byte vocabulary, the IUPAC ambiguity letters). Returns the
    FASTA path. A byte-level checkpoint (the modality is the checkpoint's; ``cfg.modality`` may only agree):
    ``length`` bytes of any value after the prompt, written raw to ``out``.
    """
    modality = checkpoint_modality(cfg.checkpoint, "generate", given=cfg.modality, takes=("dna", "byte"), kind=LM,
                                   causal=True)
    if cfg.modality is None:
        cfg = dataclasses.replace(cfg, modality=modality)  # runs the config's checks for this modality
    raw = modality == "bytes"
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    generate_outputs(cfg).check()
    model = load_checked(cfg.checkpoint, device).eval()
    tokenizer = get_tokenizer(model.config.tokenizer)
    if not isinstance(tokenizer, ByteTokenizer if raw else NucleotideTokenizer):
        raise InputError(f"checkpoint {cfg.checkpoint!r} loads with tokenizer {model.config.tokenizer!r}, not the "
                         f"{'byte' if raw else 'nucleotide'} one its files name; save it again with save_pretrained")
    if model.config.bidirectional:
        raise InputError(f"checkpoint {cfg.checkpoint!r} is a bidirectional (masked-LM) model; generation needs "
                         "a causal one")
    # Draw only bases (A C G T; N too with allow_ambiguous), or any byte value; never specials or the
    # vocabulary's padding rows.
    symbols = range(256) if raw else dna_symbols(tokenizer, cfg.allow_ambiguous)
    allowed = symbol_mask(model.config.vocab_size, symbols)

    prompt = _prompt_text(cfg)
    prompt_ids = torch.as_tensor(tokenizer.encode(prompt), dtype=torch.long)
    # One decoding loop for everything (CUDA graph on a GPU); an empty prompt draws the first base uniformly.
    decoder = Decoder(model, cfg.num_sequences, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                      allowed=allowed)
    result = decoder.decode([prompt_ids] * cfg.num_sequences, cfg.length, cfg.seed, desc="generate", unit="base")
    require_finite(result.logprobs, f"checkpoint {cfg.checkpoint}", "the sampled bases")
    out_ids = result.tokens
    out = Path(cfg.out)
    if raw:
        with atomic_path(out) as tmp:
            tmp.write_bytes(tokenizer.decode_bytes(out_ids[0]))
        return out

    records = [
        SeqRecord(Seq(tokenizer.decode(row)), id=f"{cfg.name}_{i + 1}", description=(
            f"length={cfg.length} temperature={cfg.temperature} top_k={cfg.top_k} top_p={cfg.top_p} "
            f"seed={cfg.seed} prompt_length={len(prompt)}"))
        for i, row in enumerate(out_ids.numpy())
    ]
    with atomic_path(out) as tmp:
        write_fasta(records, tmp, "fasta")
    return out
