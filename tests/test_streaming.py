"""Chunked forward / backward against the one-pass model: outputs, final states and every parameter gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.models.norm import add_rms_norm
from seqssm.streaming import (
    blocks_checkpointed,
    checkpoint_blocks,
    chunked_backward,
    chunked_forward,
    lm_chunk_loss,
    stream_hidden,
)

VOCAB = 10
LENGTH = 45  # odd: of the chunk sizes below only 45 divides it
CHUNKS = [4, 16, 100]


def make_model(*, impl: str = "chunked", **kw) -> MambaLMHeadModel:
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=4, **kw)
    model = MambaLMHeadModel(config, impl=impl)
    with torch.no_grad():  # off the structured init, so no term hides behind a 0 or a 1
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def one_pass_grads(model, ids, targets) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def assert_grads_close(model, expected: dict[str, torch.Tensor], rtol=1e-4) -> None:
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        scale = expected[name].abs().max().clamp_min(1e-12)
        assert (p.grad - expected[name]).abs().max() <= rtol * scale, name


@pytest.fixture(params=["causal", "bidirectional", "bidirectional_untied", "rc_equivariant"])
def kind(request):
    return request.param


def model_of(kind: str, **kw) -> MambaLMHeadModel:
    if kind == "causal":
        return make_model(**kw)
    if kind == "rc_equivariant":
        return make_model(rc_equivariant=True, **kw)
    return make_model(bidirectional=True, bidirectional_weight_tie=kind == "bidirectional", **kw)


# ------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_chunked_forward_equals_one_pass(kind, chunk_size):
    model = model_of(kind).eval()
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        hidden, logits = model.backbone(ids), model(ids)
    got = chunked_forward(model, ids, chunk_size=chunk_size)
    torch.testing.assert_close(got, hidden, rtol=1e-5, atol=1e-5)
    got = chunked_forward(model, ids, chunk_size=chunk_size, logits=True)
    torch.testing.assert_close(got, logits, rtol=1e-5, atol=1e-5)


def test_bidirectional_forward_spills_to_memmap_with_the_same_result(tmp_path):
    model = model_of("bidirectional").eval()
    ids = torch.randint(0, VOCAB, (1, LENGTH))
    in_ram = chunked_forward(model, ids, chunk_size=9)
    seen = []
    real_memmap = np.memmap

    def spy(*args, **kwargs):
        seen.append(kwargs.get("mode"))
        return real_memmap(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(np, "memmap", spy)
        out = np.zeros((1, LENGTH, 16), dtype=np.float16)
        spilled = chunked_forward(model, ids, chunk_size=9, out=out, memory_budget=0, spill_dir=str(tmp_path))
    assert seen == ["w+", "w+"]  # hidden and residual went to disk
    assert spilled is out
    np.testing.assert_array_equal(out, in_ram.numpy().astype(np.float16))
    assert list(tmp_path.iterdir()) == []  # the spill directory is removed afterwards


def test_stream_hidden_carries_the_cache_like_prefill():
    model = make_model().eval()
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    cache = model.allocate_cache(2)
    pieces = [ids[:, :7], ids[:, 7:8], ids[:, 8:40], ids[:, 40:]]
    got = torch.cat(list(stream_hidden(model, pieces, cache, logits=True)), dim=1)
    ref_logits, ref_cache = model.prefill(ids)
    torch.testing.assert_close(got, ref_logits, rtol=1e-5, atol=1e-5)
    assert cache.seqlen_offset == LENGTH
    for mine, ref in zip(cache.layers, ref_cache.layers, strict=True):
        torch.testing.assert_close(mine.conv_state, ref.conv_state, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mine.ssm_state, ref.ssm_state, rtol=1e-5, atol=1e-6)
    # and the stream goes on from the saved cache with token-by-token steps
    nxt = torch.randint(0, VOCAB, (2,))
    stepped = model.step(nxt, cache)
    torch.testing.assert_close(stepped, model(torch.cat([ids, nxt[:, None]], 1))[:, -1], rtol=1e-4, atol=1e-5)


def test_reference_kernels_agree_with_chunked_kernels():
    ref_model = make_model(impl="ref").eval()
    ids = torch.randint(0, VOCAB, (1, 37))
    with torch.no_grad():
        expected = ref_model.backbone(ids)
    torch.testing.assert_close(chunked_forward(ref_model, ids, chunk_size=6), expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ backward


@pytest.mark.parametrize("chunk_size", [6, 29])
def test_chunked_backward_gives_the_one_pass_loss_and_every_gradient(kind, chunk_size):
    model = model_of(kind).train()
    ids = torch.randint(0, VOCAB, (2, 29))
    targets = torch.randint(0, VOCAB, (2, 29))
    targets[0, ::3] = -100  # some positions predict nothing, as in a masked LM
    loss, expected = one_pass_grads(model, ids, targets)
    model.zero_grad(set_to_none=True)
    got = chunked_backward(model, ids, lm_chunk_loss(targets), chunk_size=chunk_size)
    torch.testing.assert_close(got, loss, rtol=1e-5, atol=1e-6)
    assert_grads_close(model, expected)


def test_one_position_chunks_shorter_than_the_conv_window(kind):
    model = model_of(kind).train()
    ids, targets = torch.randint(0, VOCAB, (2, 5)), torch.randint(0, VOCAB, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(chunked_forward(model, ids, chunk_size=1), model.backbone(ids),
                                   rtol=1e-5, atol=1e-5)
    loss, expected = one_pass_grads(model, ids, targets)
    model.zero_grad(set_to_none=True)
    torch.testing.assert_close(chunked_backward(model, ids, lm_chunk_loss(targets), chunk_size=1), loss,
                               rtol=1e-5, atol=1e-6)
    assert_grads_close(model, expected)


def test_chunked_backward_with_layer_checkpointing_and_spill(kind, tmp_path):
    model = model_of(kind).train()
    ids = torch.randint(0, VOCAB, (1, 40))
    targets = torch.randint(0, VOCAB, (1, 40))
    loss, expected = one_pass_grads(model, ids, targets)
    model.zero_grad(set_to_none=True)
    got = chunked_backward(model, ids, lm_chunk_loss(targets), chunk_size=11, checkpoint_layers=True,
                           memory_budget=0, spill_dir=str(tmp_path))
    torch.testing.assert_close(got, loss, rtol=1e-5, atol=1e-6)
    assert_grads_close(model, expected)


def test_chunked_backward_accumulates_like_backward():
    model = make_model().train()
    ids, targets = torch.randint(0, VOCAB, (1, 30)), torch.randint(0, VOCAB, (1, 30))
    _, once = one_pass_grads(model, ids, targets)
    model.zero_grad(set_to_none=True)
    for _ in range(2):
        chunked_backward(model, ids, lm_chunk_loss(targets), chunk_size=8)
    assert_grads_close(model, {n: 2 * g for n, g in once.items()})


def test_causal_lm_targets_are_the_shifted_inputs():
    model = make_model().train()
    seq = torch.randint(0, VOCAB, (2, LENGTH + 1))
    from seqssm.pipelines.objectives import causal_lm_loss

    model.zero_grad(set_to_none=True)
    loss = causal_lm_loss(model, seq)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    got = chunked_backward(model, seq[:, :-1], lm_chunk_loss(seq[:, 1:]), chunk_size=13)
    torch.testing.assert_close(got, loss.detach(), rtol=1e-5, atol=1e-6)
    assert_grads_close(model, expected)


def _truncated_reference(model, ids, targets, chunk_size):
    """Truncated BPTT through the model's own cache path: each chunk starts from the (constant) states
    the earlier chunks left, and only its own loss is backpropagated.
    """
    model.zero_grad(set_to_none=True)
    cache = model.allocate_cache(ids.shape[0])
    count = int((targets != -100).sum())
    # The cache path overwrites the states it started from; saving copies keeps autograd's inputs intact.
    with torch.autograd.graph.saved_tensors_hooks(torch.clone, lambda t: t):
        _truncated_chunks(model, ids, targets, chunk_size, cache, count)
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _truncated_chunks(model, ids, targets, chunk_size, cache, count) -> None:
    for s in range(0, ids.shape[1], chunk_size):
        e = min(s + chunk_size, ids.shape[1])
        hidden, residual = model.backbone.embedding(ids[:, s:e]), None
        for layer, layer_cache in zip(model.backbone.layers, cache.layers, strict=True):
            hidden, residual = layer(hidden, residual, cache=layer_cache)
        normed, _ = add_rms_norm(hidden, residual, model.backbone.norm_f.weight, model.backbone.norm_f.eps)
        logits = model.lm_head(normed)[..., :VOCAB]
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets[:, s:e].reshape(-1), reduction="sum") / count
        loss.backward()
        for layer_cache in cache.layers:
            layer_cache.conv_state = layer_cache.conv_state.detach()
            layer_cache.ssm_state = layer_cache.ssm_state.detach()


def test_truncated_bptt_cuts_the_state_gradient_at_chunk_boundaries():
    model = make_model(impl="ref").train()
    ids, targets = torch.randint(0, VOCAB, (2, 29)), torch.randint(0, VOCAB, (2, 29))
    expected = _truncated_reference(model, ids, targets, 8)
    _, exact = one_pass_grads(model, ids, targets)
    model.zero_grad(set_to_none=True)
    chunked_backward(model, ids, lm_chunk_loss(targets), chunk_size=8, truncate_bptt=True)
    assert_grads_close(model, expected)
    # and it does differ from the exact gradient, which a longer chunk recovers
    assert not torch.allclose(model.backbone.layers[0].mixer.A_log.grad,
                              exact["backbone.layers.0.mixer.A_log"], rtol=1e-3)
    model.zero_grad(set_to_none=True)
    chunked_backward(model, ids, lm_chunk_loss(targets), chunk_size=29, truncate_bptt=True)
    assert_grads_close(model, exact)


def _saved_bytes_per_chunk(model, ids, targets, chunk_size) -> int:
    """Largest number of bytes autograd saved for backward while one chunk's graph was alive."""
    packed = [0]
    marks = []

    def pack(t):
        packed[0] += t.numel() * t.element_size()
        return t

    base = lm_chunk_loss(targets)

    def loss_fn(logits, s, e):
        marks.append(packed[0])
        return base(logits, s, e)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_backward(model, ids, loss_fn, chunk_size=chunk_size)
    return max(b - a for a, b in zip([0, *marks], marks, strict=False))


