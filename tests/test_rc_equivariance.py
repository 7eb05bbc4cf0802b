"""RC-PS (Caduceus-PS) models: f(rc(x)) = rc(f(x)) for logits, hidden states and gradients, on random
weights, odd lengths and right padding; the building blocks against hand formulas; pooling and
test-time strand averaging; checkpoints.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import (
    MambaLMHeadModel,
    RCPSEmbedding,
    RCPSLMHead,
    complement_map,
    load_model,
    rc_invariant_pool,
    reverse_complement_hidden,
    reverse_complement_ids,
    rms_norm,
    strand_average,
)
from seqssm.models.bidirectional import reverse_index
from seqssm.tokenizers import NucleotideTokenizer

TOK = NucleotideTokenizer()
VOCAB = TOK.vocab_size
COMP = complement_map(TOK)
ATOL = 1e-5


def rc_model(impl: str = "ref", **kw) -> MambaLMHeadModel:
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": VOCAB, "d_state": 8,
                            "rc_equivariant": True, **kw})
    model = MambaLMHeadModel(config, impl=impl)
    with torch.no_grad():  # off the structured init (ones, zeros, repeated rows) that could hide a wrong flip
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def dna(batch: int, length: int) -> torch.Tensor:
    """Random ids over A C G T N plus an occasional special token inside (the complement fixes those)."""
    ids = torch.randint(TOK.a_id, TOK.n_id + 1, (batch, length))
    ids[:, length // 3] = TOK.unk_id
    return ids


def padded(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, L] with random ids in the padding too (they must not matter), and the mask."""
    ids = dna(len(lengths), max(lengths))
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    return ids, mask


