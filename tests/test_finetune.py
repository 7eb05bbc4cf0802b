"""Classification heads (seqssm.models.heads) and fine-tuning (seqssm.pipelines.finetune).

Pooling and patching against row-by-row references, padded batches against rows run alone, RC invariance,
losses against hand formulas, checkpoint round trips, and tiny end-to-end runs: written files, the kept
checkpoint really being the best one, reproducibility, freezing, early stopping, multi-label, token level,
BED + genome and audio sources, bad inputs.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight
from tiny_data import tone_clips

from seqssm.config import MambaConfig
from seqssm.datasets.labelled import Example
from seqssm.datasets.predictions import read_history, read_predictions
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model, reverse_complement_ids
from seqssm.models.heads import (
    IGNORE_INDEX,
    SequenceClassifier,
    TaskConfig,
    classification_loss,
    load_classifier,
    patch_frames,
    pool_hidden,
    pool_hidden_ref,
)
from seqssm.pipelines.classify import PAD_TOKENS, TaskCollate, class_weights, encode_targets, pad_tokens_for
from seqssm.pipelines.finetune import FinetuneConfig, finetune
from seqssm.pipelines.finetune_setup import class_weights_of, imbalance, load_data, metric_of
from seqssm.pipelines.finetune_setup import loaders as finetune_loaders
from seqssm.pipelines.finetune_setup import task as finetune_task
from seqssm.pipelines.metrics import compute_metrics, evaluate_split
from seqssm.tokenizers import NucleotideTokenizer

TOK = NucleotideTokenizer()
TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "expand": 1, "device": "cpu", "impl": "chunked",
        "warmup_steps": 2}


def lm(bidirectional=True, rc=False, d_model=16, tokenizer="nucleotide", vocab=10, seed=0):
    torch.manual_seed(seed)
    config = MambaConfig(d_model=d_model, n_layer=2, vocab_size=vocab, d_state=4, expand=1,
                         bidirectional=bidirectional, rc_equivariant=rc, tokenizer=tokenizer,
                         sample_rate=8000 if tokenizer != "nucleotide" else None)
    return MambaLMHeadModel(config, impl="chunked")


def dna_task(**kw):
    return TaskConfig(**{"classes": ["a", "b", "c"], **kw})


def audio_task(**kw):
    return TaskConfig(**{"classes": ["x", "y"], "modality": "audio", "patch_size": 4, "sample_rate": 8000, **kw})


def random_dna(rng, n):
    return "".join(rng.choice("ACGT") for _ in range(n))


def padded(lengths, rng=None):
    rng = rng or random.Random(0)
    seqs = [random_dna(rng, n) for n in lengths]
    ids, mask = TOK.encode_batch(seqs)
    return seqs, torch.from_numpy(ids), torch.from_numpy(mask)


def write_table(path, rows, header=("sequence", "label", "id")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def motif_table(path, n=48, seed=0):
    """Class 1 sequences carry GGGGGG; lengths 15-30, so batches are padded."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        seq = random_dna(rng, rng.randint(15, 30))
        if i % 2:
            seq = seq[:4] + "GGGGGG" + seq[4:]
        rows.append((seq, str(i % 2), f"s{i}"))
    return write_table(path, rows)


# ---------------------------------------------------------------- pooling and patching


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_pool_hidden_matches_row_reference_and_gradients(pooling):
    lengths = [7, 1, 13, 5]
    hidden = torch.randn(4, 13, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.arange(13)[None] < torch.tensor(lengths)[:, None]
    fast = pool_hidden(hidden, mask, pooling)
    ref = pool_hidden_ref(hidden, mask, pooling)
    torch.testing.assert_close(fast, ref)
    weights = torch.randn_like(fast)
    (g_fast,) = torch.autograd.grad((fast * weights).sum(), hidden)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), hidden)
    torch.testing.assert_close(g_fast, g_ref)
    assert g_fast[~mask].abs().sum() == 0  # padding never reaches the pooled vector


def test_flatten_pooling_reference_and_checks():
    hidden = torch.randn(3, 5, 4)
    torch.testing.assert_close(pool_hidden(hidden, torch.ones(3, 5, dtype=torch.bool), "flatten"),
                               pool_hidden_ref(hidden, None, "flatten"))
    with pytest.raises(InputError, match="no padding"):
        pool_hidden(hidden, torch.arange(5)[None] < torch.tensor([[5], [4], [5]]), "flatten")
    with pytest.raises(InputError, match="fixed input length"):
        dna_task(pooling="flatten")
    model = SequenceClassifier(lm(True), dna_task(pooling="flatten", length=6)).eval()
    assert model.head.in_features == 6 * 16
    ids = padded([6, 6])[1]
    assert model(ids).shape == (2, 3)
    with pytest.raises(InputError, match="exactly 6 tokens"):
        model(padded([7])[1])