def test_saved_activations_depend_on_the_chunk_not_the_length():
    model = make_model().train()
    short, long = (torch.randint(0, VOCAB, (1, n)) for n in (32, 160))
    per_chunk_short = _saved_bytes_per_chunk(model, short, short, 16)
    per_chunk_long = _saved_bytes_per_chunk(model, long, long, 16)
    assert per_chunk_long == per_chunk_short
    one_chunk_long = _saved_bytes_per_chunk(model, long, long, 160)
    assert one_chunk_long > 4 * per_chunk_long


# ------------------------------------------------------------------------------------------ block checkpointing


def _saved_bytes(fn) -> int:
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_checkpoint_blocks_keeps_gradients_and_state_dict_and_saves_less(kind):
    model = model_of(kind).train()
    ids, targets = torch.randint(0, VOCAB, (2, 33)), torch.randint(0, VOCAB, (2, 33))
    loss, expected = one_pass_grads(model, ids, targets)
    plain_bytes = _saved_bytes(lambda: model(ids))
    keys = list(model.state_dict())
    with blocks_checkpointed(model):
        assert list(model.state_dict()) == keys
        got, grads = one_pass_grads(model, ids, targets)
        checkpointed_bytes = _saved_bytes(lambda: model(ids))
    torch.testing.assert_close(got, loss)
    for name, g in grads.items():
        torch.testing.assert_close(g, expected[name], rtol=1e-5, atol=1e-7)
    assert checkpointed_bytes < plain_bytes / 2
    assert _saved_bytes(lambda: model(ids)) == plain_bytes  # undone on leaving the block
    checkpoint_blocks(model)
    checkpoint_blocks(model)  # idempotent: not wrapped twice
    with torch.no_grad():
        torch.testing.assert_close(model(ids), checkpoint_blocks(model, False)(ids))