def rc_logits(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B, L, V] of x as the rc strand sees them: each real prefix reversed, vocabulary complemented."""
    return reverse_complement_hidden(logits[..., COMP].flip(-1), mask)


# ---------------------------------------------------------------- helpers against the tokenizer


def test_complement_map_comes_from_the_tokenizer():
    assert COMP.tolist() == [0, 1, 2, 3, 4, TOK.t_id, TOK.g_id, TOK.c_id, TOK.a_id, TOK.n_id]
    assert complement_map(TOK, 16)[10:].tolist() == list(range(10, 16))
    with pytest.raises(InputError, match="smaller"):
        complement_map(TOK, 5)


def test_reverse_complement_ids_reverses_only_the_real_prefix():
    ids, mask = padded([7, 4, 1])
    out = reverse_complement_ids(ids, COMP, mask)
    for row, n in enumerate([7, 4, 1]):
        assert torch.equal(out[row, :n], TOK.reverse_complement(ids[row, :n]))
        assert torch.equal(out[row, n:], COMP[ids[row, n:]])  # in place (complemented)
    assert torch.equal(reverse_complement_ids(ids, COMP), TOK.reverse_complement(ids))


def test_reverse_complement_hidden_flips_length_and_channels():
    hidden = torch.randn(2, 5, 6)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
    out = reverse_complement_hidden(hidden, mask)
    assert torch.equal(out[0, :3], hidden[0, :3].flip(0).flip(-1))
    assert torch.equal(out[0, 3:], hidden[0, 3:].flip(-1))
    assert torch.equal(out[1], hidden[1].flip(0, 1))


# ---------------------------------------------------------------- building blocks by hand


def test_embedding_is_forward_and_flipped_rc_halves():
    emb = RCPSEmbedding(16, 12, complement_map(TOK, 16))
    ids = dna(2, 7)
    table = emb.weight
    expected = torch.cat([table[ids], table[TOK.reverse_complement(ids)].flip(1).flip(-1)], dim=-1)
    assert emb.weight.shape == (16, 6)
    torch.testing.assert_close(emb(ids), expected, atol=0, rtol=0)


def test_lm_head_scores_rc_half_with_complement_rows():
    head = RCPSLMHead(12, 16, complement_map(TOK, 16))
    hidden = torch.randn(2, 5, 12)
    w = head.weight  # [16, 6]
    comp = complement_map(TOK, 16)
    expected = hidden[..., :6] @ w.T + hidden[..., 6:].flip(-1) @ w[comp].T
    torch.testing.assert_close(head(hidden), expected, atol=1e-6, rtol=1e-6)


def test_rms_norm_on_halves_equals_each_half_alone():
    x, w = torch.randn(3, 4, 10), torch.randn(5)
    out = rms_norm(x, w, 1e-5, rc_halves=True)
    half = [h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5) for h in x.chunk(2, -1)]
    torch.testing.assert_close(out, torch.cat([half[0] * w, half[1] * w.flip(0)], -1))


# ---------------------------------------------------------------- config and structure


def test_config_rc_implies_bidirectional_and_halves_the_mixer():
    c = MambaConfig(d_model=32, n_layer=1, vocab_size=VOCAB, rc_equivariant=True)
    assert c.bidirectional and (c.d_mixer, c.d_inner, c.resolved_dt_rank) == (16, 32, 1)
    assert MambaConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(InputError, match="even"):
        MambaConfig(d_model=15, n_layer=1, vocab_size=VOCAB, rc_equivariant=True)
    with pytest.raises(InputError, match="nucleotide"):
        MambaConfig(d_model=16, n_layer=1, vocab_size=260, rc_equivariant=True, tokenizer="byte")
    with pytest.raises(InputError, match="rc_equivariant"):
        MambaConfig(d_model=16, n_layer=1, vocab_size=VOCAB, rc_equivariant="yes")


def test_lm_head_is_tied_and_every_parameter_gets_a_gradient():
    model = rc_model(bias=True)
    assert model.lm_head.weight is model.backbone.embedding.weight
    ids = dna(2, 9)
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- equivariance


@pytest.mark.parametrize("impl", ["ref", "chunked"])
@pytest.mark.parametrize("kw", [{}, {"bidirectional_weight_tie": False, "tie_embeddings": False, "bias": True}])
@pytest.mark.parametrize("length", [1, 2, 13])
def test_logits_and_hidden_are_rc_equivariant(impl, kw, length):
    model = rc_model(impl, **kw)
    ids = dna(3, length)
    rc = reverse_complement_ids(ids, COMP)
    hidden, hidden_rc = model.backbone(ids), model.backbone(rc)
    torch.testing.assert_close(hidden_rc, reverse_complement_hidden(hidden), atol=ATOL, rtol=0)
    logits, logits_rc = model(ids), model(rc)
    torch.testing.assert_close(logits_rc, rc_logits(logits), atol=ATOL, rtol=0)
    assert logits.abs().max() > 0.1  # not trivially equal


@pytest.mark.parametrize("impl", ["ref", "chunked"])
def test_equivariance_holds_per_row_under_right_padding(impl):
    model = rc_model(impl)
    lengths = [17, 10, 1, 4]
    ids, mask = padded(lengths)
    rc = reverse_complement_ids(ids, COMP, mask)
    hidden = model.backbone(ids, mask)
    hidden_rc = model.backbone(rc, mask)
    expected = reverse_complement_hidden(hidden, mask)
    logits_expected = rc_logits(model(ids, attention_mask=mask), mask)
    logits_rc = model(rc, attention_mask=mask)
    for row, n in enumerate(lengths):
        torch.testing.assert_close(hidden_rc[row, :n], expected[row, :n], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits_rc[row, :n], logits_expected[row, :n], atol=ATOL, rtol=0)


def test_equivariance_of_inputs_embeds_path():
    model = rc_model()
    embeds = torch.randn(2, 11, 16)
    out = model.backbone(inputs_embeds=embeds)
    out_rc = model.backbone(inputs_embeds=reverse_complement_hidden(embeds))
    torch.testing.assert_close(out_rc, reverse_complement_hidden(out), atol=ATOL, rtol=0)


def test_plain_bidirectional_model_is_not_equivariant():
    """The check above can fail: an unconstrained bidirectional model of the same size does not pass it."""
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=8, bidirectional=True)
    model = MambaLMHeadModel(config, impl="ref")
    ids = dna(2, 13)
    gap = model(reverse_complement_ids(ids, COMP)) - rc_logits(model(ids))
    assert gap.abs().max() > 1e-3


def test_loss_and_every_gradient_agree_on_both_strands():
    """A masked-LM loss on x and on rc(x) (labels rc'd alike) is one function of the weights."""
    model = rc_model(bias=True)
    ids, mask = padded([15, 9])
    labels = torch.where(torch.rand(ids.shape) < 0.3, ids, torch.full_like(ids, -100))
    labels[mask == 0] = -100
    rc_labels = reverse_complement_ids(labels.clamp_min(0), COMP, mask)
    rc_labels[labels.gather(1, reverse_index(mask)) == -100] = -100
    grads = []
    for inputs, target in ((ids, labels), (reverse_complement_ids(ids, COMP, mask), rc_labels)):
        model.zero_grad()
        loss = F.cross_entropy(model(inputs, attention_mask=mask).flatten(0, 1), target.flatten())
        loss.backward()
        grads.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-6, rtol=1e-6)
    for name, grad in grads[0][1].items():
        torch.testing.assert_close(grads[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


# ---------------------------------------------------------------- pooling


def test_rc_invariant_pool_is_identical_for_both_strands():
    model = rc_model()
    lengths = [13, 6, 1]
    ids, mask = padded(lengths)
    pooled = rc_invariant_pool(model.backbone(ids, mask), mask)
    pooled_rc = rc_invariant_pool(model.backbone(reverse_complement_ids(ids, COMP, mask), mask), mask)
    assert pooled.shape == (3, 8)
    torch.testing.assert_close(pooled_rc, pooled, atol=ATOL, rtol=0)
    for row, n in enumerate(lengths):  # padding ignored: equals the row alone
        alone = rc_invariant_pool(model.backbone(ids[row: row + 1, :n]))
        torch.testing.assert_close(pooled[row: row + 1], alone, atol=ATOL, rtol=0)


def test_rc_invariant_pool_formula_and_errors():
    hidden = torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    mean = torch.stack([hidden[0, :2].mean(0), hidden[1].mean(0)])
    expected = (mean[:, :3] + mean[:, 3:].flip(-1)) / 2
    torch.testing.assert_close(rc_invariant_pool(hidden, mask), expected)
    torch.testing.assert_close(rc_invariant_pool(hidden)[1], expected[1])
    with pytest.raises(InputError, match="no real token"):
        rc_invariant_pool(hidden, torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]]))
    with pytest.raises(InputError, match="even"):
        rc_invariant_pool(torch.randn(2, 4, 5))
    with pytest.raises(InputError, match="attention_mask"):
        rc_invariant_pool(hidden, mask[:, :3])


