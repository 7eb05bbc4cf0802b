"""`seqssm export`: a causal checkpoint in Hugging Face's or mamba_ssm's directory layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from seqssm.models.convert import CONFIG_NAME, WEIGHTS_NAME, export_tensors
from seqssm.pipelines.common import FOLDER, LM, InputError, OutputPlan, atomic_path, check_checkpoint, load_checked
from seqssm.pipelines.configs_sequence import ExportConfig

PYTORCH_BIN = "pytorch_model.bin"


def export_outputs(cfg: ExportConfig) -> OutputPlan:
    """The folder ``export`` writes (as a whole) and the checkpoint it must never replace."""
    return OutputPlan([(cfg.out, FOLDER)], inputs=[("checkpoint", cfg.checkpoint)], overwrite=cfg.overwrite)


def export(cfg: ExportConfig) -> Path:
    """Write ``cfg.out/config.json`` and ``model.safetensors`` in ``cfg.format``'s layout; returns the folder.

    HF: ``MambaForCausalLM.from_pretrained(out)``. mamba_ssm: ``MambaLMHeadModel.from_pretrained(out)`` with
    ``pytorch_bin``, or ``MambaLMHeadModel(MambaConfig(**json.load(config.json)))`` and
    ``load_state_dict(safetensors.torch.load_file(model.safetensors))``. The folder is written whole under a
    temporary name and swapped in; an existing ``out`` is replaced only with ``overwrite``, and only when it
    is a checkpoint folder (holds config.json), never the input.
    """
    out = Path(cfg.out)
    if out.is_dir() and any(out.iterdir()) and not (out / CONFIG_NAME).is_file():
        raise InputError(f"--out {out} exists and holds files but no {CONFIG_NAME}; pass a new folder (only "
                         "a previous checkpoint folder is replaced, with --overwrite)")
    check_checkpoint(cfg.checkpoint, "export", kind=LM, causal=True)
    export_outputs(cfg).check()
    model = load_checked(cfg.checkpoint)
    config_json, tensors, metadata = export_tensors(model, cfg.format)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=metadata)
        (tmp / CONFIG_NAME).write_text(json.dumps(config_json, indent=2) + "\n")
        if cfg.pytorch_bin:
            # The live state dict: a tied head shares the embedding's storage, which torch.save keeps.
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / PYTORCH_BIN)
    return out
