"""Mamba config, mixer, blocks and LM models on the reference path: maths, init, causality, padding."""

from __future__ import annotations

import functools
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.kernels.selective_scan import selective_scan_chunked, selective_scan_ref
from seqssm.models import BiMambaMixer, MambaLMHeadModel, MambaMixer, count_parameters
from seqssm.models import mixer as mixer_module
from seqssm.models.mixer import _warn_once, select_kernels

VOCAB = 10


def tiny(**kw) -> MambaConfig:
    return MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": VOCAB, "d_state": 8, **kw})


def randomize(model: torch.nn.Module) -> None:
    """Move every parameter off its structured init so no term of the maths hides behind a 0 or a 1."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))


# ---------------------------------------------------------------- config


def test_config_derived_fields():
    c = MambaConfig(d_model=40, n_layer=3, vocab_size=10, expand=3)
    assert (c.d_inner, c.resolved_dt_rank, c.padded_vocab_size) == (120, 3, 16)
    c = MambaConfig(d_model=40, n_layer=3, vocab_size=16, dt_rank=5, pad_vocab_size_multiple=16)
    assert (c.resolved_dt_rank, c.padded_vocab_size) == (5, 16)


def test_config_round_trip_through_json():
    c = tiny(bidirectional=True, dt_rank=3, tokenizer="byte", norm_eps=1e-6)
    data = json.loads(json.dumps(c.to_dict()))
    assert "d_inner" not in data and "padded_vocab_size" not in data
    assert MambaConfig.from_dict(data) == c


def test_config_rejects_unknown_and_missing_keys():
    data = tiny().to_dict()
    with pytest.raises(InputError, match="d_modle"):
        MambaConfig.from_dict({**data, "d_modle": 3})
    del data["vocab_size"]
    with pytest.raises(InputError, match="vocab_size"):
        MambaConfig.from_dict(data)


@pytest.mark.parametrize("bad", [{"d_model": 0}, {"n_layer": 1.5}, {"dt_rank": "big"}, {"dt_min": 0.2},
                                 {"norm_eps": "x"}, {"tokenizer": ""}, {"expand": True}, {"bias": "yes"},
                                 {"bidirectional": 1}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(InputError, match="MambaConfig"):
        tiny(**bad)


# ---------------------------------------------------------------- init


def test_mixer_init_follows_mamba_ssm():
    c = tiny(n_layer=4, bias=True, d_model=32)
    model = MambaLMHeadModel(c, impl="ref")
    mixer = model.backbone.layers[1].mixer
    n = torch.arange(1, c.d_state + 1, dtype=torch.float32)
    assert torch.equal(mixer.A_log, torch.log(n).repeat(c.d_inner, 1))
    assert mixer.A_log.dtype == torch.float32
    assert torch.equal(mixer.D, torch.ones(c.d_inner))
    dt = F.softplus(mixer.dt_proj.bias)
    assert dt.min() >= c.dt_min * (1 - 1e-5) and dt.max() <= c.dt_max * (1 + 1e-5)
    assert dt.std() > 0  # drawn, not constant
    bound = c.resolved_dt_rank**-0.5 * c.dt_scale
    assert mixer.dt_proj.weight.abs().max() <= bound and mixer.dt_proj.weight.abs().max() > bound / 2
    # out_proj: kaiming-uniform bound 1/sqrt(fan_in), then 1/sqrt(n_layer)
    out_bound = 1 / math.sqrt(c.d_inner) / math.sqrt(c.n_layer)
    assert mixer.out_proj.weight.abs().max() <= out_bound
    assert mixer.out_proj.weight.abs().max() > 0.8 * out_bound
    assert torch.equal(mixer.in_proj.bias, torch.zeros_like(mixer.in_proj.bias))
    assert torch.equal(mixer.out_proj.bias, torch.zeros_like(mixer.out_proj.bias))
    emb = model.backbone.embedding.weight
    assert 0.015 < emb.std().item() < 0.025
    assert model.lm_head.weight is emb
    assert mixer.A_log._no_weight_decay and mixer.D._no_weight_decay


def test_dt_floor_applies():
    c = tiny(dt_min=1e-6, dt_max=2e-6, dt_init_floor=1e-3)
    dt = F.softplus(MambaLMHeadModel(c).backbone.layers[0].mixer.dt_proj.bias.double())
    assert torch.allclose(dt, torch.full_like(dt, 1e-3), rtol=1e-4)


# ---------------------------------------------------------------- mixer maths


def mixer_by_hand(mixer: MambaMixer, hidden: torch.Tensor) -> torch.Tensor:
    """The Mamba-1 recurrence written out with nn.Conv1d and an explicit loop: [B, L, D] -> [B, L, D]."""
    length = hidden.shape[1]
    x, z = mixer.in_proj(hidden).chunk(2, dim=-1)  # [B, L, E]
    x = F.silu(mixer.conv1d(x.transpose(1, 2))[..., :length]).transpose(1, 2)
    dt, Bm, Cm = torch.split(mixer.x_proj(x), [mixer.dt_rank, mixer.d_state, mixer.d_state], dim=-1)
    dt = F.softplus(mixer.dt_proj(dt))  # [B, L, E]
    A = -torch.exp(mixer.A_log)  # [E, N]
    h = x.new_zeros(x.shape[0], mixer.d_inner, mixer.d_state)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[:, t])[..., None] * Bm[:, t, None, :]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + mixer.D * x[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return mixer.out_proj(y)


@pytest.mark.parametrize("bias", [False, True])
def test_mixer_matches_written_out_recurrence(bias):
    mixer = MambaMixer(d_model=16, d_state=8, d_conv=4, expand=2, bias=bias, impl="ref")
    randomize(mixer)
    hidden = torch.randn(2, 11, 16)
    torch.testing.assert_close(mixer(hidden), mixer_by_hand(mixer, hidden), atol=1e-5, rtol=1e-5)


def test_every_parameter_gets_a_gradient():
    model = MambaLMHeadModel(tiny(bidirectional=True, bias=True), impl="ref")
    ids = torch.randint(0, VOCAB, (2, 9))
    F.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- models


def test_logits_shape_and_vocab_slice():
    model = MambaLMHeadModel(tiny(), impl="ref")
    ids = torch.randint(0, VOCAB, (3, 7))
    logits = model(ids)
    assert logits.shape == (3, 7, VOCAB)
    full = model.lm_head(model.backbone(ids))
    assert full.shape[-1] == 16
    torch.testing.assert_close(logits, full[..., :VOCAB])
    assert model.backbone(ids).shape == (3, 7, 16)


def test_residual_stream_is_fp32_in_a_bf16_model():
    model = MambaLMHeadModel(tiny(), impl="ref")
    ids = torch.randint(0, VOCAB, (2, 9))
    ref = model(ids)
    model.to(torch.bfloat16)
    seen = []
    handle = model.backbone.layers[1].register_forward_hook(lambda m, a, out: seen.append(out[1].dtype))
    out = model(ids)
    handle.remove()
    assert seen == [torch.float32] and out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=3e-2)


def test_causal_output_ignores_later_tokens():
    model = MambaLMHeadModel(tiny(), impl="ref")
    randomize(model)
    ids = torch.randint(0, VOCAB, (1, 13))
    changed = ids.clone()
    changed[0, 8] = (ids[0, 8] + 1) % VOCAB
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8], atol=0, rtol=0)
    assert (a[:, 8] - b[:, 8]).abs().max() > 1e-4


def test_bidirectional_output_sees_later_tokens():
    model = MambaLMHeadModel(tiny(bidirectional=True), impl="ref")
    randomize(model)
    ids = torch.randint(0, VOCAB, (1, 13))
    changed = ids.clone()
    changed[0, 8] = (ids[0, 8] + 1) % VOCAB
    diff = (model(ids) - model(changed)).abs().amax(-1)[0]  # [L]
    assert (diff > 1e-5).all()


@pytest.mark.parametrize("tie", [True, False])
def test_bidirectional_weight_tie(tie):
    model = MambaLMHeadModel(tiny(bidirectional=True, bidirectional_weight_tie=tie, tie_embeddings=False))
    mixer = model.backbone.layers[0].mixer
    assert isinstance(mixer, BiMambaMixer)
    assert (mixer.rev.in_proj is mixer.fwd.in_proj) is tie
    assert (mixer.rev.out_proj is mixer.fwd.out_proj) is tie
    assert mixer.rev.x_proj is not mixer.fwd.x_proj and mixer.rev.A_log is not mixer.fwd.A_log
    proj = mixer.fwd.in_proj.weight.numel() + mixer.fwd.out_proj.weight.numel()
    untied = MambaLMHeadModel(tiny(bidirectional=True, bidirectional_weight_tie=False, tie_embeddings=False))
    assert count_parameters(untied) - count_parameters(model) == (0 if not tie else 2 * proj)


def test_bidirectional_equals_forward_plus_flipped_reverse():
    model = MambaLMHeadModel(tiny(bidirectional=True, n_layer=1), impl="ref")
    randomize(model)
    mixer = model.backbone.layers[0].mixer
    hidden = torch.randn(2, 10, 16)
    expected = mixer.fwd(hidden) + mixer.rev(hidden.flip(1)).flip(1)
    torch.testing.assert_close(mixer(hidden), expected, atol=0, rtol=0)


@pytest.mark.parametrize("mask", [[[0, 1, 1]], [[1, 0, 1]], [[1, 2, 0]], [[1, 1]]])
def test_bad_attention_mask_raises(mask):
    model = MambaLMHeadModel(tiny(bidirectional=True), impl="ref")
    with pytest.raises(InputError, match="attention_mask"):
        model(torch.zeros(1, 3, dtype=torch.long), attention_mask=torch.tensor(mask))


@pytest.mark.parametrize("ids", [torch.tensor([[0, VOCAB]]), torch.tensor([[-1, 2]]), torch.zeros(1, 3),
                                 torch.zeros(3, dtype=torch.long)])
def test_bad_input_ids_raise(ids):
    with pytest.raises(InputError, match="input_ids|token ids"):
        MambaLMHeadModel(tiny(), impl="ref")(ids)


# ---------------------------------------------------------------- kernel paths


def test_impl_names_are_checked():
    with pytest.raises(InputError, match="impl"):
        MambaLMHeadModel(tiny(), impl="fast")
    with pytest.raises(InputError, match="CUDA"):
        select_kernels("triton", torch.device("cpu"))


def test_auto_on_cpu_takes_chunked_without_warning():
    _warn_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = select_kernels("auto", torch.device("cpu"))
        second = select_kernels("auto", torch.device("cpu"))
    assert first.inner.keywords["scan"] is selective_scan_chunked
    assert not [w for w in caught if "falls back" in str(w.message)]
    assert second == first


def test_auto_warns_once_when_it_falls_back(monkeypatch):
    def missing():
        raise ImportError("no chunked scan in this build")

    monkeypatch.setattr(mixer_module, "_chunked_kernels", missing)
    _warn_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = select_kernels("auto", torch.device("cpu"))
        select_kernels("auto", torch.device("cpu"))
    assert first.inner.keywords["scan"] is selective_scan_ref
    assert len([w for w in caught if "falls back" in str(w.message)]) == 1
    with pytest.raises(InputError, match="chunked"):
        select_kernels("chunked", torch.device("cpu"))
    _warn_once.cache_clear()


@pytest.mark.parametrize("chunk_size", [None, 8])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_ref_and_chunked_agree_with_gradients(bidirectional, chunk_size, monkeypatch):
    if chunk_size is not None:  # several chunks and a ragged tail within L = 37
        base = mixer_module._chunked_kernels()
        patched = base._replace(inner=functools.partial(
            base.inner.func, conv=base.inner.keywords["conv"],
            scan=functools.partial(selective_scan_chunked, chunk_size=chunk_size)))
        monkeypatch.setattr(mixer_module, "_chunked_kernels", lambda: patched)
    c = tiny(bidirectional=bidirectional)
    ref = MambaLMHeadModel(c, impl="ref")
    randomize(ref)
    chunked = MambaLMHeadModel(c, impl="chunked")
    chunked.load_state_dict(ref.state_dict())
    ids = torch.randint(0, VOCAB, (2, 37))
    mask = torch.ones_like(ids)
    mask[1, 20:] = 0
    target = torch.randint(0, VOCAB, (2, 37))
    outs = []
    for model in (ref, chunked):
        logits = model(ids, attention_mask=mask)
        F.cross_entropy(logits.flatten(0, 1), target.flatten()).backward()
        outs.append((logits, {n: p.grad for n, p in model.named_parameters()}))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-4)
    for name, grad in outs[0][1].items():
        torch.testing.assert_close(outs[1][1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


# ---------------------------------------------------------------- inputs_embeds


@pytest.mark.parametrize("bidirectional", [False, True])
def test_inputs_embeds_equal_embedded_ids_with_gradients(bidirectional):
    model = MambaLMHeadModel(tiny(bidirectional=bidirectional), impl="ref")
    randomize(model)
    ids = torch.randint(0, VOCAB, (2, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    embeds = model.backbone.embedding(ids).detach().requires_grad_(True)
    from_ids = model.backbone(ids, mask)
    from_embeds = model.backbone(inputs_embeds=embeds, attention_mask=mask)
    torch.testing.assert_close(from_embeds, from_ids, atol=0, rtol=0)
    torch.testing.assert_close(model(inputs_embeds=embeds, attention_mask=mask), model(ids, attention_mask=mask),
                               atol=0, rtol=0)
    weight = torch.randn_like(from_embeds)
    (grad,) = torch.autograd.grad((from_embeds * weight).sum(), embeds)
    emb = model.backbone.embedding.weight
    (grad_emb,) = torch.autograd.grad((model.backbone(ids, mask) * weight).sum(), emb)
    expected = torch.zeros_like(emb).index_add_(0, ids.flatten(), grad.flatten(0, 1))
    torch.testing.assert_close(grad_emb, expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [{}, {"both": True}, {"embeds": torch.randn(2, 5, 8)},
                                    {"embeds": torch.randn(5, 16)},
                                    {"embeds": torch.zeros(2, 5, 16, dtype=torch.long)},
                                    {"embeds": torch.randn(2, 5, 16), "mask": torch.ones(2, 4)}])
def test_inputs_embeds_bad_calls_raise(kwargs):
    model = MambaLMHeadModel(tiny(), impl="ref")
    if kwargs.get("both"):
        call = {"input_ids": torch.zeros(2, 5, dtype=torch.long), "inputs_embeds": torch.randn(2, 5, 16)}
    else:
        call = {"inputs_embeds": kwargs["embeds"]} if "embeds" in kwargs else {}
        if "mask" in kwargs:
            call["attention_mask"] = kwargs["mask"]
    with pytest.raises(InputError, match="inputs_embeds|input_ids|attention_mask"):
        model.backbone(**call)
