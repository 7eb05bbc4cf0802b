"""Checkpoints in the layouts of mamba_ssm's ``MambaLMHeadModel`` and Hugging Face's ``MambaForCausalLM``.

Both hold the same Mamba-1 causal LM seqssm builds; only the config and some tensor names differ:

| | seqssm | mamba_ssm | Hugging Face |
| --- | --- | --- | --- |
| config.json | seqssm ``MambaConfig`` | ``d_model``, ``ssm_cfg``… | ``model_type: mamba``, ``hidden_size``… |
| embedding | ``backbone.embedding.weight`` | same | ``backbone.embeddings.weight`` |
| vocabulary rows | ``vocab_size`` padded to ``pad_vocab_size_multiple`` | same | ``vocab_size``, no padding |
| tied head | not stored | ``lm_head.weight`` stored too | not stored |

Every other tensor (``backbone.layers.i.mixer.*``, ``backbone.layers.i.norm.weight``,
``backbone.norm_f.weight``, ``lm_head.weight``) has one name in all three. The math is the same too: HF's
PyTorch path is mamba_ssm's reference (RMSNorm in fp32 with ``layer_norm_epsilon``, softplus(Δ + dt bias),
D skip, SiLU(z) gate, residual summed in fp32 when ``residual_in_fp32``); mamba_ssm always uses eps 1e-5.

Weights are read only from safetensors (``model.safetensors``, or shards listed in
``model.safetensors.index.json``): seqssm never unpickles a ``pytorch_model.bin``.

Tokenizer: HF and mamba_ssm models come with a text tokenizer (mostly GPT-NeoX's) that seqssm does not ship,
so a converted model's ``tokenizer`` is ``"external"``: it takes token ids through the Python API (forward,
prefill, step), and commands that must encode text (embed, generate) refuse it, as ``get_tokenizer`` does not
know the name. An export records seqssm's tokenizer, vocabulary size and padding in the safetensors metadata
(key ``"seqssm"``), so a model exported and read back keeps them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from seqssm.config import EXPORT_FORMATS, MambaConfig
from seqssm.errors import InputError
from seqssm.models.io import skip_init
from seqssm.models.lm import MambaLMHeadModel
from seqssm.tokenizers import get_tokenizer
from seqssm.version import __version__

FORMATS = EXPORT_FORMATS
EXTERNAL_TOKENIZER = "external"
METADATA_KEY = "seqssm"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
EMBEDDING = "backbone.embedding.weight"
HF_EMBEDDING = "backbone.embeddings.weight"
HEAD = "lm_head.weight"
# mamba_ssm always builds its norms with eps 1e-5 (MambaLMHeadModel passes no norm_epsilon).
MAMBA_SSM_NORM_EPS = 1e-5
# ssm_cfg keys of mamba_ssm's Mamba (v1) module that map onto seqssm's MambaConfig; the others only
# initialise (dt_init) or choose a kernel (use_fast_path).
_SSM_CFG = {"d_state": "d_state", "d_conv": "d_conv", "expand": "expand", "dt_rank": "dt_rank",
            "dt_min": "dt_min", "dt_max": "dt_max", "dt_scale": "dt_scale", "dt_init_floor": "dt_init_floor",
            "conv_bias": "conv_bias", "bias": "bias"}
_SSM_CFG_IGNORED = {"dt_init", "use_fast_path", "layer"}
# HF MambaConfig field -> seqssm MambaConfig field (HF's defaults apply to absent keys, as in HF).
_HF_FIELDS = {"hidden_size": ("d_model", 768), "num_hidden_layers": ("n_layer", 32),
              "state_size": ("d_state", 16), "conv_kernel": ("d_conv", 4), "expand": ("expand", 2),
              "time_step_rank": ("dt_rank", "auto"), "time_step_min": ("dt_min", 0.001),
              "time_step_max": ("dt_max", 0.1), "time_step_floor": ("dt_init_floor", 1e-4),
              "time_step_scale": ("dt_scale", 1.0), "use_conv_bias": ("conv_bias", True),
              "use_bias": ("bias", False), "layer_norm_epsilon": ("norm_eps", 1e-5),
              "residual_in_fp32": ("residual_in_fp32", True), "tie_word_embeddings": ("tie_embeddings", True),
              "initializer_range": ("initializer_range", 0.1),
              "rescale_prenorm_residual": ("rescale_prenorm_residual", False)}
# What each format's config.json cannot hold, carried in the safetensors metadata of an export. HF's
# rescale_prenorm_residual is written false: transformers 5.24's _init_weights divides out_proj by
# sqrt(n_layer) even when from_pretrained has just loaded it (tests/test_convert.py catches that).
_CARRIED = {"hf": ("tokenizer", "sample_rate", "vocab_size", "pad_vocab_size_multiple", "rescale_prenorm_residual"),
            "mamba_ssm": ("tokenizer", "sample_rate", "initializer_range", "rescale_prenorm_residual")}


def detect_layout(path: str | os.PathLike) -> str:
    """Whose checkpoint directory ``path`` is, from its config.json: "hf", "mamba_ssm" or "seqssm".

    Anything not recognisably HF's or mamba_ssm's (a seqssm checkpoint, a missing or unreadable config)
    is "seqssm", so that seqssm's own loader reports what is wrong with it.
    """
    try:
        data = json.loads((Path(path) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return "seqssm"
    if not isinstance(data, dict) or "architecture" in data or "seqssm_version" in data:
        return "seqssm"
    if "model_type" in data or "architectures" in data:
        return "hf"
    if {"d_model", "n_layer", "ssm_cfg"} <= data.keys():
        return "mamba_ssm"
    return "seqssm"


def config_from_hf(data: dict[str, Any], rows: int, carried: dict[str, Any] | None = None) -> MambaConfig:
    """seqssm config of an HF ``MambaConfig`` dict whose embedding has ``rows`` rows (HF pads nothing)."""
    if data.get("model_type") != "mamba":
        raise InputError(f"Hugging Face model_type {data.get('model_type')!r} is not one seqssm loads; only "
                         "'mamba' (MambaForCausalLM, Mamba-1) maps onto seqssm's model")
    if data.get("hidden_act", "silu") != "silu":
        raise InputError(f"Hugging Face Mamba with hidden_act {data['hidden_act']!r}: seqssm's mixer uses "
                         "SiLU only")
    fields = {ours: data.get(theirs, default) for theirs, (ours, default) in _HF_FIELDS.items()}
    fields.update(vocab_size=rows, pad_vocab_size_multiple=1, tokenizer=EXTERNAL_TOKENIZER)
    return _with_carried(fields, carried, "hf", rows)


def config_from_mamba_ssm(data: dict[str, Any], rows: int, carried: dict[str, Any] | None = None) -> MambaConfig:
    """seqssm config of a mamba_ssm ``MambaConfig`` dict (Mamba-1 layers, RMSNorm, no MLP or attention)."""
    ssm_cfg = data.get("ssm_cfg") or {}
    if not isinstance(ssm_cfg, dict):
        raise InputError(f"mamba_ssm config: ssm_cfg must be an object, got {ssm_cfg!r}")
    if ssm_cfg.get("layer", "Mamba1") != "Mamba1":
        raise InputError(f"mamba_ssm config: ssm_cfg.layer is {ssm_cfg['layer']!r}; seqssm loads Mamba1 "
                         "layers only")
    unknown = sorted(set(ssm_cfg) - set(_SSM_CFG) - _SSM_CFG_IGNORED)
    if unknown:
        raise InputError(f"mamba_ssm config: ssm_cfg keys {unknown} have no seqssm equivalent")
    if data.get("d_intermediate", 0) or data.get("attn_layer_idx"):
        raise InputError("mamba_ssm config: d_intermediate > 0 (MLP blocks) or attn_layer_idx (attention "
                         "layers) make a hybrid model; seqssm loads pure Mamba stacks only")
    if not data.get("rms_norm", True):
        raise InputError("mamba_ssm config: rms_norm is false (LayerNorm); seqssm's blocks use RMSNorm only")
    fields = {ours: ssm_cfg[theirs] for theirs, ours in _SSM_CFG.items() if theirs in ssm_cfg}
    fields.update(
        d_model=data["d_model"], n_layer=data["n_layer"], vocab_size=data.get("vocab_size", 50277),
        pad_vocab_size_multiple=data.get("pad_vocab_size_multiple", 8),
        residual_in_fp32=data.get("residual_in_fp32", True), tie_embeddings=data.get("tie_embeddings", True),
        norm_eps=MAMBA_SSM_NORM_EPS, tokenizer=EXTERNAL_TOKENIZER,
    )
    return _with_carried(fields, carried, "mamba_ssm", rows)


def _with_carried(fields: dict[str, Any], carried: dict[str, Any] | None, fmt: str, rows: int) -> MambaConfig:
    """The config, with the fields an export carried in its metadata put back (the vocabulary only when
    it pads to the ``rows`` the weights have)."""
    carried = {k: v for k, v in (carried or {}).items() if k in _CARRIED[fmt]}
    vocab, multiple = carried.pop("vocab_size", None), carried.pop("pad_vocab_size_multiple", 1)
    counts = all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (vocab, multiple))
    if counts and -(-vocab // multiple) * multiple == rows:
        carried.update(vocab_size=vocab, pad_vocab_size_multiple=multiple)
    return MambaConfig(**{**fields, **carried})


def config_to_hf(config: MambaConfig, dtype: torch.dtype) -> dict[str, Any]:
    """HF ``MambaForCausalLM`` config.json of a causal seqssm config; the padded vocabulary rows are kept
    (as HF's own mamba_ssm converter does), so HF's vocab_size is ``padded_vocab_size``."""
    _require_exportable(config, "hf")
    data = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_act": "silu",
            **{theirs: getattr(config, field) for theirs, (field, _) in _HF_FIELDS.items()},
            "intermediate_size": config.d_inner, "vocab_size": config.padded_vocab_size,
            "time_step_init_scheme": "random", "use_cache": True, "dtype": str(dtype).removeprefix("torch."),
            "rescale_prenorm_residual": False}
    data.update(_special_ids(config.tokenizer))
    return data


def config_to_mamba_ssm(config: MambaConfig) -> dict[str, Any]:
    """mamba_ssm ``MambaConfig`` (v2 fields) of a causal seqssm config."""
    _require_exportable(config, "mamba_ssm")
    if config.norm_eps != MAMBA_SSM_NORM_EPS:
        raise InputError(f"export --format mamba_ssm: norm_eps is {config.norm_eps}, but mamba_ssm builds its "
                         f"norms with {MAMBA_SSM_NORM_EPS}; export with --format hf (layer_norm_epsilon)")
    ssm_cfg = {"layer": "Mamba1", **{theirs: getattr(config, ours) for theirs, ours in _SSM_CFG.items()}}
    return {"d_model": config.d_model, "d_intermediate": 0, "n_layer": config.n_layer,
            "vocab_size": config.vocab_size, "ssm_cfg": ssm_cfg, "attn_layer_idx": [], "attn_cfg": {},
            "rms_norm": True, "residual_in_fp32": config.residual_in_fp32, "fused_add_norm": True,
            "pad_vocab_size_multiple": config.pad_vocab_size_multiple, "tie_embeddings": config.tie_embeddings}


def _require_exportable(config: MambaConfig, fmt: str) -> None:
    if config.bidirectional:
        raise InputError(f"export --format {fmt}: this checkpoint is a bidirectional (masked-LM) model; only "
                         "causal models have a mamba_ssm / Hugging Face equivalent")


def _special_ids(tokenizer: str) -> dict[str, int]:
    """pad/bos/eos ids of a tokenizer seqssm ships (none for "external" ones), for HF's generate."""
    try:
        tok = get_tokenizer(tokenizer)
    except InputError:
        return {}
    ids = {f"{name}_token_id": getattr(tok, f"{name}_id", None) for name in ("pad", "bos", "eos")}
    return {k: int(v) for k, v in ids.items() if v is not None}


def state_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF tensor names -> seqssm's: ``embeddings`` -> ``embedding`` and, for a saved ``MambaModel`` (no
    head), the missing ``backbone.`` prefix."""
    out = {}
    for key, value in state.items():
        if key != HEAD and not key.startswith("backbone."):
            key = "backbone." + key
        out[EMBEDDING if key == HF_EMBEDDING else key] = value
    return out


def export_tensors(model: MambaLMHeadModel, fmt: str) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                                                dict[str, str]]:
    """What an export writes: (config.json dict, tensors for model.safetensors, its string metadata).

    ``fmt`` "hf": HF names, a tied head left out (HF re-ties it). "mamba_ssm": seqssm's names, a tied head
    stored as a copy, since mamba_ssm's ``load_state_dict`` (strict) expects ``lm_head.weight``.
    """

    if fmt not in FORMATS:
        raise InputError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}; pass --format hf or "
                         "--format mamba_ssm")
    config = model.config
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if fmt == "hf":
        data = config_to_hf(config, state[EMBEDDING].dtype)
        if config.tie_embeddings:
            del state[HEAD]
        state = {HF_EMBEDDING if k == EMBEDDING else k: v for k, v in state.items()}
    else:
        data = config_to_mamba_ssm(config)
        if config.tie_embeddings:
            state[HEAD] = state[HEAD].clone()  # safetensors stores no shared storage
    carried = {k: getattr(config, k) for k in _CARRIED[fmt]}
    metadata = {"format": "pt", METADATA_KEY: json.dumps(carried), "seqssm_version": __version__}
    return data, state, metadata


def read_weights(path: Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of a HF / mamba_ssm directory's safetensors file(s) and the seqssm fields an export
    carried in their metadata ({} when none)."""
    if (path / WEIGHTS_NAME).is_file():
        files = [path / WEIGHTS_NAME]
    elif (path / INDEX_NAME).is_file():
        files = _shards(path / INDEX_NAME)
    else:
        pickled = [name for name in PICKLES if (path / name).is_file()]
        if pickled:
            raise InputError(f"{path} holds its weights only as {pickled[0]}, a pickle, and seqssm never "
                             f"unpickles files; where you trust it, convert it once to {WEIGHTS_NAME} "
                             "(safetensors.torch.save_file of its state dict, tensors cloned)")
        raise InputError(f"{path} is not a complete checkpoint: {WEIGHTS_NAME} is missing")
    state, carried = {}, {}
    for file in files:
        try:
            with safe_open(str(file), "pt") as handle:
                meta = handle.metadata() or {}
            state.update(load_file(str(file), device=str(device)))
        except (SafetensorError, OSError) as err:
            raise InputError(f"{file} cannot be read as safetensors ({err}); re-save the checkpoint") from None
        if METADATA_KEY in meta:
            try:
                carried = json.loads(meta[METADATA_KEY])
            except json.JSONDecodeError:
                carried = {}
    if not state:
        raise InputError(f"{files[0]} holds no tensors; re-save the checkpoint")
    return state, carried if isinstance(carried, dict) else {}


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{index} is not a safetensors index (a JSON object with a weight_map): "
                         f"{err}") from None
    # Shards must lie beside the index: a name with a folder in it could point anywhere.
    bad = [n for n in names if not isinstance(n, str) or Path(n).name != n]
    if bad:
        raise InputError(f"{index}: shard names must be plain file names in that folder, got {bad[:2]}")
    missing = [n for n in names if not (index.parent / n).is_file()]
    if missing:
        raise InputError(f"{index} lists shards that are missing: {missing[:3]}")
    return [index.parent / n for n in names]


