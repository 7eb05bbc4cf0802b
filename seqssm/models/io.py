"""Checkpoint directories: ``config.json`` plus ``model.safetensors``, never pickle.

safetensors refuses tensors that share storage, so tied weights (lm_head = embedding, the shared
projections of a bidirectional layer) are written once by ``safetensors.torch.save_model`` and re-tied by
the model's own ``tie_weights`` when loading.

Every safetensors file seqssm writes carries, in its header metadata, the sha256 of the bytes after the
header (``tensors_sha256``): :func:`seal_digest` writes it, :func:`verify_digest` checks it on load, so a
file whose tensor bytes changed (disk or copy damage; the header can stay valid) is refused instead of
loading as wrong or NaN weights. The header is where it lives, not config.json, because older seqssm
versions reject unknown config keys but ignore safetensors metadata. Files written before it load unchecked.

This module imports no model class (reading a checkpoint back into a model is ``seqssm.models.loading``),
so the model, the converters and the loader all import it without a loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_model

from seqssm.config import MambaConfig
from seqssm.errors import InputError
from seqssm.version import __version__

if TYPE_CHECKING:
    from seqssm.models.lm import MambaLMHeadModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ARCHITECTURE = "MambaLMHeadModel"
DIGEST_KEY = "tensors_sha256"
# Written first and replaced in place by the real digest: both are 64 characters, so the header keeps its
# length and every tensor offset stays where it is.
DIGEST_PLACEHOLDER = "0" * 64


def _data_sha256(f, start: int) -> str:
    digest = hashlib.sha256()
    f.seek(start)
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def _header(f) -> tuple[int, bytes]:
    """(length, bytes) of a safetensors header: a little-endian u64 length, then that much JSON."""
    f.seek(0)
    size = int.from_bytes(f.read(8), "little")
    return size, f.read(size)


def seal_digest(path: str | os.PathLike) -> None:
    """Put the sha256 of the tensor bytes into the header of a file saved with metadata
    ``{DIGEST_KEY: DIGEST_PLACEHOLDER}``."""
    with open(path, "r+b") as f:
        size, header = _header(f)
        at = header.find(f'"{DIGEST_KEY}":"{DIGEST_PLACEHOLDER}"'.encode())
        if at < 0:
            raise RuntimeError(f"{path}: no {DIGEST_KEY} placeholder in the header to seal")
        digest = _data_sha256(f, 8 + size)
        f.seek(8 + at + len(f'"{DIGEST_KEY}":"'))
        f.write(digest.encode())


def verify_digest(path: str | os.PathLike, checkpoint: str | os.PathLike, fix: str) -> None:
    """InputError when the tensor bytes of safetensors file ``path`` differ from the digest in its header.

    Call it after safetensors has parsed the file (so the header is known to be sound). ``fix`` ends the
    message: how to get a good copy.
    """
    with open(path, "rb") as f:
        size, header = _header(f)
        stored = json.loads(header).get("__metadata__", {}).get(DIGEST_KEY)
        if stored is None:
            return  # saved before seqssm wrote digests
        if _data_sha256(f, 8 + size) != stored:
            raise InputError(f"checkpoint {checkpoint} is corrupt (checksum mismatch): the tensor bytes of "
                             f"{Path(path).name} are not the ones saved; {fix}")


def check_finite(state: dict[str, torch.Tensor], checkpoint: str | os.PathLike, fix: str) -> None:
    """InputError naming the first tensor of ``state`` that holds NaN or inf."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"checkpoint {checkpoint} has non-finite weights (NaN or inf in {name}): it was "
                             f"saved from a diverged run or damaged since; {fix}")


def save_pretrained(model: MambaLMHeadModel, path: str | os.PathLike) -> None:
    """Write ``path/config.json`` (config, "architecture", "seqssm_version") and ``model.safetensors``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"cannot save a checkpoint to {path}: it is a file; pass a directory path")
    path.mkdir(parents=True, exist_ok=True)
    meta = {"architecture": ARCHITECTURE, "seqssm_version": __version__}
    # Written under a temporary name and renamed, so an interrupted save never leaves a half file behind.
    tmp = path / (WEIGHTS_NAME + ".tmp")
    save_model(model, str(tmp), metadata={"format": "pt", **meta, DIGEST_KEY: DIGEST_PLACEHOLDER})
    seal_digest(tmp)
    os.replace(tmp, path / WEIGHTS_NAME)
    tmp = path / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps({**meta, **model.config.to_dict()}, indent=2) + "\n")
    os.replace(tmp, path / CONFIG_NAME)


def read_config(path: str | os.PathLike) -> MambaConfig:
    """The model config of checkpoint directory ``path``, checked; InputError when it is not a checkpoint."""
    return _read_config(Path(path))


def _read_config(path: Path) -> MambaConfig:
    if not path.exists():
        raise InputError(f"checkpoint directory {path} does not exist; pass a directory written by "
                         "save_pretrained")
    if not path.is_dir():
        raise InputError(f"{path} is not a checkpoint directory (it is a file); pass the directory holding "
                         f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise InputError(f"{path} is not a checkpoint directory: {CONFIG_NAME} is missing")
    try:
        data = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{config_file} is not valid JSON ({err}); re-save the checkpoint") from None
    if not isinstance(data, dict):
        raise InputError(f"{config_file} must hold a JSON object, got {type(data).__name__}")
    architecture = data.pop("architecture", None)
    data.pop("seqssm_version", None)
    if architecture != ARCHITECTURE:
        raise InputError(f"{config_file}: architecture {architecture!r} is not one seqssm loads "
                         f"(expected {ARCHITECTURE!r})")
    try:
        return MambaConfig.from_dict(data)
    except InputError as err:
        raise InputError(f"{config_file}: {err}") from None


class _SkipInit(torch.overrides.TorchFunctionMode):
    """``torch.nn.init``'s initialisers that dispatch through ``__torch_function__`` return their tensor
    untouched (those torch modules and ``_init_weights`` call: uniform_, normal_, constant_,
    kaiming_uniform_)."""

    SKIPPED = frozenset((torch.nn.init.uniform_, torch.nn.init.normal_, torch.nn.init.constant_,
                         torch.nn.init.kaiming_uniform_))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.SKIPPED:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


@contextlib.contextmanager
def skip_init(device: torch.device | str) -> Iterator[None]:
    """Build a model on ``device`` whose every tensor a checkpoint is about to overwrite: the initialisers
    of ``torch.nn.init`` do nothing (a TorchFunctionMode, so in this thread only), and the few draws model
    code makes itself (a mixer's dt and A) leave the global RNGs as they were.

    Why not the meta device: an op on a meta tensor goes through torch's Python references, whose first
    call imports ``torch._dynamo``: 1.0-1.3 s of every process that loads a checkpoint, on a CPU, and more
    objects for the interpreter to tear down at exit (measured, torch 2.11).
    """
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), _SkipInit():
        yield
