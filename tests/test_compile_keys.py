"""Batches of varying length compile each Triton kernel once (issues 14 and 16: FSDD fine-tuning on the H200
paid a fresh compile every few steps).

Counted on the CPU by ``triton_keys.record_specializations``: the keys a CUDA run would compile, no kernel run.
The training loop of an audio classifier (bidirectional, both front ends) over batches of random lengths and a
short last batch, as FSDD's 1-s crops give: with the collate's rounding of L for CUDA (``pad_tokens_for``) the
first batch's keys are all there ever are; without it (``pad_tokens=1``) new ones keep coming, which is what the
GPU paid for.
On a GPU these tests skip: benchmarks/device/fsdd_step.sh counts the real compiles there.
"""

from __future__ import annotations

import pytest
import torch
from triton_harness import ON_CUDA, PROXY, interpreted

if not PROXY:
    from triton_keys import record_specializations

    from seqssm.config import MambaConfig
    from seqssm.datasets.labelled import Example
    from seqssm.models import MambaLMHeadModel
    from seqssm.models.heads import SequenceClassifier, TaskConfig, classification_loss
    from seqssm.pipelines.classify import TaskCollate, pad_tokens_for

pytestmark = pytest.mark.skipif(ON_CUDA, reason="counts keys under the interpreter; fsdd_step.sh counts on a GPU")


def classifier(frontend: str, patch: int) -> SequenceClassifier:
    torch.manual_seed(0)
    config = MambaConfig(d_model=32, n_layer=2, d_state=16, bidirectional=True, tokenizer="mulaw8", vocab_size=256,
                         sample_rate=8000)
    extra = {"frontend": "logmel", "n_mels": 40} if frontend == "logmel" else {}
    task = TaskConfig(classes=[str(d) for d in range(10)], modality="audio", patch_size=patch, sample_rate=8000,
                      pooling="mean", **extra)
    return SequenceClassifier(MambaLMHeadModel(config, impl="triton"), task)


def batches(seed: int, n: int, size: int, last: int):
    """n batches of ``size`` clips of 0.2-1 s (FSDD's under a 1-s crop), then one of ``last`` clips."""
    g = torch.Generator().manual_seed(seed)
    for i in range(n + 1):
        rows = size if i < n else last
        lengths = torch.randint(1600, 8001, (rows,), generator=g).tolist()
        yield [Example(f"c{j}", torch.randn(k, generator=g) * 0.1, str(j % 10)) for j, k in enumerate(lengths)]


def train_keys(monkeypatch, frontend: str, patch: int, pad_tokens: int) -> list[int]:
    """Keys new at each training step (forward + backward under bf16 autocast, as on the GPU)."""
    rec = record_specializations(monkeypatch)
    model = classifier(frontend, patch).train()
    collate = TaskCollate(model.task, pad_tokens=pad_tokens)
    new = []
    for examples in batches(0, 12, 8, 3):
        batch = collate(examples)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_values=batch["input_values"], attention_mask=batch["attention_mask"])
        classification_loss(logits, batch["targets"], "single_label").backward()
        new.append(sum(rec.take_new().values()))
    return new


@interpreted
@pytest.mark.parametrize("frontend,patch", [("raw", 32), ("logmel", 80)])
def test_varying_lengths_compile_only_the_first_batch(monkeypatch, frontend, patch):
    new = train_keys(monkeypatch, frontend, patch, pad_tokens_for("cuda"))  # what finetune's CUDA loaders take
    assert new[0] >= 8 and sum(new[1:]) == 0, new  # conv, scan and norm kernels, each way; none added later


@interpreted
def test_without_rounding_new_lengths_compile_again(monkeypatch):
    """The test above can fail: unrounded lengths bring new keys after the first batch (the GPU's slow steps)."""
    new = train_keys(monkeypatch, "raw", 32, 1)
    assert sum(new[1:]) > 0, new