def read_converted(path: str | os.PathLike, device: torch.device | str = "cpu"
                   ) -> tuple[MambaConfig, dict[str, torch.Tensor]]:
    """seqssm config and seqssm-named tensors of a HF or mamba_ssm checkpoint directory."""
    path = Path(path)
    layout = detect_layout(path)
    if layout == "seqssm":
        raise InputError(f"{path} is neither a Hugging Face nor a mamba_ssm checkpoint directory")
    data = json.loads((path / CONFIG_NAME).read_text())
    state, carried = read_weights(path, device)
    if layout == "hf":
        state = state_from_hf(state)
    if EMBEDDING not in state:
        raise InputError(f"{path}: no embedding tensor ({HF_EMBEDDING if layout == 'hf' else EMBEDDING}) in "
                         "the weights; is this a Mamba language model?")
    rows = state[EMBEDDING].shape[0]
    reader = config_from_hf if layout == "hf" else config_from_mamba_ssm
    try:
        config = reader(data, rows, carried)
    except InputError as err:
        raise InputError(f"{path / CONFIG_NAME}: {err}") from None
    return config, state


def load_converted(path: str | os.PathLike, device: torch.device | str = "cpu", *,
                   dtype: torch.dtype | None = None, impl: str = "auto") -> MambaLMHeadModel:
    """A HF or mamba_ssm checkpoint directory as a seqssm causal LM (what ``load_model`` returns for one).

    Raises InputError when a tensor is missing, unexpected or of another shape than the config implies, or
    when a tied head stored beside the embedding differs from it.
    """

    path = Path(path)
    config, state = read_converted(path, device)
    head = state.get(HEAD)
    if config.tie_embeddings and head is not None:
        if head.shape != state[EMBEDDING].shape or not torch.equal(head, state[EMBEDDING]):
            raise InputError(f"{path}: the config ties lm_head to the embedding, but the stored lm_head.weight "
                             "differs from the embedding; set tie_embeddings / tie_word_embeddings to false")
        del state[HEAD]
    if dtype is None:
        dtype = state[EMBEDDING].dtype
    with skip_init(device):
        model = MambaLMHeadModel(config, impl=impl, device=device, dtype=dtype).to(dtype)
    own = model.state_dict()
    if config.tie_embeddings:
        del own[HEAD]
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(f"{path}: the weights do not match {CONFIG_NAME}: missing tensors {missing[:4]}, "
                         f"unexpected tensors {unexpected[:4]}")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise InputError(f"{path}: tensor {key} has shape {tuple(value.shape)}, but {CONFIG_NAME} implies "
                             f"{tuple(own[key].shape)}")
    model.load_state_dict(state, strict=False)
    return model
