"""Sequence-length warm-up: stage arithmetic, and a step's gradients independent of how it is split."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.length_schedule import (
    LengthScheduleConfig,
    Stage,
    plan_length_schedule,
    stage_at,
    step_backward,
)


def test_hyenadna_like_warmup_keeps_tokens_per_step_and_fits_memory():
    cfg = LengthScheduleConfig(max_length=2**20, tokens_per_step=2**21, max_tokens_per_micro_batch=2**17,
                               min_length=2**14, warmup_steps=60)
    stages = plan_length_schedule(cfg)
    assert [s.seq_len for s in stages] == [2**k for k in range(14, 21)]
    assert [(s.start_step, s.end_step) for s in stages] == [(10 * i, 10 * i + 10) for i in range(6)] + [(60, None)]
    for s in stages:
        assert s.tokens_per_step == 2**21
        assert s.micro_batch_size * s.grad_accum == s.batch_size
        assert s.micro_batch_size * min(s.seq_len, s.chunk_size or s.seq_len) <= 2**17
    assert stages[0] == Stage(0, 10, 2**14, 128, 8, 16, None)
    assert stages[3] == Stage(30, 40, 2**17, 16, 1, 16, None)
    # past the memory limit a single sequence goes through in chunks
    assert stages[-1] == Stage(60, None, 2**20, 2, 1, 2, 2**17)


def test_uneven_warmup_and_a_final_length_off_the_growth_ladder():
    cfg = LengthScheduleConfig(max_length=48, tokens_per_step=96, max_tokens_per_micro_batch=40,
                               min_length=8, warmup_steps=5, growth=2)
    stages = plan_length_schedule(cfg)
    assert [s.seq_len for s in stages] == [8, 16, 32, 48]
    assert [s.end_step - s.start_step for s in stages[:-1]] == [2, 2, 1]
    # 96 / 8 = 12 sequences, at most 5 per micro-batch: 4 × 3 (the largest divisor of 12 that fits)
    assert (stages[0].micro_batch_size, stages[0].grad_accum) == (4, 3)
    assert (stages[1].micro_batch_size, stages[1].grad_accum) == (2, 3)
    assert (stages[2].micro_batch_size, stages[2].grad_accum, stages[2].chunk_size) == (1, 3, None)
    assert (stages[3].batch_size, stages[3].micro_batch_size, stages[3].chunk_size) == (2, 1, 40)


def test_stage_at_follows_the_boundaries():
    stages = plan_length_schedule(LengthScheduleConfig(max_length=64, tokens_per_step=128,
                                                       max_tokens_per_micro_batch=128, min_length=16,
                                                       warmup_steps=4))
    assert [stage_at(stages, step).seq_len for step in range(7)] == [16, 16, 32, 32, 64, 64, 64]
    assert stage_at(stages, 10**9).seq_len == 64
    no_warmup = plan_length_schedule(LengthScheduleConfig(max_length=64, tokens_per_step=128,
                                                          max_tokens_per_micro_batch=128))
    assert no_warmup == (Stage(0, None, 64, 2, 2, 1, None),)
    with pytest.raises(InputError, match="step"):
        stage_at(stages, -1)


@pytest.mark.parametrize("kwargs, match", [
    ({"tokens_per_step": 100}, "multiple of the stage length"),
    ({"min_length": 128}, "above max_length"),
    ({"warmup_steps": 1}, "warm-up stages need"),
    ({"growth": 1}, "growth"),
    ({"max_tokens_per_micro_batch": 0}, "max_tokens_per_micro_batch"),
    ({"warmup_steps": -1}, "warmup_steps"),
])
def test_bad_schedules_raise_input_error(kwargs, match):
    base = {"max_length": 64, "tokens_per_step": 128, "max_tokens_per_micro_batch": 64, "min_length": 16,
            "warmup_steps": 4}
    with pytest.raises(InputError, match=match):
        LengthScheduleConfig(**{**base, **kwargs})


def _model() -> MambaLMHeadModel:
    model = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=2, vocab_size=10, d_state=4), impl="chunked")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.train()


@pytest.mark.parametrize("max_micro_tokens", [96, 48, 24, 10])
def test_step_gradients_equal_the_whole_batch_gradient(max_micro_tokens):
    """Whole batch in one pass, micro-batches, one sequence at a time, or chunks of one sequence."""
    cfg = LengthScheduleConfig(max_length=24, tokens_per_step=96, max_tokens_per_micro_batch=max_micro_tokens)
    (stage,) = plan_length_schedule(cfg)
    model = _model()
    seq = torch.randint(0, 10, (stage.batch_size, stage.seq_len + 1))
    inputs, targets = seq[:, :-1], seq[:, 1:].clone()
    targets[1, :5] = -100
    logits = model(inputs)
    loss = F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    got = step_backward(model, inputs, targets, stage)
    assert got == pytest.approx(loss.item(), rel=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-4, atol=1e-6 * expected[name].abs().max())
    assert (stage.chunk_size is not None) == (max_micro_tokens < 24)


def test_step_backward_checks_the_batch_shape():
    (stage,) = plan_length_schedule(LengthScheduleConfig(max_length=8, tokens_per_step=16,
                                                         max_tokens_per_micro_batch=16))
    ids = torch.zeros(3, 8, dtype=torch.long)
    with pytest.raises(InputError, match=r"\[batch_size, seq_len\] = \[2, 8\]"):
        step_backward(_model(), ids, ids, stage)