# ---------------------------------------------------------------- strand averaging


def bidirectional_model() -> MambaLMHeadModel:
    model = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=VOCAB, d_state=8,
                                         bidirectional=True), impl="ref")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@torch.no_grad()
def test_strand_average_matches_per_row_hand_computation():
    model = bidirectional_model()
    lengths = [11, 5]
    ids, mask = padded(lengths)

    def fn(x, m):
        return model(x, attention_mask=m)

    def pooled(x, m):
        return (model.backbone(x, m) * m[..., None]).sum(1) / m.sum(1, keepdim=True)

    logits = strand_average(fn, ids, mask, TOK, kind="token_logits")
    per_position = strand_average(fn, ids, mask, TOK, kind="per_position")
    pooled_avg = strand_average(pooled, ids, mask, TOK)
    for row, n in enumerate(lengths):
        x = ids[row: row + 1, :n]
        x_rc = TOK.reverse_complement(x)
        out, out_rc = model(x)[0], model(x_rc)[0]
        torch.testing.assert_close(per_position[row, :n], (out + out_rc.flip(0)) / 2, atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[row, :n], (out + out_rc.flip(0)[:, COMP]) / 2, atol=ATOL, rtol=0)
        mean = (model.backbone(x)[0].mean(0) + model.backbone(x_rc)[0].mean(0)) / 2
        torch.testing.assert_close(pooled_avg[row], mean, atol=ATOL, rtol=0)


@torch.no_grad()
def test_strand_average_of_an_rc_model_changes_nothing():
    model = rc_model()
    ids, mask = padded([12, 7])
    logits = model(ids, attention_mask=mask)
    averaged = strand_average(lambda x, m: model(x, attention_mask=m), ids, mask, TOK, kind="token_logits")
    torch.testing.assert_close(averaged[0], logits[0], atol=ATOL, rtol=0)
    torch.testing.assert_close(averaged[1, :7], logits[1, :7], atol=ATOL, rtol=0)


@torch.no_grad()
def test_strand_average_makes_any_model_rc_symmetric():
    model = bidirectional_model()
    ids = dna(2, 9)

    def fn(x, m):
        return model(x, attention_mask=m)

    averaged = strand_average(fn, ids, None, TOK, kind="token_logits")
    averaged_rc = strand_average(fn, reverse_complement_ids(ids, COMP), None, TOK, kind="token_logits")
    torch.testing.assert_close(averaged_rc, rc_logits(averaged), atol=ATOL, rtol=0)


def test_strand_average_checks_its_inputs():
    ids = dna(2, 5)
    with pytest.raises(InputError, match="kind"):
        strand_average(lambda x, m: x, ids, None, TOK, kind="mean")
    with pytest.raises(InputError, match=r"\[B, L, \.\.\.\]"):
        strand_average(lambda x, m: x.float().sum(1), ids, None, TOK, kind="per_position")
    with pytest.raises(InputError, match="attention_mask"):
        strand_average(lambda x, m: x, ids, torch.ones(2, 4), TOK)


# ---------------------------------------------------------------- checkpoints


def test_rc_model_round_trips_bit_exactly(tmp_path):
    model = rc_model(tie_embeddings=False)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", impl="ref")
    assert loaded.config == model.config and loaded.config.rc_equivariant
    state, state_loaded = model.state_dict(), loaded.state_dict()
    assert list(state) == list(state_loaded)
    for key, value in state.items():
        assert value.dtype == state_loaded[key].dtype and torch.equal(value, state_loaded[key]), key
    assert torch.equal(loaded.backbone.embedding.complement, complement_map(TOK, 16))
    ids, mask = padded([9, 4])
    assert torch.equal(loaded(ids, attention_mask=mask), model(ids, attention_mask=mask))