def test_pool_hidden_without_mask_and_empty_row():
    hidden = torch.randn(2, 5, 3)
    torch.testing.assert_close(pool_hidden(hidden, None, "mean"), hidden.mean(1))
    torch.testing.assert_close(pool_hidden(hidden, None, "last"), hidden[:, -1])
    with pytest.raises(InputError, match="row 1 has no real position"):
        pool_hidden(hidden, torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]).bool(), "mean")
    with pytest.raises(InputError, match="pooling must be one of"):
        pool_hidden(hidden, None, "max")


def test_patch_frames_against_loop_reference():
    lengths, p = [11, 4, 16], 4
    wave = torch.randn(3, 16)
    mask = torch.arange(16)[None] < torch.tensor(lengths)[:, None]
    frames, token_mask = patch_frames(wave, mask, p, normalize=True)
    assert frames.shape == (3, 4, 4)
    for b, n in enumerate(lengths):
        real = wave[b, :n] / wave[b, :n].abs().max()
        row = torch.zeros(16)
        row[:n] = real
        torch.testing.assert_close(frames[b], row.view(4, 4))
        assert token_mask[b].tolist() == [t * p < n for t in range(4)]
    # What the padding held does not matter.
    garbage = wave.masked_fill(~mask, 99.0)
    torch.testing.assert_close(patch_frames(garbage, mask, p)[0], frames)
    # T not a multiple of P: the last frame is zero-padded.
    frames, token_mask = patch_frames(torch.ones(1, 5), None, 4, normalize=False)
    assert frames.shape == (1, 2, 4) and frames[0, 1].tolist() == [1, 0, 0, 0] and token_mask.all()


# ---------------------------------------------------------------- the classifier


@pytest.mark.parametrize("pooling,bidirectional,level", [
    ("mean", True, "sequence"), ("cls", True, "sequence"), ("last", False, "sequence"), ("mean", False, "token"),
])
def test_padded_batch_equals_rows_alone(pooling, bidirectional, level):
    model = SequenceClassifier(lm(bidirectional), dna_task(pooling=pooling, level=level)).eval()
    rng = random.Random(1)
    seqs = [random_dna(rng, n) for n in (9, 3, 17)]
    batch = TaskCollate(model.task)([Example(f"r{i}", s, None) for i, s in enumerate(seqs)])
    logits = model(batch["input_ids"], batch["attention_mask"])
    for b, seq in enumerate(seqs):
        alone = TaskCollate(model.task)([Example("r", seq, None)])
        single = model(alone["input_ids"], alone["attention_mask"])[0]
        n = alone["input_ids"].shape[1]
        got = logits[b, :n] if level == "token" else logits[b]
        torch.testing.assert_close(got, single, atol=1e-5, rtol=1e-5)


def test_padded_batch_gradients_equal_sum_over_rows():
    model = SequenceClassifier(lm(True), dna_task()).eval()
    seqs, ids, mask = padded([6, 11, 2])
    targets = torch.tensor([0, 2, 1])
    F.cross_entropy(model(ids, mask), targets, reduction="sum").backward()
    batch_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    for b, seq in enumerate(seqs):
        row = torch.from_numpy(TOK.encode(seq))[None]
        F.cross_entropy(model(row, torch.ones_like(row, dtype=torch.bool)), targets[b:b + 1],
                        reduction="sum").backward()
    assert batch_grads.keys() >= {"head.weight", "head.bias", "lm.backbone.embedding.weight"}
    for name, grad in batch_grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, atol=1e-5, rtol=1e-4)


