"""Hugging Face ``MambaForCausalLM`` and mamba_ssm ``MambaLMHeadModel`` checkpoints, read and written.

The Hugging Face tests build random models with transformers itself (CPU, fp32) and compare logits both
ways; mamba_ssm does not install without CUDA, so its layout is checked through the files and dicts its
``from_pretrained`` would read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from repo_modules import shadowed_repo_folders
from safetensors.torch import load_file, save_file

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel, load_model
from seqssm.models.convert import detect_layout
from seqssm.pipelines.export import ExportConfig, export

ROOT = Path(__file__).resolve().parents[1]

# mamba_ssm 2.x: the fields of mamba_ssm.models.config_mamba.MambaConfig and the ssm_cfg keys its Mamba
# (v1) module takes, written out here because mamba_ssm cannot be installed on a CPU machine.
MAMBA_SSM_FIELDS = {"d_model", "d_intermediate", "n_layer", "vocab_size", "ssm_cfg", "attn_layer_idx", "attn_cfg",
                    "rms_norm", "residual_in_fp32", "fused_add_norm", "pad_vocab_size_multiple", "tie_embeddings"}
MAMBA1_KWARGS = {"layer", "d_state", "d_conv", "expand", "dt_rank", "dt_min", "dt_max", "dt_init", "dt_scale",
                 "dt_init_floor", "conv_bias", "bias", "use_fast_path"}


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref.double()).norm() / ref.double().norm()).item()


@torch.no_grad()
def _perturb(model: torch.nn.Module) -> None:
    """Move every parameter off its initial value (norms at 1, D at 1, zero biases would hide a swap)."""
    for p in model.parameters():
        p.add_(0.1 * torch.randn_like(p))


def _seqssm_model(**overrides) -> MambaLMHeadModel:
    fields = dict(d_model=64, n_layer=2, vocab_size=10, d_state=8, tokenizer="nucleotide")
    model = MambaLMHeadModel(MambaConfig(**{**fields, **overrides}), impl="chunked").eval()
    _perturb(model)
    return model


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


@pytest.fixture(scope="module")
def hf():
    """transformers' Mamba classes; skips when transformers is missing (it is in the dev extra)."""
    try:
        import transformers
        from transformers import MambaConfig as HFMambaConfig
        from transformers import MambaForCausalLM
    except ImportError as err:
        pytest.skip(f"transformers is not installed ({err}); `pip install -e '.[dev]'` brings it")
    transformers.logging.set_verbosity_error()  # its notes that mamba_ssm's CUDA kernels are absent
    # transformers imports the optional PyPI packages `kernels` and `datasets` when it finds them: with the
    # repo root on sys.path (`python -m pytest`) it would find this repo's folders of those names instead.
    shadowed = shadowed_repo_folders()
    assert not shadowed, (f"the repo's folders were imported as top-level modules {shadowed}: run the tests "
                          "with plain `pytest`, never `python -m pytest`")
    return HFMambaConfig, MambaForCausalLM


@pytest.mark.parametrize("tie, bias", [(True, False), (False, True)], ids=["tied", "untied-bias"])
def test_hf_model_loads_with_same_logits(hf, tmp_path, tie, bias):
    HFMambaConfig, MambaForCausalLM = hf
    config = HFMambaConfig(vocab_size=50, hidden_size=64, num_hidden_layers=2, state_size=8,
                           time_step_rank=5, layer_norm_epsilon=1e-4, use_bias=bias, tie_word_embeddings=tie,
                           use_cache=False)
    theirs = MambaForCausalLM(config).eval()
    _perturb(theirs)
    theirs.save_pretrained(tmp_path)
    assert detect_layout(tmp_path) == "hf"

    ours = load_model(tmp_path, impl="chunked").eval()
    c = ours.config
    assert (c.d_model, c.n_layer, c.vocab_size, c.padded_vocab_size, c.d_state, c.resolved_dt_rank) == \
        (64, 2, 50, 50, 8, 5)
    assert (c.norm_eps, c.bias, c.tie_embeddings, c.tokenizer) == (1e-4, bias, tie, "external")
    ids = torch.randint(0, 50, (2, 37))
    with torch.no_grad():
        expected = theirs(ids).logits
        assert rel_error(ours(ids), expected) < 1e-4
        # The recurrent path on the converted weights: prefill all but the last token, then one step.
        _, cache = ours.prefill(ids[:, :-1])
        assert rel_error(ours.step(ids[:, -1], cache), expected[:, -1]) < 1e-4


