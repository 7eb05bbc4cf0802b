"""MoE MLP routing: deterministic top-k with ties to the lower index, capacity overflow, the Switch loss; in
training, the balance loss reaching the weights (plain and micro-batched steps) and expert use in the log."""

from __future__ import annotations

import json

import pytest
import torch

from seqssm.config import MambaConfig
from seqssm.data import lambda_phage_fasta
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model
from seqssm.models.moe import MoEMLP, keep_within_capacity, moe_reference, route
from seqssm.pipelines.length_schedule import LengthScheduleConfig, plan_length_schedule, step_backward
from seqssm.pipelines.objectives import ExpertUse, causal_lm_loss
from seqssm.pipelines.pretrain import PretrainConfig, pretrain


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


# ------------------------------------------------------------------ in training: the loss and the logs

MOE = dict(moe_every=1, n_experts=4, top_k=2)


def _moe_model(seed: int = 0, **extra) -> MambaLMHeadModel:
    torch.manual_seed(seed)
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=12, **{**MOE, **extra})
    return MambaLMHeadModel(config, impl="ref").train()


def test_routing_is_deterministic_through_the_model():
    ids = torch.randint(0, 12, (3, 10))
    a, b = _moe_model(), _moe_model()
    out_a = a(ids)
    counts_a = a.expert_counts()
    assert torch.equal(out_a, b(ids)) and counts_a == b.expert_counts()
    assert torch.equal(a(ids), out_a) and a.expert_counts() == counts_a  # and again on the same model
    assert all(sum(c) == ids.numel() for c in counts_a)  # every token has a first choice
    # In eval there is no capacity: a token's route is its own, whatever else is in the batch.
    a.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(ids)[:1], a(ids[:1]))


def _router_grads(model, ids, extra_loss: bool) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    use = ExpertUse(model)
    loss = causal_lm_loss(model, ids)
    (loss + (use.loss() if extra_loss else 0.0)).backward()
    return [layer.moe.router.weight.grad.clone() for layer in model.backbone.layers]


def test_balance_loss_changes_the_router_gradient():
    ids = torch.randint(0, 12, (2, 12))
    model = _moe_model()
    plain, with_aux = _router_grads(model, ids, False), _router_grads(model, ids, True)
    assert all(not torch.allclose(p, w) for p, w in zip(plain, with_aux, strict=True))
    # The change is the gradient of exactly the weighted Switch loss: at weight 0 nothing changes.
    unweighted = _moe_model(moe_aux_weight=0.0)
    assert all(torch.equal(p, w) for p, w in zip(_router_grads(unweighted, ids, False),
                                                 _router_grads(unweighted, ids, True), strict=True))
    use = ExpertUse(_moe_model())
    assert use.loss() == 0.0  # no forward yet: nothing to add
    assert not ExpertUse(MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=12))) and \
        ExpertUse(MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=12))).columns == []


def test_micro_batched_step_adds_the_balance_loss():
    ids = torch.randint(0, 12, (4, 9))
    stage = plan_length_schedule(LengthScheduleConfig(max_length=8, tokens_per_step=32,
                                                      max_tokens_per_micro_batch=16))[0]
    assert stage.grad_accum == 2
    grads = []
    for extra in (False, True):
        model = _moe_model()
        use = ExpertUse(model)
        step_backward(model, ids[:, :-1], ids[:, 1:], stage, extra_loss=use.loss if extra else None)
        grads.append(model.backbone.layers[0].moe.router.weight.grad.clone())
        # two micro-batches of two rows, every token counted once
        assert (use.row()["moe0_max_share"] >= 0.25) if extra else use.forwards == 0
    assert not torch.allclose(*grads)


TINY = dict(window=32, batch_size=2, steps=2, val_every=1, val_windows=2, lr=1e-2, warmup_steps=1, d_model=16,
            n_layer=2, d_state=4, device="cpu", impl="ref")


def test_pretrain_logs_expert_use_and_trains_on_the_balance_loss(tmp_path):
    data = str(lambda_phage_fasta())
    result = pretrain(PretrainConfig(data=data, out=str(tmp_path / "a"), **TINY, **MOE))
    assert result.steps == 2
    lines = (tmp_path / "a" / "train_log.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    assert header == ["step", "train_loss", "val_bits_per_token", "aux_loss", "moe0_max_share", "moe0_balance",
                      "moe1_max_share", "moe1_balance", "lr", "seconds"]
    rows = [dict(zip(header, map(float, line.split("\t")), strict=True)) for line in lines[1:]]
    assert len(rows) == 2
    for row in rows:
        assert 0.25 <= row["moe0_max_share"] <= 1 and 0 <= row["moe1_balance"] <= 1 and row["aux_loss"] > 0
    record = json.loads((tmp_path / "a" / "run.json").read_text())["expert_use"]
    assert record["layers"] == [0, 1] and record["n_experts"] == 4
    assert [sum(c) for c in record["counts"]] == [2 * 2 * 32] * 2  # steps × batch × window tokens per layer
    # The balance loss reaches the weights: without it (weight 0) training ends elsewhere.
    pretrain(PretrainConfig(data=data, out=str(tmp_path / "b"), **TINY, **MOE, moe_aux_weight=0.0))
    a, b = (load_model(tmp_path / name / "checkpoint").state_dict()["backbone.layers.0.moe.router.weight"]
            for name in "ab")
    assert not torch.equal(a, b)


