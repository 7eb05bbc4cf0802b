"""Right padding: a padded batch gives every row, on its real positions, what the row gives alone, for the
causal, bidirectional and RC-equivariant models, both kernel paths, token ids and inputs_embeds, outputs
and gradients; the bidirectional reverse pass starts at each row's last real token.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel, rc_invariant_pool
from seqssm.models.bidirectional import BiMambaMixer, reverse_index, reverse_padded
from seqssm.pipelines.objectives import IGNORE, masked_lm_loss

VOCAB = 10
LENGTHS = [13, 6, 1, 9]
KINDS = {
    "causal": {},
    "bidirectional": {"bidirectional": True},
    "rc": {"rc_equivariant": True},
}
ATOL = 1e-5


def model_of(kind: str, impl: str = "ref", **kw) -> MambaLMHeadModel:
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": VOCAB, "d_state": 8, **KINDS[kind], **kw})
    model = MambaLMHeadModel(config, impl=impl)
    with torch.no_grad():  # off the structured init, so every state component carries information
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def batch(lengths: list[int]) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Sequences, their right-padded batch [B, L] with random ids in the padding, and the mask [B, L]."""
    seqs = [torch.randint(0, VOCAB, (n,)) for n in lengths]
    ids = torch.randint(0, VOCAB, (len(seqs), max(lengths)))  # padding content must not matter
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return seqs, ids, mask


def test_reverse_index_reverses_each_real_prefix():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    idx = reverse_index(mask)
    assert idx.tolist() == [[2, 1, 0, 3, 4], [4, 3, 2, 1, 0], [0, 1, 2, 3, 4]]
    x = torch.randn(3, 5, 2)
    torch.testing.assert_close(reverse_padded(reverse_padded(x, idx), idx), x, atol=0, rtol=0)


def test_reverse_pass_starts_at_the_last_real_token():
    mixer = BiMambaMixer(d_model=8, d_state=4, impl="ref")
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    real, pad = torch.randn(1, 5, 8), torch.randn(1, 3, 8)
    hidden = torch.cat([real, pad], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    expected = mixer.fwd(real) + mixer.rev(real.flip(1)).flip(1)
    torch.testing.assert_close(mixer(hidden, rev_index=reverse_index(mask))[:, :5], expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", ["ref", "chunked"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_padded_batch_equals_each_sequence_alone(kind, impl):
    model = model_of(kind, impl)
    seqs, ids, mask = batch(LENGTHS)
    hidden = model.backbone(ids, mask)
    logits = model(ids, attention_mask=mask)
    for i, s in enumerate(seqs):
        n = len(s)
        torch.testing.assert_close(hidden[i, :n], model.backbone(s[None])[0], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[i, :n], model(s[None])[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_all_ones_mask_equals_no_mask(kind):
    model = model_of(kind)
    ids = torch.randint(0, VOCAB, (2, 11))
    torch.testing.assert_close(model(ids, attention_mask=torch.ones_like(ids)), model(ids), atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["bidirectional", "rc"])
def test_padding_without_a_mask_leaks(kind):
    """The mask is what makes padding harmless: without it the reverse pass reads the padding first."""
    model = model_of(kind)
    s = torch.randint(0, VOCAB, (6,))
    ids = torch.cat([s, torch.randint(0, VOCAB, (5,))])[None]
    assert (model(ids)[0, :6] - model(s[None])[0]).abs().max() > 1e-4


@pytest.mark.parametrize("kind", list(KINDS))
def test_inputs_embeds_padded_batch_equals_each_row_alone(kind):
    model = model_of(kind)
    embeds = torch.randn(len(LENGTHS), max(LENGTHS), 16)
    _, _, mask = batch(LENGTHS)
    out = model.backbone(inputs_embeds=embeds, attention_mask=mask)
    for i, n in enumerate(LENGTHS):
        alone = model.backbone(inputs_embeds=embeds[i: i + 1, :n])[0]
        torch.testing.assert_close(out[i, :n], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_pooled_outputs_ignore_padding(kind):
    model = model_of(kind)
    seqs, ids, mask = batch(LENGTHS)
    hidden = model.backbone(ids, mask)
    mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    for i, s in enumerate(seqs):
        torch.testing.assert_close(mean[i], model.backbone(s[None])[0].mean(0), atol=ATOL, rtol=0)
    if kind == "rc":
        pooled = rc_invariant_pool(hidden, mask)
        for i, s in enumerate(seqs):
            torch.testing.assert_close(pooled[i], rc_invariant_pool(model.backbone(s[None]))[0], atol=ATOL, rtol=0)


@pytest.mark.parametrize("impl", ["ref", "chunked"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_gradients_of_a_padded_batch_equal_the_sum_over_rows(kind, impl):
    model = model_of(kind, impl, bias=True)
    seqs, ids, mask = batch([11, 4, 1])
    targets = torch.randint(0, VOCAB, ids.shape)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    logits = model(ids, attention_mask=mask)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.masked_fill(mask == 0, IGNORE).flatten(),
                           ignore_index=IGNORE, reduction="sum")
    padded = grads(loss)
    alone = grads(sum(F.cross_entropy(model(s[None])[0], targets[i, : len(s)], reduction="sum")
                      for i, s in enumerate(seqs)))
    for name, grad in alone.items():
        torch.testing.assert_close(padded[name], grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kind", ["bidirectional", "rc"])
def test_masked_lm_loss_of_a_padded_batch_equals_rows_alone(kind):
    model = model_of(kind)
    seqs, ids, mask = batch([12, 5])
    labels = torch.where((torch.rand(ids.shape) < 0.4) & (mask == 1), ids, IGNORE)
    labels[:, 0] = ids[:, 0]  # at least one chosen position per row
    loss = masked_lm_loss(model, ids, labels, attention_mask=mask)
    total = sum(F.cross_entropy(model(s[None])[0], labels[i, : len(s)], ignore_index=IGNORE, reduction="sum")
                for i, s in enumerate(seqs))
    torch.testing.assert_close(loss, total / (labels != IGNORE).sum(), atol=1e-5, rtol=1e-5)
