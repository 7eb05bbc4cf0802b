"""DNA read in patches of P bases (seqssm.models.frontends.DnaPatchEmbedding, `finetune --patch-size`).

The one-hot patches against a loop over positions, the embedding against a sum of learnt vectors per (offset,
base), rows batched equal rows alone whatever their padding holds, gradients into the front end, the checkpoint
round trip, ``--patch-size auto`` chosen by the input lengths, finetune → predict / probe / embed on a patched
classifier, and the refusals (token-level, cls, RC-equivariant, self-pretraining, per-base embeddings).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from seqssm.config import MambaConfig
from seqssm.datasets.labelled import Example
from seqssm.embedder import Embedder
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.models.frontends import DnaPatchEmbedding, dna_patches
from seqssm.models.heads import SequenceClassifier, TaskConfig, load_classifier
from seqssm.pipelines.classify import TaskCollate
from seqssm.pipelines.configs_labelled import PredictConfig, ProbeConfig
from seqssm.pipelines.configs_train import FinetuneConfig
from seqssm.pipelines.finetune import finetune
from seqssm.pipelines.finetune_setup import AUTO_DNA_PATCH, AUTO_DNA_PATCH_OVER, dna_patch_of, fixed_length
from seqssm.pipelines.predict import predict
from seqssm.pipelines.probe import probe

V = 10  # the nucleotide tokenizer's vocabulary
TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "expand": 1, "device": "cpu", "impl": "chunked",
        "warmup_steps": 2, "batch_size": 8}


def backbone(**kw) -> MambaLMHeadModel:
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "d_state": 4, "expand": 2, "bidirectional": True,
                            "tokenizer": "nucleotide", "vocab_size": V, **kw})
    return MambaLMHeadModel(config, impl="ref")


def padded_ids(lengths, seed=0, fill=7):
    """Random base ids [B, N] right-padded with ``fill`` (not the pad id: padding must not matter) and the mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), max(lengths)), fill, dtype=torch.long)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(0, 5, (n,), generator=g)
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    return ids, mask