def test_seqssm_model_exports_to_hf_with_same_logits(hf, tmp_path):
    _, MambaForCausalLM = hf
    ours = _seqssm_model(norm_eps=1e-6)
    ours.save_pretrained(tmp_path / "ckpt")
    out = export(ExportConfig(checkpoint=str(tmp_path / "ckpt"), format="hf", out=str(tmp_path / "hf")))
    data = json.loads((out / "config.json").read_text())
    assert data["architectures"] == ["MambaForCausalLM"] and data["vocab_size"] == 16  # 10 padded to 8s
    assert (data["pad_token_id"], data["bos_token_id"], data["eos_token_id"]) == (0, 2, 3)

    theirs = MambaForCausalLM.from_pretrained(out).eval()
    assert theirs.lm_head.weight.data_ptr() == theirs.backbone.embeddings.weight.data_ptr()  # re-tied
    ids = torch.randint(0, 10, (2, 29))
    with torch.no_grad():
        logits = theirs(ids).logits
        assert logits.shape == (2, 29, 16)
        assert rel_error(logits[..., :10], ours(ids)) < 1e-4

    # Read back by seqssm, the export is the model it came from (the metadata restores vocab and tokenizer).
    back = load_model(out)
    assert back.config.to_dict() == ours.config.to_dict()
    _same_weights(back, ours)


@pytest.mark.parametrize("tie", [True, False])
def test_mamba_ssm_export_round_trip(tmp_path, tie):
    ours = _seqssm_model(tie_embeddings=tie, bias=True, dt_rank=3)
    ours.save_pretrained(tmp_path / "ckpt")
    out = export(ExportConfig(checkpoint=str(tmp_path / "ckpt"), format="mamba_ssm", out=str(tmp_path / "m"),
                              pytorch_bin=True))
    assert detect_layout(out) == "mamba_ssm"
    data = json.loads((out / "config.json").read_text())
    assert set(data) == MAMBA_SSM_FIELDS and set(data["ssm_cfg"]) <= MAMBA1_KWARGS
    assert (data["vocab_size"], data["pad_vocab_size_multiple"], data["tie_embeddings"]) == (10, 8, tie)
    assert data["ssm_cfg"]["dt_rank"] == 3 and data["ssm_cfg"]["bias"] is True
    # mamba_ssm's from_pretrained load_state_dict()s the .bin strictly: it must hold every key of the model,
    # the tied head too; the safetensors file holds the same tensors.
    tensors = load_file(str(out / "model.safetensors"))
    binary = torch.load(out / "pytorch_model.bin", weights_only=True)  # our own file, weights only
    own = ours.state_dict()
    assert tensors.keys() == binary.keys() == own.keys()
    for key in own:
        assert torch.equal(tensors[key], own[key]) and torch.equal(binary[key], own[key]), key

    back = load_model(out)
    assert back.config.to_dict() == ours.config.to_dict()
    _same_weights(back, ours)
    assert (back.lm_head.weight is back.backbone.embedding.weight) == tie


def _mamba_ssm_dir(path: Path, model: MambaLMHeadModel, **config) -> Path:
    """A directory as mamba_ssm 1.x's save_pretrained leaves it (its hub config, all keys), but safetensors."""
    path.mkdir()
    c = model.config
    data = {"d_model": c.d_model, "n_layer": c.n_layer, "vocab_size": c.vocab_size,
            "ssm_cfg": {"d_state": c.d_state}, "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True,
            "pad_vocab_size_multiple": c.pad_vocab_size_multiple, **config}
    (path / "config.json").write_text(json.dumps(data))
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    return path


def test_mamba_ssm_directory_loads_with_same_logits(tmp_path):
    ours = _seqssm_model()
    back = load_model(_mamba_ssm_dir(tmp_path / "m", ours), impl="chunked")
    assert back.config.tokenizer == "external" and back.config.padded_vocab_size == 16
    ids = torch.randint(0, 10, (2, 21))
    with torch.no_grad():
        assert torch.equal(back(ids), ours(ids))


