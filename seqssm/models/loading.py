"""Reading a checkpoint directory back into a model: seqssm's own layout (``seqssm.models.io``) or a
Hugging Face / mamba_ssm one (``seqssm.models.convert``)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from seqssm.errors import InputError
from seqssm.models.convert import detect_layout, load_converted
from seqssm.models.io import CONFIG_NAME, WEIGHTS_NAME, _read_config, check_finite, skip_init, verify_digest
from seqssm.models.lm import MambaLMHeadModel


def load_model(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    *,
    dtype: torch.dtype | None = None,
    impl: str = "auto",
) -> MambaLMHeadModel:
    """Read a checkpoint directory written by :meth:`MambaLMHeadModel.save_pretrained`, bit-exactly; or a
    Hugging Face ``MambaForCausalLM`` / mamba_ssm ``MambaLMHeadModel`` directory (safetensors weights only).

    Args:
        path: the directory.
        device: where the weights go.
        dtype: cast the weights to this dtype; None keeps the saved dtype.
        impl: kernel path of the mixers ("auto", "triton", "chunked", "ref").

    Returns:
        the model, weights tied as at save time. The global RNG is not touched (no random init happens).

    Raises:
        InputError: not a checkpoint, files that do not match, tensor bytes that differ from the digest
            saved with them ("corrupt (checksum mismatch)"), or NaN / inf weights.
    """
    path = Path(path)
    if detect_layout(path) != "seqssm":  # a Hugging Face or mamba_ssm directory (seqssm.models.convert)
        return load_converted(path, device, dtype=dtype, impl=impl)
    config = _read_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(f"{path} is not a complete checkpoint: {WEIGHTS_NAME} is missing")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as err:
        raise InputError(f"{weights} cannot be read as safetensors ({err}); re-save the checkpoint") from None
    if not state:
        raise InputError(f"{weights} holds no tensors; re-save the checkpoint")
    fix = "restore it from a copy or train it again"
    verify_digest(weights, path, fix)
    check_finite(state, path, fix)
    if dtype is None:
        dtype = state.get("backbone.embedding.weight", next(iter(state.values()))).dtype

    with skip_init(device):
        model = MambaLMHeadModel(config, impl=impl, device=device, dtype=dtype).to(dtype)
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    # A key absent from the file is fine only when it is tied to (shares storage with) one that is present.
    loaded = {own[k].data_ptr() for k in state if k in own}
    missing = sorted(k for k in own if k not in state and own[k].data_ptr() not in loaded)
    if missing or unexpected:
        raise InputError(f"{weights} does not match {path / CONFIG_NAME}: missing tensors {missing[:4]}, "
                         f"unexpected tensors {unexpected[:4]}; the two files come from different models")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise InputError(f"{weights} does not match {path / CONFIG_NAME}: {detail}") from None
    return model
