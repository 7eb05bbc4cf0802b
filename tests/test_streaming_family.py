"""The streamed forward of every causal architecture (Mamba, Mamba-2, S4D, hybrid attention, MoE) against
one full forward: outputs and final states, chunks of odd sizes; attention past its key budget refuses."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.models.attention import KVCache
from seqssm.streaming import chunked_backward, chunked_forward, lm_chunk_loss, stream_hidden

VOCAB = 10
LENGTH = 53
ARCHS = {
    "mamba": {},
    "mamba2": {"mixer": "mamba2", "expand": 2, "headdim": 8},
    "s4d": {"mixer": "s4d"},
    "hybrid": {"layers": "MA", "n_heads": 2},
    "hybrid_mamba2": {"mixer": "mamba2", "expand": 2, "headdim": 8, "layers": "AM", "n_heads": 2},
    "moe": {"moe_every": 1, "n_experts": 3, "top_k": 2},
}


def make_model(arch: str, **kw) -> MambaLMHeadModel:
    torch.manual_seed(0)
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=4, **{**ARCHS[arch], **kw})
    model = MambaLMHeadModel(config, impl="ref")
    with torch.no_grad():  # off the structured init, so no term hides behind a 0 or a 1
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _split(ids: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    pieces, s = [], 0
    while s < ids.shape[1]:
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(ids[:, s:s + size])
        s += size
    return pieces


def _tensors(state) -> dict[str, torch.Tensor]:
    values = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    if isinstance(state, KVCache):  # a preallocated cache: the filled positions only
        n = int(state.pos)
        values["k"], values["v"] = values["k"][:, :, :n], values["v"][:, :, :n]
    return values


@pytest.mark.parametrize("arch", ARCHS)
def test_streamed_chunks_equal_one_forward_outputs_and_states(arch):
    model = make_model(arch)
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        full, states = model.backbone._forward(model.backbone.embedding(ids), return_states=True)
        logits = model(ids)
    cache = model.allocate_cache(2)
    got = torch.cat(list(stream_hidden(model, _split(ids, [7, 1, 13, 3]), cache)), dim=1)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)
    assert cache.seqlen_offset == LENGTH
    for i, (want, have) in enumerate(zip(states, cache.layers, strict=True)):
        want, have = _tensors(want), _tensors(have)
        assert want.keys() == have.keys(), i
        for name in want:
            torch.testing.assert_close(have[name].to(want[name].dtype), want[name], rtol=1e-5, atol=1e-5,
                                       msg=f"layer {i} {name}")
    torch.testing.assert_close(chunked_forward(model, ids, chunk_size=11, logits=True), logits,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["hybrid", "s4d", "mamba2"])
def test_streaming_continues_a_prefill(arch):
    """prefill then stream then prefill again (one cache): the same as one pass."""
    model = make_model(arch)
    ids = torch.randint(0, VOCAB, (1, 30))
    with torch.no_grad():
        full = model.backbone(ids)
    _, cache = model.prefill(ids[:, :9])
    (mid,) = stream_hidden(model, [ids[:, 9:20]], cache)
    torch.testing.assert_close(mid, full[:, 9:20], rtol=1e-5, atol=1e-5)
    logits, _ = model.prefill(ids[:, 20:], cache)
    torch.testing.assert_close(logits, model._logits(full[:, 20:]), rtol=1e-5, atol=1e-5)


def test_attention_past_its_key_budget_refuses_naming_the_flag():
    model = make_model("hybrid", attn_max_len=24)
    ids = torch.randint(0, VOCAB, (1, 30))
    pieces = stream_hidden(model, _split(ids, [10]))
    next(pieces), next(pieces)  # 20 positions: within the budget
    with pytest.raises(InputError, match="--attn-max-len"):
        next(pieces)
    with pytest.raises(InputError, match="--attn-max-len"):
        chunked_forward(model, ids, chunk_size=7)


@pytest.mark.parametrize("arch", ["mamba2", "s4d", "hybrid"])
def test_chunked_training_still_refuses_other_mixers(arch):
    model = make_model(arch).train()
    ids = torch.randint(0, VOCAB, (1, 12))
    with pytest.raises(InputError, match="chunked training"):
        chunked_backward(model, ids[:, :-1], lm_chunk_loss(ids[:, 1:]), chunk_size=4)


@pytest.mark.parametrize("kw", [{"mixer": "s4d", "bidirectional": True},
                                {"mixer": "mamba2", "expand": 2, "headdim": 8, "bidirectional": True},
                                {"layers": "MA", "n_heads": 2, "bidirectional": True}])
def test_bidirectional_non_mamba_models_still_refuse_streaming(kw):
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=4, **kw)
    model = MambaLMHeadModel(config, impl="ref").eval()
    ids = torch.randint(0, VOCAB, (1, 12))
    with pytest.raises(InputError, match="bidirectional"):
        next(stream_hidden(model, [ids]))
    with pytest.raises(InputError, match="bidirectional"):
        chunked_forward(model, ids, chunk_size=5)


@pytest.mark.parametrize("arch", ["mamba", "mamba2", "s4d", "moe"])
def test_stream_step_padded_last_chunk_gives_the_real_rows(arch):
    """stream_step: every chunk of one width (the first from the zero cache, the last padded): the real
    positions equal one forward."""
    from seqssm.streaming import stream_step

    model = make_model(arch)
    ids = torch.randint(0, VOCAB, (1, 40))
    with torch.no_grad():
        full = model.backbone(ids)
    cache = model.allocate_cache(1)
    first = stream_step(model, ids[:, :16], cache)
    second = stream_step(model, ids[:, 16:32], cache)
    padded = torch.cat([ids[:, 32:], torch.zeros(1, 8, dtype=torch.long)], dim=1)
    last = stream_step(model, padded, cache, valid=8)
    assert last.shape[1] == 16 and cache.seqlen_offset == 40
    torch.testing.assert_close(torch.cat([first, second, last[:, :8]], dim=1), full, rtol=1e-5, atol=1e-5)