def test_hf_shards_load(tmp_path):
    """A sharded HF checkpoint (model.safetensors.index.json) reads as the single file does."""
    ours = _seqssm_model()
    ours.save_pretrained(tmp_path / "ckpt")
    single = export(ExportConfig(checkpoint=str(tmp_path / "ckpt"), format="hf", out=str(tmp_path / "one")))
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text((single / "config.json").read_text())
    tensors = load_file(str(single / "model.safetensors"))
    keys = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((keys[: len(keys) // 2], keys[len(keys) // 2:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: tensors[k] for k in part}, str(sharded / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, name))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _same_weights(load_model(sharded), load_model(single))


def test_pickle_only_directories_are_refused(tmp_path):
    ours = _seqssm_model()
    path = _mamba_ssm_dir(tmp_path / "m", ours)
    (path / "model.safetensors").rename(path / "pytorch_model.bin")  # never opened: any bytes would do
    with pytest.raises(InputError, match="pytorch_model.bin, a pickle, and seqssm never unpickles"):
        load_model(path)
    (path / "config.json").write_text(json.dumps({"model_type": "mamba", "architectures": ["MambaForCausalLM"]}))
    with pytest.raises(InputError, match="never unpickles"):
        load_model(path)


@pytest.mark.parametrize("config, message", [
    ({"ssm_cfg": {"layer": "Mamba2"}}, "Mamba1 layers only"),
    ({"d_intermediate": 128}, "pure Mamba stacks only"),
    ({"attn_layer_idx": [1]}, "pure Mamba stacks only"),
    ({"rms_norm": False}, "RMSNorm only"),
    ({"ssm_cfg": {"d_state": 8, "ngroups": 2}}, r"\['ngroups'\] have no seqssm equivalent"),
])
def test_unsupported_mamba_ssm_configs(tmp_path, config, message):
    with pytest.raises(InputError, match=message):
        load_model(_mamba_ssm_dir(tmp_path / "m", _seqssm_model(), **config))


def test_mismatches_are_input_errors(tmp_path):
    ours = _seqssm_model()
    path = _mamba_ssm_dir(tmp_path / "m", ours)
    tensors = load_file(str(path / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["lm_head.weight"] + 1
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(InputError, match="differs from the embedding"):
        load_model(path)
    path = _mamba_ssm_dir(tmp_path / "m2", ours, d_model=32)
    with pytest.raises(InputError, match=r"has shape \(16, 64\), but config.json implies \(16, 32\)"):
        load_model(path)
    (path / "config.json").write_text(json.dumps({"model_type": "mamba2", "architectures": ["Mamba2ForCausalLM"]}))
    with pytest.raises(InputError, match="model_type 'mamba2' is not one seqssm loads"):
        load_model(path)


def test_bidirectional_models_do_not_export(tmp_path):
    _seqssm_model(bidirectional=True).save_pretrained(tmp_path / "ckpt")
    for fmt in ("hf", "mamba_ssm"):
        with pytest.raises(InputError, match="bidirectional"):
            export(ExportConfig(checkpoint=str(tmp_path / "ckpt"), format=fmt, out=str(tmp_path / fmt)))
    assert not (tmp_path / "hf").exists() and not (tmp_path / "mamba_ssm").exists()


def test_export_cli(tmp_path, monkeypatch, capsys):
    """`seqssm export` through the CLI's entry point, in-process: exit 0 with a path, or 2 with one line."""
    from seqssm.cli import main

    def run(*args) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["seqssm", "export", str(tmp_path / "ckpt"), *map(str, args)])
        with pytest.raises(SystemExit) as exit_info:
            main()
        captured = capsys.readouterr()
        return exit_info.value.code, captured.out + captured.err

    _seqssm_model().save_pretrained(tmp_path / "ckpt")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    for args, code, text in [
        (["--format", "hf", "--out", tmp_path / "hf"], 0, "wrote a hf checkpoint"),
        (["--format", "hf", "--out", tmp_path / "hf"], 2, "pass --overwrite"),
        (["--format", "hf", "--out", tmp_path / "hf", "--overwrite"], 0, "wrote a hf checkpoint"),  # its own export
        (["--format", "onnx", "--out", tmp_path / "x"], 2, "--format 'onnx': use one of hf, mamba_ssm"),
        (["--format", "hf", "--out", tmp_path / "x", "--pytorch-bin"], 2, "--pytorch-bin is for --format mamba_ssm"),
        (["--format", "hf", "--out", tmp_path / "busy"], 2, "holds files but no config.json"),
        (["--format", "hf", "--out", tmp_path / "ckpt", "--overwrite"], 2, "is the checkpoint"),
    ]:
        got_code, output = run(*args)
        assert (got_code or 0) == code and text in output and "Traceback" not in output, output
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    assert detect_layout(tmp_path / "hf") == "hf" and detect_layout(tmp_path / "ckpt") == "seqssm"