# ------------------------------------------------------------------------------------------ errors


def test_bad_inputs_raise_input_error():
    causal, bidirectional = make_model(), model_of("bidirectional")
    ids = torch.randint(0, VOCAB, (1, 10))
    with pytest.raises(InputError, match="chunk_size"):
        chunked_forward(causal, ids, chunk_size=0)
    with pytest.raises(InputError, match="token ids"):
        chunked_forward(causal, ids + VOCAB, chunk_size=4)
    with pytest.raises(InputError, match=r"\[B, L\]"):
        chunked_forward(causal, ids[0], chunk_size=4)
    with pytest.raises(InputError, match="out has shape"):
        chunked_forward(causal, ids, chunk_size=4, out=np.zeros((1, 9, 16)))
    with pytest.raises(InputError, match="causal"):
        next(stream_hidden(bidirectional, [ids]))
    with pytest.raises(InputError, match="allocate_cache"):
        next(stream_hidden(causal, [ids], causal.allocate_cache(2)))
    with pytest.raises(InputError, match="truncate_bptt"):
        chunked_backward(bidirectional, ids, lm_chunk_loss(ids), chunk_size=4, truncate_bptt=True)
    with pytest.raises(InputError, match="MambaLMHeadModel"):
        chunked_forward(causal.backbone, ids, chunk_size=4)
