"""Checkpoint directories: bit-exact save → load (tied weights included) and clear errors for bad paths."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import seqssm
from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model

VOCAB = 10


def make(**kw) -> MambaLMHeadModel:
    config = MambaConfig(**{"d_model": 16, "n_layer": 2, "vocab_size": VOCAB, "d_state": 8, **kw})
    model = MambaLMHeadModel(config, impl="ref")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def assert_same_model(a: MambaLMHeadModel, b: MambaLMHeadModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    assert a.config == b.config
    ids = torch.randint(0, VOCAB, (2, 9))
    assert torch.equal(a(ids), b(ids))


@pytest.mark.parametrize("kw", [
    {},
    {"tie_embeddings": False, "bias": True},
    {"bidirectional": True},
    {"bidirectional": True, "bidirectional_weight_tie": False, "tie_embeddings": False},
])
def test_save_load_is_bit_exact(tmp_path, kw):
    model = make(**kw)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt", impl="ref")
    assert_same_model(model, loaded)
    assert (loaded.lm_head.weight is loaded.backbone.embedding.weight) is model.config.tie_embeddings
    for layer in loaded.backbone.layers:
        if model.config.bidirectional:
            tied = layer.mixer.rev.in_proj is layer.mixer.fwd.in_proj
            assert tied is model.config.bidirectional_weight_tie
        assert layer.mixer.__class__ is model.backbone.layers[0].mixer.__class__


def test_checkpoint_layout(tmp_path):
    model = make()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    data = json.loads((tmp_path / "config.json").read_text())
    assert data.pop("architecture") == "MambaLMHeadModel"
    assert data.pop("seqssm_version") == seqssm.__version__
    assert data == model.config.to_dict()
    tensors = load_file(tmp_path / "model.safetensors")
    # the tied head is stored once
    assert len(tensors) == len(model.state_dict()) - 1
    assert sum(t.numel() for t in tensors.values()) == sum(p.numel() for p in model.parameters())


def test_loaded_ties_are_real_and_markers_survive(tmp_path):
    make().save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    with torch.no_grad():
        loaded.backbone.embedding.weight[0, 0] = 123.0
    assert loaded.lm_head.weight[0, 0] == 123.0
    mixer = loaded.backbone.layers[0].mixer
    assert mixer.A_log._no_weight_decay and mixer.D._no_weight_decay
    assert not getattr(mixer.in_proj.weight, "_no_weight_decay", False)


def test_load_keeps_saved_dtype_or_casts(tmp_path):
    model = make().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path, impl="ref")
    assert loaded.backbone.embedding.weight.dtype == torch.bfloat16
    assert_same_model(model, loaded)
    as_fp32 = load_model(tmp_path, dtype=torch.float32)
    for key, value in model.state_dict().items():
        assert torch.equal(as_fp32.state_dict()[key], value.float()), key


def test_load_leaves_the_global_rng_alone(tmp_path):
    make().save_pretrained(tmp_path)
    before = torch.get_rng_state()
    load_model(tmp_path)
    assert torch.equal(before, torch.get_rng_state())


ARCHITECTURES = {
    "mamba": {}, "mamba2": {"mixer": "mamba2", "d_model": 64}, "s4d": {"mixer": "s4d"},
    "hybrid": {"layers": "MA", "n_heads": 2}, "moe": {"moe_every": 1, "n_experts": 2},
    "bidirectional": {"bidirectional": True}, "rc": {"bidirectional": True, "rc_equivariant": True},
}


def test_loading_any_architecture_imports_no_dynamo_and_keeps_every_tensor(tmp_path):
    """A checkpoint of every architecture (and a mamba_ssm export) loads in a fresh process without
    importing torch._dynamo (a meta-device build did: 1 s a process), bit-exact, the global RNG untouched."""
    import subprocess
    import sys

    from seqssm.pipelines.configs_sequence import ExportConfig
    from seqssm.pipelines.export import export

    for name, kw in ARCHITECTURES.items():
        make(**kw).save_pretrained(tmp_path / name)
    export(ExportConfig(checkpoint=str(tmp_path / "mamba"), format="mamba_ssm", out=str(tmp_path / "mamba_ssm")))
    names = [*ARCHITECTURES, "mamba_ssm"]
    code = f"""if True:
        import sys, torch
        from safetensors.torch import load_file
        from seqssm.models import load_model
        before = torch.get_rng_state()
        for name in {names!r}:
            model = load_model({str(tmp_path)!r} + "/" + name)
            own = model.state_dict()
            for key, value in load_file({str(tmp_path)!r} + "/" + name + "/model.safetensors").items():
                assert torch.equal(own[key], value), (name, key)
        assert torch.equal(before, torch.get_rng_state())
        print("dynamo imported:", "torch._dynamo" in sys.modules)
    """
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "dynamo imported: False"


def test_save_over_a_file_raises(tmp_path):
    target = tmp_path / "f"
    target.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        make().save_pretrained(target)


def _corrupt(tmp_path, what):
    d = tmp_path / "ckpt"
    make().save_pretrained(d)
    config_file, weights = d / "config.json", d / "model.safetensors"
    data = json.loads(config_file.read_text())
    if what == "missing dir":
        return tmp_path / "nope", "does not exist"
    if what == "a file":
        return weights, "is a file"
    if what == "no config":
        config_file.unlink()
        return d, "config.json is missing"
    if what == "bad json":
        config_file.write_text("{not json")
        return d, "not valid JSON"
    if what == "unknown key":
        config_file.write_text(json.dumps({**data, "d_modle": 3}))
        return d, "d_modle"
    if what == "architecture":
        config_file.write_text(json.dumps({**data, "architecture": "GPT2"}))
        return d, "GPT2"
    if what == "no weights":
        weights.unlink()
        return d, "model.safetensors is missing"
    if what == "garbage weights":
        weights.write_bytes(b"\x00" * 40)
        return d, "cannot be read"
    if what == "other model":
        config_file.write_text(json.dumps({**data, "n_layer": 3}))
        return d, "missing tensors"
    if what == "other shape":
        config_file.write_text(json.dumps({**data, "d_state": 4}))
        return d, "size mismatch"
    raise AssertionError(what)


BAD_DIRS = ["missing dir", "a file", "no config", "bad json", "unknown key", "architecture", "no weights",
            "garbage weights", "other model", "other shape"]


@pytest.mark.parametrize("what", BAD_DIRS)
def test_bad_checkpoint_dirs_raise_input_error(tmp_path, what):
    path, message = _corrupt(tmp_path, what)
    with pytest.raises(InputError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_load_onto_cuda_is_bit_exact_and_leaves_the_cuda_rng_alone(tmp_path):
    """Built on the GPU directly (torch.nn.init skipped): every tensor as saved, ties kept, CUDA RNG as it was."""
    for name, kw in ARCHITECTURES.items():
        model = make(**kw)
        model.save_pretrained(tmp_path / name)
        before = torch.cuda.get_rng_state(), torch.get_rng_state()
        loaded = load_model(tmp_path / name, device="cuda")
        assert torch.equal(before[0], torch.cuda.get_rng_state()) and torch.equal(before[1], torch.get_rng_state())
        own = loaded.state_dict()
        for key, value in model.state_dict().items():
            assert own[key].device.type == "cuda" and torch.equal(own[key].cpu(), value), (name, key)
        assert (loaded.lm_head.weight is loaded.backbone.embedding.weight) is model.config.tie_embeddings
