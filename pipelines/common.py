"""Small pieces every pipeline needs: device choice, seeding, checkpoint checks, progress bars; the safe
outputs (``OutputPlan``, ``atomic_path``) are in ``pipelines/outputs.py`` and re-exported here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from seqssm.device import autocast, resolve_device, seed_everything  # noqa: F401  (re-exported for the pipelines)
from seqssm.errors import InputError, require_file  # noqa: F401  (re-exported for the pipelines)
from seqssm.pipelines.outputs import (  # noqa: F401  (re-exported for the pipelines)
    FILE,
    FOLDER,
    OutputPlan,
    atomic_path,
    remove_stale_temps,
)

# ------------------------------------------------------------------------------------------- checkpoints

LM, CLASSIFIER, ANY = "language model", "classifier", "any"
_TOKENIZER_MODALITY = {"nucleotide": "dna", "byte": "byte", "external": "external"}

# A checkpoint's modality as --modality spells it (config.json's tokenizer "byte" is "bytes" on the command line).
FLAG_MODALITY = {"dna": "dna", "audio": "audio", "byte": "bytes"}
FLAG_OF = {flag: have for have, flag in FLAG_MODALITY.items()}
_MODALITY_WORD = {"dna": "DNA", "audio": "audio", "byte": "byte-level", "external": "external text"}

# What to do instead when the command cannot take the checkpoint's modality: by (command, the checkpoint's
# modality), else by command.
_MODALITY_FIX = {
    ("generate", "audio"): ("`seqssm generate` samples audio from it (the modality follows the checkpoint); in "
                            "Python call seqssm.pipelines.audio_lm.generate_audio(GenerateAudioConfig(...))"),
    ("generate", "dna"): "drop --modality audio / bytes (DNA is written as FASTA)",
    ("embed", "audio"): "embed audio with `seqssm score-audio CHECKPOINT AUDIO --out DIR --embeddings`",
    ("embed --stream", "audio"): "embed audio with `seqssm score-audio CHECKPOINT AUDIO --out DIR --embeddings`",
    ("score-audio", "dna"): "embed DNA with `seqssm embed`, sample it with `seqssm generate`",
    "predict": "drop --modality (the classifier's is used) or use a classifier of that modality",
    "pretrain": "set --modality to the checkpoint's, or pass --init-from a checkpoint of this modality",
    "finetune": "set --modality to the checkpoint's, or pass --init-from a checkpoint of this modality",
}
_MODALITY_FLAG = ("generate", "predict", "pretrain", "finetune")  # the commands with a --modality option


def _foreign_tokenizer(path: Path) -> str:
    """The tokenizer a Hugging Face / mamba_ssm directory's weights carry (a seqssm export records it in the
    safetensors metadata), else "external": that of the text model it came with, which seqssm lacks."""
    from safetensors import SafetensorError, safe_open

    from seqssm.models.convert import EXTERNAL_TOKENIZER, METADATA_KEY, WEIGHTS_NAME

    try:
        with safe_open(str(path / WEIGHTS_NAME), "pt") as handle:
            carried = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
    except (SafetensorError, OSError, ValueError):
        return EXTERNAL_TOKENIZER  # sharded, or unreadable: the loader says which
    return carried.get("tokenizer", EXTERNAL_TOKENIZER) if isinstance(carried, dict) else EXTERNAL_TOKENIZER


def checkpoint_kind(path: str | os.PathLike) -> tuple[str, bool, str, bool]:
    """(modality "dna" / "audio" / "byte" / "external", fine-tuned classifier?, tokenizer name, bidirectional?)
    of checkpoint ``path`` (seqssm's, or a Hugging Face / mamba_ssm one), from its JSON files and headers
    only; InputError when it is not a checkpoint."""
    from seqssm.models.convert import detect_layout
    from seqssm.models.heads import TASK_NAME, read_task
    from seqssm.models.io import read_config

    path = Path(path)
    if detect_layout(path) != "seqssm":  # always causal language models
        tokenizer = _foreign_tokenizer(path)
        return _TOKENIZER_MODALITY.get(tokenizer, "audio"), False, tokenizer, False
    config = read_config(path)
    if (path / TASK_NAME).is_file():
        return read_task(path).modality, True, config.tokenizer, config.bidirectional
    return _TOKENIZER_MODALITY.get(config.tokenizer, "audio"), False, config.tokenizer, config.bidirectional


def checkpoint_modality(path: str | os.PathLike, command: str, *, given: str | None = None,
                        takes: tuple[str, ...] | None = None, kind: str = ANY, causal: bool | None = None) -> str:
    """The modality ``seqssm command`` runs in with checkpoint ``path``: the checkpoint's own (its config's
    tokenizer, a classifier's task), spelt as --modality spells it ("dna", "audio", "bytes"; "external" for
    a foreign text model). How embed, generate and score choose, so that no command needs --modality for
    what the checkpoint already says.

    ``given``: the --modality the user passed (None: not given, the checkpoint decides); one that contradicts
    the checkpoint is refused in one line. ``takes``: the checkpoint modalities the command handles
    ("dna", "audio", "byte"; None: any); ``kind``, ``causal``: as :func:`check_checkpoint`, which runs first.
    """
    have = check_checkpoint(path, command, modality=takes, kind=kind, causal=causal, given=given)
    return FLAG_MODALITY.get(have, have)


def check_checkpoint(path: str | os.PathLike, command: str, *, modality: str | tuple[str, ...] | None = None,
                     kind: str = ANY, causal: bool | None = None, given: str | None = None,
                     patches_ok: bool = False) -> str:
    """Refuse, from its JSON files and before any weights are read, a checkpoint that ``seqssm command``
    cannot use; the message says which command or flag fits. Returns the checkpoint's modality.

    ``modality``: "dna", "audio", or a tuple of those the command takes (the first is named; None: any).
    ``kind``: LM (from `seqssm pretrain`; no task.json), CLASSIFIER (from `seqssm finetune`) or ANY.
    ``causal``: True needs a causal model, False a bidirectional one, None either.
    ``given``: a --modality value ("dna", "audio", "bytes") the checkpoint must be of (None: no check); see
    :func:`checkpoint_modality`. ``patches_ok``: the command runs a classifier's own front end, so it takes one
    that reads DNA in patches (``finetune --patch-size``); the others need a model that reads base by base.
    """
    have, classifier, tokenizer, bidirectional = checkpoint_kind(path)
    if classifier and not patches_ok and have == "dna":
        from seqssm.models.heads import read_task

        patch = read_task(path).patch_size
        if patch:
            raise InputError(f"checkpoint {path} is a classifier that reads DNA in patches of {patch} bases "
                             f"(finetune --patch-size), so it has no base-by-base model for `seqssm {command}`; use "
                             "it with `seqssm predict` or `seqssm probe`, or fine-tune with --patch-size 1")
    wanted = (modality,) if isinstance(modality, str) else modality
    if kind == LM and classifier:
        raise InputError(f"checkpoint {path} is a fine-tuned classifier (it has a task.json), not a language "
                         f"model; `seqssm {command}` needs a checkpoint from `seqssm pretrain` (a classifier "
                         "goes to `seqssm predict`)")
    if kind == CLASSIFIER and not classifier:
        raise InputError(f"checkpoint {path} has no classification head (no task.json): it is a language model; "
                         f"`seqssm {command}` needs a checkpoint from `seqssm finetune`: fine-tune this one with "
                         f"`seqssm finetune DATA --init-from {path}`, or use it for embeddings with `seqssm embed`")
    if given is not None and FLAG_MODALITY.get(have, have) != given:
        if wanted is not None and have not in wanted:  # the command cannot take it at all: say what can
            word = _MODALITY_WORD.get(FLAG_OF.get(given), given)
            fix = _MODALITY_FIX.get((command, have), f"use {_a(word)} checkpoint")
        else:
            fix = (f"drop --modality {given} (`seqssm {command}` follows the checkpoint, here "
                   f"{FLAG_MODALITY.get(have, have)})")
        raise InputError(f"mismatched modality: --modality {given} but checkpoint {path} is "
                         f"{_a(_MODALITY_WORD.get(have, have))} {'classifier' if classifier else 'model'} "
                         f"(tokenizer {tokenizer!r}); {fix}")
    if wanted is not None and have not in wanted:
        modality = wanted[0]
        if have == "external":
            fix = ("seqssm does not ship its text tokenizer: give it token ids through the Python API "
                   "(seqssm.models.load_model)")
        else:
            fix = _MODALITY_FIX.get((command, have)) or _MODALITY_FIX.get(command, f"use a {modality} checkpoint")
        # A byte-level checkpoint is asked for by --modality bytes, on every command that reads raw bytes.
        asked = "--modality bytes" if modality == "byte" else (
            f"--modality {modality}" if command in _MODALITY_FLAG else f"`seqssm {command}` takes {modality}")
        what = "classifier" if classifier else "model"
        if command not in _MODALITY_FLAG and modality != "byte":  # no flag to blame: say what the command takes
            takes = " or ".join(_MODALITY_WORD.get(w, w) for w in wanted)
            raise InputError(f"mismatched modality: `seqssm {command}` takes {takes} models but checkpoint {path} is "
                             f"{_a(_MODALITY_WORD.get(have, have))} {what} (tokenizer {tokenizer!r}); {fix}")
        raise InputError(f"mismatched modality: {asked} but checkpoint {path} is not {_a(modality)} {what}, it is "
                         f"{_a(have)} one (tokenizer {tokenizer!r}); {fix}")
    if causal is True and bidirectional:
        fix = ("use --objective mlm to continue it" if command == "pretrain" else
               "train one with `seqssm pretrain --objective clm`")
        raise InputError(f"checkpoint {path} is bidirectional (a masked LM); `seqssm {command}` needs a causal "
                         f"one: {fix}")
    if causal is False and not bidirectional:
        raise InputError(f"checkpoint {path} is causal; --objective mlm trains a bidirectional model: use "
                         "--objective clm to continue this one")
    return have


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


BROKEN_WEIGHTS = "its weights are broken (a diverged run or a damaged file); train it again or restore a good copy"


def require_finite(values: torch.Tensor, source: str, what: str, fix: str = BROKEN_WEIGHTS) -> None:
    """InputError "``source`` gives non-finite outputs ... for ``what``: ``fix``" when ``values`` hold NaN or
    inf; one reduction, so cheap enough for every batch. ``source`` is e.g. "checkpoint runs/lm/checkpoint"."""
    if not bool(torch.isfinite(values).all()):
        raise InputError(f"{source} gives non-finite outputs (NaN or inf) for {what}: {fix}")


def load_checked(checkpoint: str | os.PathLike, device: torch.device | str = "cpu", *, impl: str = "auto",
                 probe: bool = True):
    """``seqssm.models.load_model`` onto ``device`` (weights checked against their digest and for NaN / inf),
    then :func:`probe_model`: how every pipeline opens a checkpoint (after :func:`check_checkpoint` has read
    its JSON). ``probe=False`` skips the probe, for a job that checks every output it computes anyway and
    whose first outputs come soon (the streamed jobs: a probe of 16 tokens there costs a process the load,
    or on a cold cache the compile, of a second set of GPU kernels that the job never uses again)."""
    from seqssm.models import load_model

    model = load_model(checkpoint, device=device, impl=impl)
    if probe:
        probe_model(model, checkpoint)
    return model


@torch.no_grad()
def probe_model(model: torch.nn.Module, checkpoint: str | os.PathLike) -> None:
    """One forward pass of a MambaLMHeadModel over 16 tokens, right after loading: a model whose outputs are
    not finite is refused before the work starts, not after hours or inside a sampling loop."""
    device = next(model.parameters()).device
    ids = (torch.arange(16, device=device) % model.config.vocab_size)[None]
    training = model.training
    model.eval()
    try:
        require_finite(model(ids), f"checkpoint {checkpoint}", "a probe of 16 tokens")
    finally:
        model.train(training)


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar on stderr that stays quiet when stderr is not a terminal and SEQSSM_PROGRESS is unset."""
    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("SEQSSM_PROGRESS") == "1")
    return tqdm(iterable, disable=disable, dynamic_ncols=True, **kwargs)
