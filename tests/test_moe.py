"""MoE MLP routing: deterministic top-k with ties to the lower index, capacity overflow, the Switch loss."""

from __future__ import annotations

import torch

from seqssm.models.moe import MoEMLP, keep_within_capacity, route


def test_route_breaks_ties_by_index():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.4, 0.1], [0.5, 0.1, 0.1, 0.3]])
    experts, gates = route(probs, 2)
    assert experts.tolist() == [[0, 1], [1, 2], [0, 3]]
    torch.testing.assert_close(gates, torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.625, 0.375]]))
    assert route(probs, 1)[0].tolist() == [[0], [1], [0]]


def test_same_input_same_assignment():
    layer = MoEMLP(d_model=8, d_ff=16, n_experts=4, top_k=2).train()
    x = torch.randn(3, 5, 8)
    out1, counts1, dropped1 = layer(x), layer.counts.clone(), layer.dropped
    out2 = layer(x)
    assert torch.equal(out1, out2) and torch.equal(counts1, layer.counts) and dropped1 == layer.dropped


def test_capacity_keeps_first_assignments_and_drops_the_rest():
    # 5 tokens, all first choice expert 0, second choice expert 1; capacity 2.
    experts = torch.tensor([[0, 1]] * 5)
    keep = keep_within_capacity(experts, 3, 2)
    assert keep[:, 0].tolist() == [True, True, False, False, False]
    assert keep[:, 1].tolist() == [True, True, False, False, False]
    # choice 0 is served before choice 1: token 4's first choice beats token 0's second choice.
    experts = torch.tensor([[1, 0], [1, 0], [0, 1]])
    keep = keep_within_capacity(experts, 2, 1)
    assert keep.tolist() == [[True, False], [False, False], [True, False]]


def test_overflowing_tokens_pass_through_as_zero():
    layer = MoEMLP(d_model=4, d_ff=8, n_experts=2, top_k=1, capacity_factor=0.5).train()
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0, 0] = 10.0  # every token with x[0] > 0 goes to expert 0
    x = torch.randn(1, 8, 4).abs()
    out = layer(x)[0]
    capacity = layer.capacity(8)  # ceil(0.5 * 8 / 2) = 2
    assert capacity == 2 and layer.dropped == 6 and layer.counts.tolist() == [8, 0]
    assert out[:2].abs().sum(-1).gt(0).all() and torch.equal(out[2:], torch.zeros_like(out[2:]))
    layer.eval()  # no capacity at inference: every token gets its expert
    assert layer(x)[0].abs().sum(-1).gt(0).all() and layer.dropped == 0


def test_balance_loss_is_one_when_uniform_and_grows_when_skewed():
    layer = MoEMLP(d_model=4, d_ff=8, n_experts=4, top_k=1)
    with torch.no_grad():
        layer.router.weight.zero_()
    layer(torch.randn(2, 6, 4))
    torch.testing.assert_close(layer.aux_loss, torch.tensor(1.0))
    with torch.no_grad():
        layer.router.weight[0, 0] = 50.0
    layer(torch.randn(2, 6, 4).abs())
    assert float(layer.aux_loss.detach()) > 3.5


def test_step_equals_eval_forward():
    layer = MoEMLP(d_model=8, d_ff=16, n_experts=3, top_k=2).eval()
    x = torch.randn(4, 8)
    torch.testing.assert_close(layer.step(x), layer(x[:, None])[:, 0])
