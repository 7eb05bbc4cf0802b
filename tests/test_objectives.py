"""Training objectives: BERT masking statistics and rules, masked-LM and causal-LM losses by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seqssm.pipelines.objectives import IGNORE, causal_lm_loss, mask_tokens, masked_lm_loss

MASK_ID = 1
VOCAB_IDS = torch.tensor([20, 21, 22])  # disjoint from the data ids, so every random replacement is visible


def sigmas(count: int, n: int, p: float) -> float:
    """How many binomial standard deviations ``count`` of ``n`` lies from its mean n·p."""
    return abs(count - n * p) / math.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def large():
    """A masked [400, 1000] batch of ids 5..8 with ~10% special positions."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(5, 9, (400, 1000), generator=g)
    special = torch.rand(ids.shape, generator=g) < 0.1
    inputs, labels = mask_tokens(ids, mask_id=MASK_ID, vocab_ids=VOCAB_IDS, mask_prob=0.15, special=special,
                                 generator=torch.Generator().manual_seed(0))
    return ids, special, inputs, labels


def test_chooses_mask_prob_of_the_eligible_positions(large):
    ids, special, _, labels = large
    chosen = labels != IGNORE
    eligible = int((~special).sum())
    assert sigmas(int(chosen.sum()), eligible, 0.15) < 5


def test_80_10_10_split_of_the_chosen_positions(large):
    ids, _, inputs, labels = large
    chosen = labels != IGNORE
    n = int(chosen.sum())
    masked = int((inputs[chosen] == MASK_ID).sum())
    randomized = int(torch.isin(inputs[chosen], VOCAB_IDS).sum())
    kept = int((inputs[chosen] == ids[chosen]).sum())
    assert masked + randomized + kept == n
    assert sigmas(masked, n, 0.8) < 5 and sigmas(randomized, n, 0.1) < 5 and sigmas(kept, n, 0.1) < 5


def test_random_replacements_come_only_from_vocab_ids_and_cover_them(large):
    ids, _, inputs, labels = large
    changed = inputs[(inputs != ids) & (inputs != MASK_ID)]
    assert torch.isin(changed, VOCAB_IDS).all()
    counts = torch.stack([(changed == v).sum() for v in VOCAB_IDS])
    assert all(sigmas(int(c), len(changed), 1 / 3) < 5 for c in counts)


def test_special_positions_are_never_chosen_and_labels_ignore_the_rest(large):
    ids, special, inputs, labels = large
    chosen = labels != IGNORE
    assert not (chosen & special).any()
    assert torch.equal(inputs[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])
    assert (labels[~chosen] == IGNORE).all()


def test_masking_is_reproducible_from_a_seed():
    ids = torch.randint(5, 9, (8, 64))

    def run(seed):
        return mask_tokens(ids, mask_id=MASK_ID, vocab_ids=VOCAB_IDS, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_all_special_chooses_nothing():
    ids = torch.randint(5, 9, (2, 50))
    inputs, labels = mask_tokens(ids, mask_id=MASK_ID, vocab_ids=VOCAB_IDS, mask_prob=0.9,
                                 special=torch.ones_like(ids, dtype=torch.bool))
    assert torch.equal(inputs, ids) and (labels == IGNORE).all()


class FixedLogits(nn.Module):
    """Returns a fixed logits tensor and records the inputs and mask it was called with."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits
        self.calls = []

    def forward(self, ids, attention_mask=None):
        self.calls.append((ids, attention_mask))
        return self.logits


def cross_entropy_by_hand(logits_row: list[float], target: int) -> float:
    return math.log(sum(math.exp(v) for v in logits_row)) - logits_row[target]


def test_masked_lm_loss_by_hand_with_and_without_weights():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [1.0, 3.0, 0.0]],
                           [[0.0, 0.0, 0.0], [-2.0, 1.0, 4.0], [0.3, -0.7, 1.1]]])
    labels = torch.tensor([[0, IGNORE, 1], [IGNORE, 2, IGNORE]])
    inputs = torch.tensor([[1, 0, 1], [2, 1, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    model = FixedLogits(logits)
    ce = [cross_entropy_by_hand(logits[0, 0].tolist(), 0), cross_entropy_by_hand(logits[0, 2].tolist(), 1),
          cross_entropy_by_hand(logits[1, 1].tolist(), 2)]
    loss = masked_lm_loss(model, inputs, labels, attention_mask=mask)
    assert loss.item() == pytest.approx(sum(ce) / 3, rel=1e-6)
    assert model.calls[-1][0] is inputs and model.calls[-1][1] is mask
    weights = torch.tensor([[0.5, 9.0, 2.0], [9.0, 1.0, 9.0]])  # the 9s sit on ignored positions
    loss = masked_lm_loss(model, inputs, labels, weights=weights)
    assert loss.item() == pytest.approx((0.5 * ce[0] + 2.0 * ce[1] + 1.0 * ce[2]) / 3.5, rel=1e-6)


def test_masked_lm_loss_with_nothing_chosen_is_zero_not_nan():
    model = FixedLogits(torch.randn(1, 4, 3))
    loss = masked_lm_loss(model, torch.zeros(1, 4, dtype=torch.long), torch.full((1, 4), IGNORE))
    assert loss.item() == 0.0


class TableLM(nn.Module):
    """logits[b, t] = table[ids[b, t]]: a model whose output depends on its input, so shifts are checked."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table

    def forward(self, ids):
        return self.table[ids]


def test_causal_lm_loss_by_hand_with_and_without_weights():
    table = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, -1.0], [0.5, 0.5, 2.5]])
    ids = torch.tensor([[0, 2, 1, 1], [2, 0, 0, 2]])
    model = TableLM(table)
    ce = [[cross_entropy_by_hand(table[ids[b, t - 1]].tolist(), int(ids[b, t])) for t in range(1, 4)]
          for b in range(2)]
    flat = [v for row in ce for v in row]
    assert causal_lm_loss(model, ids).item() == pytest.approx(sum(flat) / 6, rel=1e-6)
    weights = torch.tensor([[7.0, 1.0, 0.0, 2.0], [7.0, 0.5, 0.5, 1.0]])  # column 0 is never a target
    w = [1.0, 0.0, 2.0, 0.5, 0.5, 1.0]
    expected = sum(wi * c for wi, c in zip(w, flat, strict=True)) / sum(w)
    assert causal_lm_loss(model, ids, weights).item() == pytest.approx(expected, rel=1e-6)
