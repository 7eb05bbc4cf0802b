"""What a checkpoint holds: its config, size and provenance."""

from __future__ import annotations

import json
from pathlib import Path

from seqssm.models import count_parameters, load_model


def info(checkpoint: str) -> dict:
    """Config, parameter count and files of a checkpoint directory (raises InputError if it is not one)."""
    model = load_model(checkpoint)
    path = Path(checkpoint)
    raw = json.loads((path / "config.json").read_text())
    return {
        "checkpoint": str(path.resolve()),
        "architecture": raw.get("architecture", type(model).__name__),
        "seqssm_version": raw.get("seqssm_version"),
        "parameters": count_parameters(model),
        "size_bytes": sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
        "config": model.config.to_dict(),
    }