def test_dna_patches_match_a_loop_over_positions():
    lengths, P = [23, 8, 1, 17], 4
    ids, mask = padded_ids(lengths)
    patches, tokens = dna_patches(ids, mask, P, V)
    assert patches.shape == (4, 6, P * V) and patches.dtype == torch.float32
    assert tokens.sum(1).tolist() == [-(-n // P) for n in lengths]
    expected = torch.zeros_like(patches)
    for b, n in enumerate(lengths):
        for i in range(n):
            expected[b, i // P, (i % P) * V + int(ids[b, i])] = 1.0
    torch.testing.assert_close(patches, expected, rtol=0, atol=0)


def test_patch_embedding_is_a_sum_of_vectors_per_offset_and_base():
    torch.manual_seed(0)
    P, D = 3, 5
    emb = DnaPatchEmbedding(P, V, D)
    ids, mask = padded_ids([10, 4])
    out, tokens = emb(ids, mask)
    weight, bias = emb.proj.weight.detach(), emb.proj.bias.detach()  # [D, P * V], [D]
    for b, n in enumerate([10, 4]):
        for t in range(-(-n // P)):
            want = bias + sum(weight[:, j * V + int(ids[b, t * P + j])] for j in range(P) if t * P + j < n)
            torch.testing.assert_close(out[b, t].detach(), want, rtol=1e-5, atol=1e-6)
    assert tokens.tolist() == [[True] * 4, [True, True, False, False]]


def test_a_patched_classifier_gives_each_row_what_it_gives_alone_and_trains_its_front_end():
    torch.manual_seed(0)
    model = SequenceClassifier(backbone(), TaskConfig(classes=["a", "b", "c"], patch_size=4, pooling="mean"))
    lengths = [29, 13, 4, 30]
    ids, mask = padded_ids(lengths, seed=1)
    logits = model(ids, mask)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(logits[b], model(ids[b:b + 1, :n])[0], rtol=1e-4, atol=1e-5)
    logits.sum().backward()
    assert model.patch.proj.weight.grad is not None and model.patch.proj.weight.grad.abs().sum() > 0
    assert model.lm.backbone.embedding.weight.grad is None  # the per-base embedding is not used
    assert {id(p) for p in model.patch.parameters()} <= {id(p) for p in model.head_parameters()}


def test_a_patched_classifier_round_trips_through_its_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = SequenceClassifier(backbone(), TaskConfig(classes=["a", "b"], patch_size=8, pooling="last")).eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "task.json").read_text())["patch_size"] == 8
    again = load_classifier(tmp_path / "ckpt").eval()
    ids, mask = padded_ids([40, 17], seed=2)
    torch.testing.assert_close(again(ids, mask), model(ids, mask), rtol=0, atol=0)


def test_flatten_pooling_counts_patches():
    model = SequenceClassifier(backbone(), TaskConfig(classes=["a", "b"], patch_size=4, pooling="flatten", length=6))
    ids, _ = padded_ids([21, 21])  # 21 bases: 6 patches, the last of one base
    assert model(ids).shape == (2, 2)
    with pytest.raises(InputError, match="exactly 6 tokens"):
        model(padded_ids([30, 30])[0])


def test_task_config_refuses_patches_where_there_is_no_token_per_patch():
    assert TaskConfig(classes=["a", "b"], patch_size=1).patch_size is None  # one base a token
    with pytest.raises(InputError, match="token-level"):
        TaskConfig(classes=["a", "b"], patch_size=4, level="token")
    with pytest.raises(InputError, match="cls pooling"):
        TaskConfig(classes=["a", "b"], patch_size=4, pooling="cls")
    with pytest.raises(InputError, match="patch_size must be a positive integer"):
        TaskConfig(classes=["a", "b"], patch_size=0)
    with pytest.raises(InputError, match="RC-equivariant"):
        SequenceClassifier(backbone(rc_equivariant=True), TaskConfig(classes=["a", "b"], patch_size=4))


def test_collate_pads_patched_dna_to_whole_patches():
    task = TaskConfig(classes=["a", "b"], patch_size=8)
    batch = TaskCollate(task, pad_tokens=4)([Example("x", "ACGTA", "a"), Example("y", "A" * 40, "b")])
    assert batch["input_ids"].shape == (2, 64)  # 40 bases → a multiple of 4 tokens × 8 bases


def splits(*lengths):
    return {"train": [Example(f"r{i}", "A" * n, "x") for i, n in enumerate(lengths)], "val": [], "test": []}


def test_patch_size_auto_is_chosen_by_the_median_length():
    auto = FinetuneConfig(data="d", out="o")
    long, short = AUTO_DNA_PATCH_OVER + 1, AUTO_DNA_PATCH_OVER
    assert dna_patch_of(auto, splits(long, long, 81), "mean") == AUTO_DNA_PATCH
    assert dna_patch_of(auto, splits(long, short, short), "mean") is None
    assert dna_patch_of(auto, splits(81, 81), "flatten") is None
    assert dna_patch_of(FinetuneConfig(data="d", out="o", patch_size=1), splits(long), "mean") is None
    assert dna_patch_of(FinetuneConfig(data="d", out="o", patch_size=4), splits(81), "flatten") == 4
    for cfg, pooling in ((FinetuneConfig(data="d", out="o", level="token"), "mean"),
                         (FinetuneConfig(data="d", out="o", rc_equivariant=True), "mean"),
                         (auto, "cls"), (FinetuneConfig(data="d", out="o", modality="audio"), "mean")):
        assert dna_patch_of(cfg, splits(long, long), pooling) is None
    assert fixed_length(FinetuneConfig(data="d", out="o", pooling="flatten"), splits(81, 81), None, 4) == 21


def long_table(path, n=40, length=600, seed=0):
    """Two classes of long rows: class 1 is GC-rich, class 0 AT-rich (a composition signal a patch sees)."""
    rng = random.Random(seed)
    lines = ["sequence\tlabel\tid"]
    for i in range(n):
        label = i % 2
        bases = "GGCCAT" if label else "AATTGC"
        lines.append(f"{''.join(rng.choice(bases) for _ in range(length + rng.randint(0, 60)))}\t{label}\tr{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_finetune_reads_long_dna_in_patches_and_predict_probe_and_embed_follow(tmp_path, capsys):
    table = long_table(tmp_path / "long.tsv")
    result = finetune(FinetuneConfig(data=str(table), out=str(tmp_path / "run"), epochs=2, lr=5e-3, **TINY))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["task"]["patch_size"] == AUTO_DNA_PATCH and run["config"]["patch_size"] == AUTO_DNA_PATCH
    assert run["task"]["pooling"] == "mean"
    model = load_classifier(result.checkpoint)
    assert isinstance(model.patch, DnaPatchEmbedding)

    preds = tmp_path / "preds.tsv"
    predict(PredictConfig(checkpoint=str(result.checkpoint), data=str(table), out=str(preds), device="cpu"))
    rows = preds.read_text().splitlines()
    assert len(rows) == 41 and rows[0].startswith("id\tpredicted")
    test_rows = (tmp_path / "run" / "test_predictions.tsv").read_text().splitlines()[1:]
    by_id = {line.split("\t")[0]: line.split("\t")[2:4] for line in rows[1:]}
    for line in test_rows:  # predict reproduces finetune's own test probabilities
        cells = line.split("\t")
        np.testing.assert_allclose(np.float64(cells[2:4]), np.float64(by_id[cells[0]]), atol=2e-6)

    probed = probe(ProbeConfig(checkpoint=str(result.checkpoint), data=str(table), folds=2, device="cpu"))
    assert probed.n == 40 and probed.dim == 16
    emb = Embedder(result.checkpoint, device="cpu")
    assert emb.embed_sequences(["ACGT" * 100, "GGCC" * 30]).shape == (2, 16)
    with pytest.raises(InputError, match="patches of 8 bases"):
        emb.embed_sequences(["ACGT" * 100], per_position=True)

    from seqssm.pipelines.common import check_checkpoint

    with pytest.raises(InputError, match="reads DNA in patches of 8 bases.*seqssm embed"):
        check_checkpoint(result.checkpoint, "embed")


def test_finetune_refuses_self_pretraining_with_patches(tmp_path):
    table = long_table(tmp_path / "long.tsv", n=20)
    with pytest.raises(InputError, match="--patch-size 1"):
        finetune(FinetuneConfig(data=str(table), out=str(tmp_path / "run"), epochs=1, self_pretrain_steps=2, **TINY))