def test_pretrain_micro_batches_train_on_the_balance_loss(tmp_path):
    data = str(lambda_phage_fasta())
    capped = dict(TINY, steps=1, max_tokens_per_micro_batch=32)  # one window per forward: 2 micro-batches
    weights = []
    for name, weight in (("a", 0.01), ("b", 0.0)):
        pretrain(PretrainConfig(data=data, out=str(tmp_path / name), **capped, **MOE, moe_aux_weight=weight))
        weights.append(load_model(tmp_path / name / "checkpoint").state_dict()["backbone.layers.0.moe.router.weight"])
    assert not torch.equal(*weights)
    header = (tmp_path / "a" / "train_log.tsv").read_text().splitlines()[0]
    assert "moe0_balance" in header


def test_chunked_training_refuses_moe(tmp_path):
    with pytest.raises(InputError, match="--max-tokens-per-micro-batch"):
        pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "a"),
                                **dict(TINY, max_tokens_per_micro_batch=16), **MOE))


# ---------------------------------------------------- no host sync; equal to the plain per-expert reference


class HostSync(AssertionError):
    pass


@pytest.fixture
def no_host_sync(monkeypatch):
    """Inside ``with no_host_sync():`` every Python-level way a tensor's value reaches the host raises: item,
    tolist, cpu, numpy, bool/int/float/index of a tensor, nonzero, and indexing by a boolean mask (a
    data-dependent shape). A CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``."""
    import contextlib

    def refuse(name):
        def raiser(*args, **kwargs):
            raise HostSync(f"host sync: {name}")
        return raiser

    getitem = torch.Tensor.__getitem__

    def checked_getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            raise HostSync("host sync: boolean-mask indexing")
        return getitem(self, index)

    @contextlib.contextmanager
    def guard():
        with monkeypatch.context() as patch:
            for name in ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__int__", "__float__",
                         "__index__"):
                patch.setattr(torch.Tensor, name, refuse(f"Tensor.{name}"))
            patch.setattr(torch.Tensor, "__getitem__", checked_getitem)
            patch.setattr(torch, "nonzero", refuse("torch.nonzero"))
            yield

    return guard


def _layer(top_k: int, capacity_factor: float, seed: int = 0) -> MoEMLP:
    torch.manual_seed(seed)
    layer = MoEMLP(d_model=8, d_ff=12, n_experts=4, top_k=top_k, capacity_factor=capacity_factor)
    with torch.no_grad():
        layer.router.weight.mul_(4.0)  # peaked routing: some experts overflow, some get nothing
    return layer


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("capacity_factor", [0.5, 1.25, 8.0])
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_gradients_equal_the_reference(top_k, capacity_factor, training):
    layer = _layer(top_k, capacity_factor).train(training)
    x = torch.randn(3, 7, 8)  # T = 21: odd
    x_fast, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(x_fast)
    ref = moe_reference(layer, x_ref)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    weight = torch.randn_like(out)
    grads = torch.autograd.grad((out * weight).sum() + layer.aux_loss, [x_fast, *layer.parameters()],
                                allow_unused=True)
    first = torch.nn.functional.one_hot(route(torch.softmax(layer.router(x_ref.reshape(-1, 8)).float(), -1),
                                              top_k)[0][:, 0], 4).float()
    probs = torch.softmax(layer.router(x_ref.reshape(-1, 8)).float(), -1)
    ref_aux = 4 * (first.mean(0) * probs.mean(0)).sum()  # the Switch loss, unchanged
    torch.testing.assert_close(layer.aux_loss, ref_aux)
    ref_grads = torch.autograd.grad((ref * weight).sum() + ref_aux, [x_ref, *layer.parameters()],
                                    allow_unused=True)
    for name, g, r in zip(["x", *(n for n, _ in layer.named_parameters())], grads, ref_grads, strict=True):
        if r is None:  # an expert the reference never ran: the fast path's gradient is zero there
            assert g is None or not g.abs().any(), name
        else:
            torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6, msg=name)
    keep = keep_within_capacity(route(probs, top_k)[0], 4, layer.capacity(21)) if training else None
    assert layer.dropped == (0 if keep is None else int((~keep).sum()))
    assert layer.counts.tolist() == first.sum(0).long().tolist()
    if training and capacity_factor == 0.5:
        assert layer.dropped > 0  # the case with overflow is exercised


def test_forward_makes_no_host_sync(no_host_sync):
    for top_k, training in ((1, True), (2, True), (2, False)):
        layer = _layer(top_k, 0.5).train(training)
        x = torch.randn(2, 9, 8, requires_grad=True)
        with no_host_sync():
            out = layer(x)
            (out.sum() + layer.aux_loss).backward()
        assert x.grad is not None and out.shape == x.shape
    with no_host_sync(), pytest.raises(HostSync):  # the guard does catch the reference's per-expert syncs
        moe_reference(layer, x)
    model = _moe_model()
    use = ExpertUse(model)
    ids = torch.randint(0, 12, (2, 9))
    loss = causal_lm_loss(model, ids)  # (the model checks its input ids on the host: not the MoE layer's)
    with no_host_sync():  # the balance loss and the expert-use tally of every training step
        loss = loss + use.loss()
    loss.backward()
    assert use.row()["moe0_max_share"] >= 0.25 and use.last > 0
