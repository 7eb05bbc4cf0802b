"""Architecture choice in MambaConfig: Mamba-1 / Mamba-2 / S4D mixers, attention layers by pattern, MoE MLPs.

Each architecture: decoding step by step equals the full forward, chunked (state-passing) forward equals one
pass, right padding does not leak in bidirectional stacks, and a checkpoint round-trips bit-exactly.
"""

from __future__ import annotations

import json

import pytest
import torch

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models.attention import AttentionMixer, KVCache
from seqssm.models.io import save_pretrained
from seqssm.models.lm import MambaLMHeadModel
from seqssm.models.loading import load_model
from seqssm.models.moe import MoEMLP

ARCHS = {
    "mamba": {},
    "mamba2": {"mixer": "mamba2"},
    "s4d": {"mixer": "s4d"},
    "hybrid": {"layers": "MMA"},
    "moe": {"moe_every": 1, "n_experts": 4, "top_k": 2},
    "mamba2-attn-moe": {"mixer": "mamba2", "attn_every": 3, "moe_every": 2, "n_experts": 3},
}


def _model(arch: str, **extra) -> MambaLMHeadModel:
    config = MambaConfig(d_model=16, n_layer=3, vocab_size=12, **ARCHS[arch], **extra)
    return MambaLMHeadModel(config, impl="ref").eval()


def test_pattern_expands_and_validates():
    assert MambaConfig(d_model=16, n_layer=4, vocab_size=5, layers="MA").layer_kinds == "MAMA"
    assert MambaConfig(d_model=16, n_layer=4, vocab_size=5, attn_every=2).layer_kinds == "MAMA"
    assert MambaConfig(d_model=16, n_layer=3, vocab_size=5).layer_kinds == "MMM"
    bad = [dict(layers="MMA", n_layer=4), dict(layers="MX"), dict(layers="MA", attn_every=2),
           dict(mixer="mamba3"), dict(top_k=3), dict(layers="A", n_heads=3), dict(n_experts=0),
           dict(mixer="s4d", d_state=15), dict(rc_equivariant=True, layers="MA"), dict(capacity_factor=0)]
    for kw in bad:
        args = {"d_model": 16, "n_layer": 4, "vocab_size": 5, **kw}
        with pytest.raises(InputError):
            MambaConfig(**args)


@pytest.mark.parametrize("arch", ARCHS)
def test_step_and_chunks_equal_full_forward(arch):
    model = _model(arch)
    ids = torch.randint(0, 12, (2, 11))
    with torch.no_grad():
        full = model(ids)
        logits, cache = model.prefill(ids[:, :4], model.allocate_cache(2, max_len=16))
        steps = [logits] + [model.step(ids[:, t], cache)[:, None] for t in range(4, 11)]
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
        hidden = model.backbone.embedding(ids)
        a, states = model.backbone._forward(hidden[:, :5], return_states=True)
        b, _ = model.backbone._forward(hidden[:, 5:], states=states, return_states=True)
        torch.testing.assert_close(model._logits(torch.cat([a, b], 1)), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_bidirectional_padding_does_not_leak(arch):
    model = _model(arch, bidirectional=True)
    ids = torch.randint(0, 12, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask)[1, :6], model(ids[1:, :6])[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip(arch, tmp_path):
    model = _model(arch)
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", impl="ref").eval()
    assert loaded.config == model.config
    ids = torch.randint(0, 12, (1, 7))
    with torch.no_grad():
        assert torch.equal(loaded(ids), model(ids))


def test_old_checkpoint_without_architecture_fields_loads(tmp_path):
    model = _model("mamba")
    save_pretrained(model, tmp_path / "ckpt")
    config_file = tmp_path / "ckpt" / "config.json"
    data = json.loads(config_file.read_text())
    for key in ("mixer", "layers", "attn_every", "n_heads", "attn_max_len", "headdim", "moe_every",
                "n_experts", "top_k", "capacity_factor", "d_ff", "moe_aux_weight"):
        del data[key]
    config_file.write_text(json.dumps(data))
    assert load_model(tmp_path / "ckpt", impl="ref").config == model.config


def test_attention_state_carry_is_exact_and_bounded():
    layer = AttentionMixer(d_model=16, n_heads=2, max_len=12)
    x = torch.randn(2, 10, 16, requires_grad=True)
    full = layer(x)
    a, state = layer(x[:, :3], return_state=True)
    b, state = layer(x[:, 3:], state, return_state=True)
    torch.testing.assert_close(torch.cat([a, b], 1), full)
    assert isinstance(state, KVCache) and int(state.pos) == 10
    (b.sum()).backward()  # the carried keys are differentiable
    assert x.grad[:, :3].abs().sum() > 0
    with pytest.raises(InputError, match="attn-max-len"):
        layer(torch.randn(2, 3, 16), state, return_state=True)
    cache = layer.allocate_state(2, max_len=4)
    with pytest.raises(InputError, match="attn-max-len"):
        layer(torch.randn(2, 5, 16), cache=cache)


def test_aux_loss_reaches_the_router():
    model = _model("moe").train()
    ids = torch.randint(0, 12, (2, 9))
    model(ids)
    aux = model.aux_loss()
    assert aux.requires_grad and float(aux.detach()) > 0
    aux.backward()
    routers = [m.router.weight.grad for m in model.modules() if isinstance(m, MoEMLP)]
    assert all(g is not None and g.abs().sum() > 0 for g in routers)
    assert all(sum(c) == 18 for c in model.expert_counts())
    assert _model("mamba").aux_loss() == 0.0