def test_audio_classifier_padding_and_patches():
    model = SequenceClassifier(lm(True, tokenizer="mulaw8", vocab=256), audio_task()).eval()
    lengths = [10, 23, 16]
    waves = [torch.randn(n) * 0.1 for n in lengths]
    batch = TaskCollate(model.task, pad_tokens=1)([Example(f"c{i}", w, None) for i, w in enumerate(waves)])
    assert batch["input_values"].shape == (3, 24)  # whole patches of 4
    logits = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
    for b, w in enumerate(waves):
        torch.testing.assert_close(logits[b], model(input_values=w[None])[0], atol=1e-5, rtol=1e-5)
    hidden, mask = model.hidden(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
    assert hidden.shape == (3, 6, 16) and mask.sum(1).tolist() == [3, 6, 4]
    with pytest.raises(InputError, match="audio classifier"):
        model(torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize("frontend", ["raw", "logmel"])
def test_rounded_batch_lengths_keep_every_rows_output(frontend):
    """The collate rounds L up to PAD_TOKENS tokens (one Triton compile per kernel, tests/test_compile_keys.py):
    logits and the real positions' hidden states are those of the unrounded batch."""
    extra = {"frontend": "logmel", "n_mels": 8} if frontend == "logmel" else {}
    model = SequenceClassifier(lm(True, tokenizer="mulaw8", vocab=256), audio_task(patch_size=8, **extra)).eval()
    waves = [torch.randn(n) * 0.1 for n in (10, 91, 57, 130)]
    examples = [Example(f"c{i}", w, None) for i, w in enumerate(waves)]
    plain, rounded = (TaskCollate(model.task, pad_tokens=n)(examples) for n in (1, PAD_TOKENS))
    step = PAD_TOKENS * 8  # samples: PAD_TOKENS patches of 8
    assert plain["input_values"].shape[1] == 136 and rounded["input_values"].shape[1] == -(-130 // step) * step
    inputs = [{"input_values": b["input_values"], "attention_mask": b["attention_mask"]} for b in (plain, rounded)]
    torch.testing.assert_close(model(**inputs[1]), model(**inputs[0]), atol=1e-5, rtol=1e-5)
    (h0, m0), (h1, m1) = (model.hidden(**x) for x in inputs)
    assert h1.shape[1] % PAD_TOKENS == 0 and torch.equal(m1[:, :m0.shape[1]], m0) and not m1[:, m0.shape[1]:].any()
    torch.testing.assert_close(h1[:, :h0.shape[1]][m0], h0[m0], atol=1e-5, rtol=1e-5)


def test_rounded_dna_batches_but_not_flatten_or_token_level():
    examples = [Example("a", "ACGTA", "a"), Example("b", "AC", "b")]
    assert TaskCollate(dna_task(), pad_tokens=PAD_TOKENS)(examples)["input_ids"].shape == (2, PAD_TOKENS)
    assert TaskCollate(dna_task())(examples)["input_ids"].shape == (2, 5)
    same = [Example("a", "ACGTA", "a"), Example("b", "ACGTT", "b")]
    flatten = dna_task(pooling="flatten", length=5)
    assert TaskCollate(flatten, pad_tokens=PAD_TOKENS)(same)["input_ids"].shape == (2, 5)
    token = [Example("a", "ACGTA", "aabba"), Example("b", "AC", "ab")]
    token_task = dna_task(level="token", classes=["a", "b"])
    assert TaskCollate(token_task, pad_tokens=PAD_TOKENS)(token)["input_ids"].shape == (2, 5)
    with pytest.raises(InputError, match="pad_tokens"):
        TaskCollate(dna_task(), pad_tokens=0)


def test_batches_are_rounded_only_where_triton_compiles(tmp_path):
    """CUDA with the Triton kernels: PAD_TOKENS; the CPU and the PyTorch paths: whole tokens only. finetune's
    loaders take it from the model's device (building a CUDA loader touches no GPU)."""
    assert pad_tokens_for("cuda") == pad_tokens_for(torch.device("cuda:1"), "triton") == PAD_TOKENS
    assert pad_tokens_for("cpu") == pad_tokens_for("cuda", "chunked") == pad_tokens_for("cpu", "triton") == 1
    clips = tone_clips(tmp_path / "clips", (400, 800), per_class=6)
    cfg = FinetuneConfig(data=str(clips), modality="audio", out=str(tmp_path / "out"), patch_size=8)
    labels, splits, rate = load_data(cfg)
    task = finetune_task(cfg, labels, rate, None, "mean")
    for device, expected in (("cuda", PAD_TOKENS), ("cpu", 1)):
        made = finetune_loaders(cfg, task, splits, rate, torch.device(device))
        got = [loader.collate_fn.pad_tokens for loader in made]
        assert got == [expected] * 3, device


def test_rc_classifier_is_reverse_complement_invariant():
    model = SequenceClassifier(lm(rc=True), dna_task()).eval()
    assert model.feature_dim == 8
    _, ids, mask = padded([12, 7, 1])
    rc = reverse_complement_ids(ids, torch.tensor([0, 1, 2, 3, 4, 8, 7, 6, 5, 9]), mask)
    torch.testing.assert_close(model(ids, mask), model(rc, mask), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="RC-invariantly"):
        SequenceClassifier(lm(rc=True), dna_task(pooling="last"))


def test_classifier_rejects_mismatches():
    with pytest.raises(InputError, match="cls pooling needs a bidirectional"):
        SequenceClassifier(lm(False), dna_task(pooling="cls"))
    with pytest.raises(InputError, match="mismatched modality"):
        SequenceClassifier(lm(True), audio_task())
    with pytest.raises(InputError, match="mismatched modality"):
        SequenceClassifier(lm(True, tokenizer="mulaw8", vocab=256), dna_task())
    with pytest.raises(InputError, match="at least 2 classes"):
        TaskConfig(classes=["only"])
    with pytest.raises(InputError, match="cls pooling"):
        audio_task(pooling="cls")


def test_losses_against_hand_formulas():
    logits = torch.randn(5, 3, dtype=torch.float64)
    targets = torch.tensor([0, 2, 1, 1, 0])
    weights = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    logp = logits.log_softmax(-1)
    picked = -logp[torch.arange(5), targets]
    hand = (weights[targets] * picked).sum() / weights[targets].sum()
    torch.testing.assert_close(classification_loss(logits, targets, "single_label", weights), hand)
    hot = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    p = torch.sigmoid(logits)
    hand = -(weights * hot * p.log() + (1 - hot) * (1 - p).log()).mean()
    torch.testing.assert_close(classification_loss(logits, hot, "multi_label", weights), hand)
    token_targets = torch.tensor([[0, 1, IGNORE_INDEX], [2, IGNORE_INDEX, IGNORE_INDEX]])
    token_logits = torch.randn(2, 3, 3)
    hand = F.cross_entropy(token_logits[token_targets != IGNORE_INDEX], token_targets[token_targets != IGNORE_INDEX])
    torch.testing.assert_close(classification_loss(token_logits, token_targets, "single_label"), hand)


def test_encode_targets_single_multi_token():
    task = dna_task()
    examples = [Example("e0", "ACGT", "b"), Example("e1", "AC", "c")]
    assert encode_targets(examples, task).tolist() == [1, 2]
    assert encode_targets([Example("e", "A", None)], task) is None
    with pytest.raises(InputError, match="'e1': label 'z' is not one of"):
        encode_targets([Example("e0", "A", "a"), Example("e1", "A", "z")], task)
    with pytest.raises(InputError, match="has no label while others have"):
        encode_targets([Example("e0", "A", "a"), Example("e1", "A", None)], task)
    multi = dna_task(problem_type="multi_label")
    assert encode_targets([Example("m", "A", "a;c"), Example("n", "A", "")], multi).tolist() == [[1, 0, 1], [0, 0, 0]]
    token = TaskConfig(classes=["E", "I"], level="token", pooling="cls")
    got = encode_targets([Example("t", "ACG", "EIE"), Example("u", "A", "I")], token, lengths=[4, 2])
    assert got.tolist() == [[IGNORE_INDEX, 0, 1, 0], [IGNORE_INDEX, 1, IGNORE_INDEX, IGNORE_INDEX]]
    with pytest.raises(InputError, match="one character per base"):
        encode_targets([Example("t", "ACG", "EI")], token, lengths=[4])


def test_rc_augmentation_flips_half_and_reverses_token_labels():
    task = TaskConfig(classes=["E", "I"], level="token")
    collate = TaskCollate(task, rc_generator=torch.Generator().manual_seed(0))
    examples = [Example(f"x{i}", "AACG", "EEII") for i in range(40)]
    batch = collate(examples)
    forward = torch.tensor(TOK.encode("AACG"))
    flipped = torch.tensor(TOK.encode(TOK.reverse_complement("AACG")))
    is_rc = [bool((row == flipped).all()) for row in batch["input_ids"]]
    assert all(is_rc[i] or bool((row == forward).all()) for i, row in enumerate(batch["input_ids"]))
    assert 8 < sum(is_rc) < 32
    for rc, target in zip(is_rc, batch["targets"].tolist(), strict=True):
        assert target == ([1, 1, 0, 0] if rc else [0, 0, 1, 1])


def test_classifier_checkpoint_round_trip(tmp_path):
    for model, inputs in [
        (SequenceClassifier(lm(True), dna_task(pooling="cls")), {"input_ids": padded([5, 9])[1]}),
        (SequenceClassifier(lm(True, tokenizer="mulaw8", vocab=256), audio_task()),
         {"input_values": torch.randn(2, 19)}),
    ]:
        torch.nn.init.normal_(model.head.weight)
        path = tmp_path / model.task.modality
        model.save_pretrained(path)
        assert sorted(p.name for p in path.iterdir()) == ["config.json", "head.safetensors", "model.safetensors",
                                                          "task.json"]
        loaded = load_classifier(path)
        assert loaded.task == model.task
        torch.testing.assert_close(loaded.eval()(**inputs), model.eval()(**inputs), atol=0, rtol=0)
        backbone = load_model(path)  # the folder still is a backbone checkpoint
        for name, tensor in model.lm.state_dict().items():
            assert torch.equal(backbone.state_dict()[name], tensor)


def test_load_classifier_refuses_backbone_checkpoint(tmp_path):
    lm().save_pretrained(tmp_path / "bb")
    with pytest.raises(InputError, match="has no classification head"):
        load_classifier(tmp_path / "bb")
    with pytest.raises(InputError, match="not a checkpoint directory"):
        load_classifier(tmp_path / "nothing")


def test_compute_metrics_binary_and_token():
    task = TaskConfig(classes=["0", "1"])
    probs = torch.tensor([[0.5, 0.5], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    targets = torch.tensor([0, 1, 1, 1])
    m = compute_metrics(probs.log(), probs, targets, task)
    assert m["accuracy"] == 0.75 and m["auroc"] == pytest.approx(2 / 3)
    assert m["loss"] == pytest.approx(float(-probs[torch.arange(4), targets].log().mean()), rel=1e-6)
    token = TaskConfig(classes=["0", "1"], level="token")
    m = compute_metrics(probs.log().view(2, 2, 2), probs.view(2, 2, 2), torch.tensor([[0, 0], [IGNORE_INDEX, 1]]),
                        token)
    assert m["accuracy"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- end-to-end fine-tuning


def run_finetune(tmp_path, data, name="run", **kw):
    return finetune(FinetuneConfig(data=str(data), out=str(tmp_path / name), **{**TINY, "epochs": 2,
                                                                               "batch_size": 8, **kw}))


def test_finetune_writes_log_run_record_and_best_checkpoint(tmp_path):
    table = motif_table(tmp_path / "t.tsv", n=32)
    result = run_finetune(tmp_path, table, epochs=3, val_every=2, lr=5e-3)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"checkpoint", "train_log.tsv", "run.json", "test_predictions.tsv"}
    x_name, steps, series = read_history(out / "train_log.tsv")
    assert x_name == "step" and list(steps) == list(range(2, result.steps + 1, 2)) + (
        [result.steps] if result.steps % 2 else [])
    assert {"train_loss", "val_loss", "val_accuracy", "val_auroc"} <= set(series)
    best_row = int(np.nanargmax(series["val_accuracy"]))
    # The log rounds to 5 decimals.
    assert result.best_step == steps[best_row] and result.best_value == pytest.approx(series["val_accuracy"][best_row],
                                                                                      abs=5e-6)
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["lr"] == 5e-3 and record["task"]["classes"] == ["0", "1"]
    assert record["result"]["sizes"] == {"train": 26, "val": 3, "test": 3} and "torch" in record["versions"]
    # The kept checkpoint scores the logged best value on the validation split.
    from seqssm.datasets.labelled import read_labelled_table
    from seqssm.datasets.tables import split_indices

    data = read_labelled_table(table)
    _, val, test = split_indices(len(data), (0.8, 0.1, 0.1), 0, data.labels)
    model = load_classifier(out / "checkpoint")
    batches = [TaskCollate(model.task)([Example(data.ids[i], data.sequences[i], data.labels[i]) for i in val])]
    assert evaluate_split(model, batches, torch.device("cpu"))["accuracy"] == pytest.approx(result.best_value)
    preds = read_predictions(out / "test_predictions.tsv")
    assert preds.ids == [data.ids[i] for i in test] and preds.true == [data.labels[i] for i in test]
    np.testing.assert_allclose(preds.probs.sum(1), 1, atol=1e-5)
    assert result.test_metrics["accuracy"] == np.mean(np.array(preds.predicted) == np.array(preds.true))


def test_finetune_same_seed_same_run_other_seed_other_run(tmp_path):
    table = motif_table(tmp_path / "t.tsv", n=16)
    runs = [run_finetune(tmp_path, table, name=f"r{i}", seed=s, rc_augment=True, dropout=0.2)
            for i, s in enumerate((3, 3, 4))]
    logs = [[line.split("\t")[:-1] for line in (tmp_path / f"r{i}" / "train_log.tsv").read_text().splitlines()]
            for i in range(3)]
    assert logs[0] == logs[1] and logs[0] != logs[2]
    weights = [load_classifier(r.checkpoint).state_dict() for r in runs]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not torch.equal(weights[0]["head.weight"], weights[2]["head.weight"])


def test_init_seed_varies_the_model_but_not_the_split(tmp_path):
    table = motif_table(tmp_path / "t.tsv", n=40)
    kw = {"seed": 3, "rc_augment": True, "dropout": 0.2, "epochs": 1}
    runs = {name: run_finetune(tmp_path, table, name=name, **kw, **extra)
            for name, extra in (("default", {}), ("same", {"init_seed": 3}), ("other", {"init_seed": 103}))}
    tests = {name: read_predictions(r.test_predictions).ids for name, r in runs.items()}
    assert tests["default"] == tests["same"] == tests["other"] and len(tests["default"]) == 4
    weights = {name: load_classifier(r.checkpoint).state_dict() for name, r in runs.items()}
    assert all(torch.equal(weights["default"][k], weights["same"][k]) for k in weights["default"])
    assert not torch.equal(weights["default"]["head.weight"], weights["other"]["head.weight"])
    logs = {name: (tmp_path / name / "train_log.tsv").read_text().splitlines()[1].split("\t")[:-1] for name in runs}
    assert logs["default"] == logs["same"] != logs["other"]
    recorded = {name: json.loads((tmp_path / name / "run.json").read_text())["config"] for name in runs}
    assert [(c["seed"], c["init_seed"]) for c in recorded.values()] == [(3, 3), (3, 3), (3, 103)]
    with pytest.raises(InputError, match="--init-seed must be a non-negative integer"):
        FinetuneConfig(data="d", out="o", init_seed=-1)


def test_freeze_backbone_trains_only_the_head(tmp_path):
    lm(True, d_model=16).save_pretrained(tmp_path / "bb")
    table = motif_table(tmp_path / "t.tsv", n=16)
    result = run_finetune(tmp_path, table, init_from=str(tmp_path / "bb"), freeze_backbone=True, dropout=0.0)
    before, after = load_model(tmp_path / "bb").state_dict(), load_classifier(result.checkpoint)
    assert all(torch.equal(before[k], v) for k, v in after.lm.state_dict().items())
    unfrozen = run_finetune(tmp_path, table, name="u", init_from=str(tmp_path / "bb"), backbone_lr=1e-2)
    changed = load_classifier(unfrozen.checkpoint).lm.state_dict()
    assert not torch.equal(before["backbone.embedding.weight"], changed["backbone.embedding.weight"])


def test_flatten_pooling_finetune_needs_one_length(tmp_path):
    rng = random.Random(6)
    rows = [(random_dna(rng, 12), str(i % 2), f"f{i}") for i in range(20)]
    result = run_finetune(tmp_path, write_table(tmp_path / "fixed.tsv", rows), pooling="flatten", epochs=1)
    assert load_classifier(result.checkpoint).task.length == 12
    with pytest.raises(InputError, match="--pooling flatten needs inputs of one length"):
        run_finetune(tmp_path, motif_table(tmp_path / "t.tsv"), name="v", pooling="flatten")


def test_early_stopping_after_patience(tmp_path):
    table = motif_table(tmp_path / "t.tsv", n=40)
    # A learning rate of ~0 never improves the loss, so the 1st validation stays best.
    result = run_finetune(tmp_path, table, lr=1e-12, val_every=1, patience=2, metric="loss", epochs=5)
    assert result.steps == 3 and result.best_step == 1
    assert len((tmp_path / "run" / "train_log.tsv").read_text().splitlines()) == 4


def test_class_weights(tmp_path):
    train = [Example(str(i), "A", lab) for i, lab in enumerate("aaaaabbc")]
    task = dna_task()
    cfg = FinetuneConfig(data="x", out="y", class_weights="balanced")
    expected = compute_class_weight("balanced", classes=np.array(["a", "b", "c"]), y=np.array(list("aaaaabbc")))
    np.testing.assert_allclose(class_weights(cfg.class_weights, task, train).numpy(), expected, rtol=1e-6)
    cfg = FinetuneConfig(data="x", out="y", class_weights="1,2,3")
    assert class_weights(cfg.class_weights, task, train).tolist() == [1, 2, 3]
    with pytest.raises(InputError, match="need 3 positive"):
        class_weights("1,2", task, train)
    table = motif_table(tmp_path / "t.tsv", n=24)
    assert run_finetune(tmp_path, table, class_weights="balanced", epochs=1).steps == 3


def test_auto_class_weights_and_metric_follow_the_training_rows_balance(tmp_path):
    # 3:1 or worse between the largest and the smallest class: balanced weights and macro-F1 early stopping.
    task = dna_task()
    auto = FinetuneConfig(data="x", out="y")
    assert (auto.class_weights, auto.metric) == ("auto", "auto")
    skewed = [Example(str(i), "A", lab) for i, lab in enumerate("aaaaaabbc" + "a" * 3)]  # 9:2:1
    even = [Example(str(i), "A", lab) for i, lab in enumerate("aabbcc" + "abc")]
    two_to_one = [Example(str(i), "A", lab) for i, lab in enumerate("aaaabbcc")]
    missing = [Example(str(i), "A", lab) for i, lab in enumerate("aabb")]  # no "c": imbalance inf
    assert imbalance(task, skewed) == 9 and imbalance(task, two_to_one) == 2
    assert imbalance(task, missing) == math.inf
    for rows, weights, metric in ((skewed, "balanced", "macro_f1"), (even, None, "accuracy"),
                                  (two_to_one, None, "accuracy"), (missing, "balanced", "macro_f1")):
        assert class_weights_of(auto, task, rows) == weights and metric_of(auto, task, rows) == metric
    # Explicit choices are kept as given; multi-label and token tasks are never weighted automatically.
    chosen = FinetuneConfig(data="x", out="y", class_weights=None, metric="loss")
    assert class_weights_of(chosen, task, skewed) is None and metric_of(chosen, task, skewed) == "loss"
    multi = dna_task(problem_type="multi_label")
    assert imbalance(multi, skewed) is None
    assert class_weights_of(auto, multi, skewed) is None and metric_of(auto, multi, skewed) == "macro_f1"
    assert imbalance(dna_task(level="token"), skewed) is None


def test_auto_class_weights_reach_the_loss_and_run_json(tmp_path, monkeypatch):
    # An 8:1 table trains with balanced weights and stops on macro F1; run.json keeps the resolved choices.
    rows = [(seq, "major" if i % 9 else "minor", f"r{i}") for i, seq in
            enumerate(random_dna(random.Random(3), 16) for _ in range(54))]
    table = write_table(tmp_path / "skew.tsv", rows)
    seen = []
    real = F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: seen.append(k.get("weight")) or real(*a, **k))
    result = run_finetune(tmp_path, table, epochs=1)
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert (config["class_weights"], config["metric"], result.metric) == ("balanced", "macro_f1", "macro_f1")
    weights = next(w for w in seen if w is not None)
    assert weights[1] / weights[0] > 4  # minor (class 1) weighs far more than major
    result = run_finetune(tmp_path, table, name="none", epochs=1, class_weights=None, metric="accuracy")
    config = json.loads((tmp_path / "none" / "run.json").read_text())["config"]
    assert (config["class_weights"], config["metric"]) == (None, "accuracy")


def test_multilabel_finetune(tmp_path):
    rng = random.Random(2)
    rows = []
    for i in range(30):
        seq = random_dna(rng, 20)
        labels = [["gc"], ["at"], ["gc", "at"]][i % 3]
        seq = "".join([seq, *({"gc": "GGCC", "at": "AATT"}[n] for n in labels)])
        rows.append((seq, ";".join(labels), f"m{i}"))
    result = run_finetune(tmp_path, write_table(tmp_path / "m.tsv", rows))
    assert result.metric == "macro_f1"
    task = load_classifier(result.checkpoint).task
    assert task.problem_type == "multi_label" and task.classes == ["at", "gc"]
    preds = read_predictions(tmp_path / "run" / "test_predictions.tsv")
    assert all(set(p.split(";")) <= {"at", "gc", ""} for p in preds.predicted)
    for p, probs in zip(preds.predicted, preds.probs, strict=True):
        assert set(filter(None, p.split(";"))) == {c for c, q in zip(task.classes, probs, strict=True) if q >= 0.5}


def test_token_level_finetune(tmp_path):
    rng = random.Random(3)
    rows = []
    for i in range(24):
        seq = random_dna(rng, rng.randint(8, 14))
        rows.append((seq, "".join("S" if b in "GC" else "W" for b in seq), f"t{i}"))
    result = run_finetune(tmp_path, write_table(tmp_path / "tok.tsv", rows), level="token", epochs=3, lr=1e-2)
    preds = read_predictions(tmp_path / "run" / "test_predictions.tsv")
    test_ids = {i.rsplit(":", 1)[0] for i in preds.ids}
    seqs = {r[2]: r[0] for r in rows}
    assert len(preds.ids) == sum(len(seqs[t]) for t in test_ids)
    first = sorted(test_ids)[0]
    positions = [int(i.rsplit(":", 1)[1]) for i in preds.ids if i.rsplit(":", 1)[0] == first]
    assert positions == list(range(len(seqs[first])))
    assert result.test_metrics["accuracy"] > 0.5


def test_finetune_from_bed_and_genome(tmp_path):
    rng = random.Random(4)
    genome = random_dna(rng, 600)
    (tmp_path / "g.fa").write_text(">chr1\n" + "\n".join(genome[i:i + 60] for i in range(0, 600, 60)) + "\n")
    lines = [f"chr1\t{s}\t{s + 20}\tr{s}\t0\t{'+-'[s % 2]}\t{'pm'[(s // 20) % 2]}" for s in range(0, 580, 20)]
    (tmp_path / "r.bed").write_text("\n".join(lines) + "\n")
    result = run_finetune(tmp_path, tmp_path / "r.bed", genome=str(tmp_path / "g.fa"), bed_labels="6", length=24)
    assert sum(result.sizes.values()) == len(lines)
    preds = read_predictions(tmp_path / "run" / "test_predictions.tsv")
    assert set(preds.true) <= {"p", "m"} and all(i.startswith("r") for i in preds.ids)


def test_finetune_from_labelled_fasta(tmp_path):
    rng = random.Random(7)
    records = "".join(f">f{i} label={'yes' if i % 2 else 'no'}\n{random_dna(rng, 15)}{'GGGG' * (i % 2)}\n"
                      for i in range(20))
    (tmp_path / "l.fa").write_text(records)
    result = run_finetune(tmp_path, tmp_path / "l.fa", epochs=1)
    assert sum(result.sizes.values()) == 20
    assert read_predictions(tmp_path / "run" / "test_predictions.tsv").classes == ["no", "yes"]


def write_wavs(folder, per_class=6, layout="folder"):
    """Tiny 8 kHz clips: class 'lo' a 300 Hz tone, 'hi' a 2 kHz tone, lengths 0.02-0.05 s."""
    rng = np.random.default_rng(0)
    for label, freq in (("lo", 300), ("hi", 2000)):
        for i in range(per_class):
            n = int(rng.integers(160, 400))
            wave = 0.3 * np.sin(2 * np.pi * freq * np.arange(n) / 8000) + 0.01 * rng.standard_normal(n)
            path = folder / label / f"{label}{i}.wav" if layout == "folder" else folder / f"{label}{i}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wave.astype(np.float32), 8000, subtype="PCM_16")
    return folder


def test_audio_finetune_from_class_folders(tmp_path):
    data = write_wavs(tmp_path / "clips")
    result = run_finetune(tmp_path, data, modality="audio", patch_size=8, clip_seconds=0.03, epochs=3)
    task = load_classifier(result.checkpoint).task
    assert task.modality == "audio" and task.sample_rate == 8000 and task.classes == ["hi", "lo"]
    assert result.sizes == {"train": 10, "val": 1, "test": 1}
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["config"]["modality"] == "audio" and math.isfinite(record["result"]["best_value"])


def test_audio_finetune_from_manifest(tmp_path):
    write_wavs(tmp_path / "clips", per_class=4, layout="flat")
    lines = ["path,label"] + [f"clips/{name}{i}.wav,{name}" for name in ("lo", "hi") for i in range(4)]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    result = run_finetune(tmp_path, tmp_path / "m.csv", modality="audio", patch_size=8, epochs=1,
                          split=(0.5, 0.25, 0.25))
    assert result.sizes == {"train": 4, "val": 2, "test": 2}
    assert set(read_predictions(tmp_path / "run" / "test_predictions.tsv").true) <= {"lo", "hi"}


def test_finetune_bad_inputs(tmp_path):
    table = write_table(tmp_path / "nolabel.tsv", [("ACGT", "x1")], header=("sequence", "id"))
    with pytest.raises(InputError, match="no label column 'label'"):
        run_finetune(tmp_path, table)
    with pytest.raises(InputError, match="mismatched modality"):
        run_finetune(tmp_path, write_wavs(tmp_path / "clips"), modality="dna")
    with pytest.raises(InputError, match="mismatched modality"):
        run_finetune(tmp_path, motif_table(tmp_path / "t.tsv"), modality="audio")
    lm(True).save_pretrained(tmp_path / "bb")
    with pytest.raises(InputError, match="mismatched modality"):
        run_finetune(tmp_path, tmp_path / "clips", modality="audio", init_from=str(tmp_path / "bb"))
    with pytest.raises(InputError, match="--split"):
        FinetuneConfig(data="x", out="y", split=(0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="--level token needs DNA"):
        FinetuneConfig(data="x", out="y", level="token", modality="audio")
    with pytest.raises(InputError, match="--metric"):
        FinetuneConfig(data="x", out="y", metric="f2")


def test_finetune_on_real_promoter_rows(shared_data, tmp_path):
    with open(shared_data / "labelled" / "ecoli_promoters.tsv") as f:
        header, *rows = [line.rstrip("\n").split("\t") for line in f]
    rng = random.Random(0)
    sample = rng.sample(rows, 40)
    table = write_table(tmp_path / "prom.tsv", sample, header=header)
    result = run_finetune(tmp_path, table, epochs=1, rc_equivariant=True)
    assert result.sizes == {"train": 32, "val": 4, "test": 4}
    preds = read_predictions(tmp_path / "run" / "test_predictions.tsv")
    assert preds.classes == ["0", "1"] and len(preds.ids) == 4


def test_finetune_on_real_fsdd_files(shared_data, tmp_path):
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for digit in (3, 7):
        for take in range(8):
            name = f"{digit}_jackson_{take}.wav"
            (folder / name).symlink_to(shared_data / "audio" / "fsdd" / name)
    result = run_finetune(tmp_path, folder, modality="audio", patch_size=32, clip_seconds=0.25, epochs=1)
    assert result.sizes["test"] == 10 and result.sizes["train"] + result.sizes["val"] == 6
    assert load_classifier(result.checkpoint).task.classes == ["3", "7"]


def test_pooling_auto_is_chosen_by_the_data():
    """--pooling auto: flatten for sequence-level DNA of one length up to AUTO_FLATTEN_MAX, mean for variable or
    long lengths, audio and token-level tasks; an explicit --pooling is kept."""
    from seqssm.pipelines.finetune_setup import AUTO_FLATTEN_MAX, fixed_length, pooling_of

    def splits(*lengths):
        return {"train": [Example(f"r{i}", "A" * n, "x") for i, n in enumerate(lengths)], "val": [], "test": []}

    auto = FinetuneConfig(data="d", out="o")
    assert auto.pooling == "auto"
    assert pooling_of(auto, splits(81, 81, 81)) == "flatten"
    assert fixed_length(auto, splits(81, 81), pooling_of(auto, splits(81, 81))) == 81
    assert pooling_of(auto, splits(81, 82)) == "mean"
    assert pooling_of(auto, splits(AUTO_FLATTEN_MAX + 1, AUTO_FLATTEN_MAX + 1)) == "mean"
    assert pooling_of(FinetuneConfig(data="d", out="o", level="token"), splits(81, 81)) == "mean"
    assert pooling_of(FinetuneConfig(data="d", out="o", modality="audio"), splits(81, 81)) == "mean"
    assert pooling_of(FinetuneConfig(data="d", out="o", pooling="last"), splits(81, 81)) == "last"
    with pytest.raises(InputError, match="--pooling"):
        FinetuneConfig(data="d", out="o", pooling="max")
    assert pooling_of(FinetuneConfig(data="d", out="o", rc_equivariant=True), splits(81, 81)) == "mean"


def test_an_fsdd_epoch_on_the_gpu_has_a_few_batch_lengths(shared_data, tmp_path):
    """The architectures benchmark's FSDD recipe (patch 32, 1-s crops, batch 32): the CUDA loaders give an epoch a
    handful of lengths, all whole multiples of PAD_TOKENS tokens; unrounded, nearly every batch had its own."""
    cfg = FinetuneConfig(data=str(shared_data / "audio" / "fsdd"), modality="audio", data_format="fsdd",
                         out=str(tmp_path / "out"), patch_size=32, clip_seconds=1.0, batch_size=32)
    labels, splits, rate = load_data(cfg)
    task = finetune_task(cfg, labels, rate, None, "mean")
    for device in ("cuda", "cpu"):
        train = finetune_loaders(cfg, task, splits, rate, torch.device(device))[0]
        train.sampler.set_epoch(0, 0)
        lengths = [batch["input_values"].shape[1] for batch in itertools.islice(train, 40)]
        if device == "cuda":
            # multiples of 512 samples from the shortest batch's longest clip up to 8192 (a full crop, rounded)
            assert all(n % (PAD_TOKENS * 32) == 0 for n in lengths) and len(set(lengths)) <= 8, lengths
        else:
            assert len(set(lengths)) > 20, lengths
