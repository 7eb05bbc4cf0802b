"""Every architecture through the pipelines, end to end on the CPU at tiny sizes: pretrain -> checkpoint ->
load -> embed, generate (causal), score, finetune; and the paths that cannot serve one refuse it clearly."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from Bio import SeqIO

from seqssm.data import lambda_phage_fasta
from seqssm.errors import InputError
from seqssm.models import load_model
from seqssm.pipelines.configs_score import ScoreConfig
from seqssm.pipelines.configs_sequence import EmbedConfig, GenerateConfig
from seqssm.pipelines.configs_train import FinetuneConfig, PretrainConfig
from seqssm.pipelines.embed import embed
from seqssm.pipelines.finetune import finetune
from seqssm.pipelines.generate import generate
from seqssm.pipelines.pretrain import pretrain
from seqssm.pipelines.score import score
from seqssm.pipelines.stream_embed import StreamEmbedConfig, stream_embed
from seqssm.tokenizers import get_tokenizer

ARCHS = {
    "mamba": {},
    "mamba2": {"mixer": "mamba2", "expand": 2},  # expand · d_model a multiple of headdim 32
    "s4d": {"mixer": "s4d"},
    "hybrid": {"layers": "MA"},
    "moe": {"moe_every": 1, "n_experts": 2},
}
TINY = dict(d_model=16, n_layer=2, d_state=4, expand=1, device="cpu", impl="ref")


def _fasta(path, n=3, length=40, seed=0):
    rng = random.Random(seed)
    path.write_text("".join(f">r{i}\n{''.join(rng.choice('ACGT') for _ in range(length))}\n" for i in range(n)))
    return str(path)


def _records(path) -> dict[str, str]:
    return {r.id: str(r.seq) for r in SeqIO.parse(path, "fasta")}


def _table(path, n=16, seed=0):
    rng = random.Random(seed)
    rows = ["sequence\tlabel\tid"]
    for i in range(n):
        seq = "".join(rng.choice("ACGT") for _ in range(20))
        rows.append(f"{seq[:4] + 'GGGGGG' + seq[4:] if i % 2 else seq}\t{i % 2}\ts{i}")
    path.write_text("\n".join(rows) + "\n")
    return str(path)


@pytest.mark.parametrize("arch", ARCHS)
def test_causal_architecture_end_to_end(arch, tmp_path):
    pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "lm"), window=32, batch_size=2,
                            steps=1, val_every=1, val_windows=2, warmup_steps=1, **{**TINY, **ARCHS[arch]}))
    checkpoint = tmp_path / "lm" / "checkpoint"
    model = load_model(checkpoint)
    assert {k: getattr(model.config, k) for k in ARCHS[arch]} == ARCHS[arch]
    fasta = _fasta(tmp_path / "x.fa")
    embed(EmbedConfig(checkpoint=str(checkpoint), fasta=fasta, out=str(tmp_path / "emb"), device="cpu"))
    vectors = np.load(tmp_path / "emb" / "embeddings.npy")
    assert vectors.shape == (3, 16) and np.isfinite(vectors).all()
    generate(GenerateConfig(checkpoint=str(checkpoint), out=str(tmp_path / "g.fa"), length=12, prompt="ACGT",
                            device="cpu"))
    sample = "".join((tmp_path / "g.fa").read_text().splitlines()[1:])
    assert len(sample) == 12 and set(sample) <= set("ACGT")  # the generated bases, after the prompt
    result = finetune(FinetuneConfig(data=_table(tmp_path / "t.tsv"), out=str(tmp_path / "ft"),
                                     init_from=str(checkpoint), epochs=1, batch_size=8, warmup_steps=1,
                                     **{k: v for k, v in TINY.items() if k not in ("d_model", "n_layer", "d_state",
                                                                                  "expand")}))
    assert result.steps >= 1
    record = json.loads((tmp_path / "ft" / "run.json").read_text())
    assert ("expert_use" in record) == (arch == "moe")
    header = (tmp_path / "ft" / "train_log.tsv").read_text().splitlines()[0]
    assert ("moe0_balance" in header) == (arch == "moe")
    # `seqssm score` streams causal models through seqssm.streaming (sequences longer than chunk_size).
    scored = score(ScoreConfig(checkpoint=str(checkpoint), input=fasta, out=str(tmp_path / "s.tsv"), device="cpu",
                               chunk_size=16))
    assert scored.sequences == 3 and 0 < scored.bits_per_token < 10
    whole = score(ScoreConfig(checkpoint=str(checkpoint), input=fasta, out=str(tmp_path / "w.tsv"), device="cpu",
                              chunk_size=64))
    assert whole.bits_per_token == pytest.approx(scored.bits_per_token, rel=1e-5)  # streamed = one pass
    streamed = stream_embed(StreamEmbedConfig(checkpoint=str(checkpoint), source=fasta, record="r1",
                                              chunk_size=7, device="cpu", out=str(tmp_path / "stream")))
    with torch.no_grad():
        ids = torch.as_tensor(get_tokenizer(model.config.tokenizer).encode(_records(fasta)["r1"]))[None]
        expected = model.eval().backbone(ids)[0].numpy()
    np.testing.assert_allclose(np.load(streamed.embeddings).astype(np.float32), expected, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("arch", ["mamba2", "hybrid", "moe"])
def test_bidirectional_architecture_end_to_end(arch, tmp_path):
    pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "lm"), window=32, batch_size=2,
                            steps=1, val_every=1, val_windows=2, warmup_steps=1, objective="mlm",
                            bidirectional=True, **{**TINY, **ARCHS[arch]}))
    checkpoint = tmp_path / "lm" / "checkpoint"
    assert load_model(checkpoint).config.bidirectional
    fasta = _fasta(tmp_path / "x.fa", n=2, length=24)
    embed(EmbedConfig(checkpoint=str(checkpoint), fasta=fasta, out=str(tmp_path / "emb"), device="cpu"))
    assert np.isfinite(np.load(tmp_path / "emb" / "embeddings.npy")).all()
    with pytest.raises(InputError, match="causal"):
        generate(GenerateConfig(checkpoint=str(checkpoint), out=str(tmp_path / "g.fa"), length=4, device="cpu"))


def test_chunked_training_refuses_attention(tmp_path):
    with pytest.raises(InputError, match="--max-tokens-per-micro-batch"):
        pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "lm"), window=32, batch_size=2,
                                steps=1, val_every=1, val_windows=2, max_tokens_per_micro_batch=16, **TINY,
                                layers="MA"))
