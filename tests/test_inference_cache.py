"""Recurrent inference: step and prefill against the parallel forward, cache shapes and in-place updates."""

from __future__ import annotations

import pytest
import torch

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import InferenceCache, MambaLMHeadModel

VOCAB = 10


def model_for(**kw) -> MambaLMHeadModel:
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": VOCAB, "d_state": 8, **kw})
    model = MambaLMHeadModel(config, impl="ref")
    with torch.no_grad():  # off the structured init, so every state component matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_allocate_cache_shapes_and_dtypes():
    model = model_for(d_conv=3).to(torch.bfloat16)
    cache = model.allocate_cache(3)
    assert len(cache.layers) == 2 and cache.seqlen_offset == 0 and cache.batch_size == 3
    for layer in cache.layers:
        assert layer.conv_state.shape == (3, 32, 2) and layer.conv_state.dtype == torch.bfloat16
        assert layer.ssm_state.shape == (3, 32, 8) and layer.ssm_state.dtype == torch.float32
        assert not layer.conv_state.any() and not layer.ssm_state.any()
    assert model.allocate_cache(1, dtype=torch.float32).layers[0].conv_state.dtype == torch.float32


@pytest.mark.parametrize("kw", [{}, {"d_conv": 2, "bias": True}, {"residual_in_fp32": False}])
def test_token_by_token_step_equals_forward(kw):
    model = model_for(**kw)
    ids = torch.randint(0, VOCAB, (2, 13))
    full = model(ids)
    cache = model.allocate_cache(2)
    stepped = torch.stack([model.step(ids[:, t], cache) for t in range(ids.shape[1])], dim=1)
    torch.testing.assert_close(stepped, full, atol=1e-4, rtol=1e-4)
    assert cache.seqlen_offset == 13


@pytest.mark.parametrize("prompt_len", [1, 2, 9])
def test_prefill_then_steps_equal_forward(prompt_len):
    model = model_for()
    ids = torch.randint(0, VOCAB, (2, 17))
    full = model(ids)
    logits, cache = model.prefill(ids[:, :prompt_len])
    torch.testing.assert_close(logits, full[:, :prompt_len], atol=1e-5, rtol=1e-5)
    assert cache.seqlen_offset == prompt_len
    for t in range(prompt_len, ids.shape[1]):
        torch.testing.assert_close(model.step(ids[:, t], cache), full[:, t], atol=1e-4, rtol=1e-4)


def test_prefill_and_steps_leave_the_same_states():
    model = model_for()
    ids = torch.randint(0, VOCAB, (2, 11))
    _, prefilled = model.prefill(ids)
    stepped = model.allocate_cache(2)
    for t in range(ids.shape[1]):
        model.step(ids[:, t], stepped)
    for a, b in zip(prefilled.layers, stepped.layers, strict=True):
        torch.testing.assert_close(a.conv_state, b.conv_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.ssm_state, b.ssm_state, atol=1e-5, rtol=1e-5)
        assert a.ssm_state.abs().max() > 1e-3


def test_prefill_in_pieces_equals_one_prefill():
    model = model_for()
    ids = torch.randint(0, VOCAB, (2, 15))
    whole, cache_whole = model.prefill(ids)
    first, cache = model.prefill(ids[:, :2])
    second, cache = model.prefill(ids[:, 2:], cache)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=1e-5, rtol=1e-5)
    assert cache.seqlen_offset == 15
    for a, b in zip(cache.layers, cache_whole.layers, strict=True):
        torch.testing.assert_close(a.ssm_state, b.ssm_state, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a.conv_state, b.conv_state, atol=0, rtol=0)


def test_step_updates_the_cache_in_place():
    model = model_for()
    cache = model.allocate_cache(2)
    ptrs = [(layer.conv_state.data_ptr(), layer.ssm_state.data_ptr()) for layer in cache.layers]
    before = [layer.ssm_state.clone() for layer in cache.layers]
    model.step(torch.tensor([3, 4]), cache)
    assert ptrs == [(layer.conv_state.data_ptr(), layer.ssm_state.data_ptr()) for layer in cache.layers]
    assert all(not torch.equal(b, layer.ssm_state) for b, layer in zip(before, cache.layers, strict=True))
    cache.reset()
    assert cache.seqlen_offset == 0 and not any(layer.ssm_state.any() for layer in cache.layers)


def test_rows_of_a_batch_decode_independently():
    model = model_for()
    ids = torch.randint(0, VOCAB, (3, 8))
    cache, single = model.allocate_cache(3), model.allocate_cache(1)
    for t in range(ids.shape[1]):
        batch_logits = model.step(ids[:, t], cache)
        torch.testing.assert_close(batch_logits[1:2], model.step(ids[1:2, t], single), atol=1e-6, rtol=1e-6)


def test_bidirectional_model_has_no_recurrent_inference():
    model = model_for(bidirectional=True)
    ids = torch.randint(0, VOCAB, (1, 5))
    with pytest.raises(InputError, match="bidirectional"):
        model.prefill(ids)
    with pytest.raises(InputError, match="bidirectional"):
        model.allocate_cache(1)
    cache = model_for().allocate_cache(1)
    with pytest.raises(InputError, match="bidirectional"):
        model.step(ids[:, 0], cache)


def test_cache_mismatch_raises():
    model = model_for()
    cache = model.allocate_cache(2)
    with pytest.raises(InputError, match="batch size"):
        model.step(torch.tensor([1, 2, 3]), cache)
    with pytest.raises(InputError, match="layers"):
        model.step(torch.tensor([1, 2]), InferenceCache(layers=cache.layers[:1]))
    with pytest.raises(InputError, match=r"\[B\]"):
        model.step(torch.tensor([[1, 2]]), cache)
    with pytest.raises(InputError, match="batch_size"):
        model.allocate_cache(0)
