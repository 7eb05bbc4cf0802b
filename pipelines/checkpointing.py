"""Resumable training: the state a run needs to continue exactly where it stopped, and stopping cleanly.

``{out}/trainer_state/`` holds two files, written together under a temporary name and swapped in by
``common.atomic_path`` (the previous state stays until the new one is complete):

- ``trainer_state.safetensors``: every tensor: ``model.*`` (the weights being trained), ``ema.*`` (the
  weight average), ``optimizer.{i}.{key}`` (per-parameter optimiser state, flattened by parameter index),
  ``rng.torch`` / ``rng.cuda`` / ``rng.generator.{name}`` (torch RNG states as uint8 tensors); a sha256 of
  the tensor bytes sits in its header, as in model checkpoints.
- ``trainer_state.json``: everything else: the resolved config, the pipeline's position (step, epoch, loss,
  history, ...), the optimiser's scalars and parameter groups, the LR scheduler, the EMA's update count,
  and the Python and numpy RNG states.

Never pickle. A resumed run restores all of it; data order is a pure function of (seed, position), so the
pipelines only skip what was trained. SIGTERM and SIGINT (:class:`StopSignals`) save the state at the next
step boundary and end the run (:class:`TrainingInterrupted`, exit code 143 for SIGTERM; KeyboardInterrupt,
which the CLI makes exit code 130, for SIGINT); a non-finite loss, or non-finite weights at a validation
(before they would be saved), end it with :class:`TrainingDiverged` (an InputError: exit code 2, one line).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from seqssm.errors import InputError
from seqssm.models.io import DIGEST_KEY, DIGEST_PLACEHOLDER, seal_digest, verify_digest
from seqssm.pipelines.common import atomic_path

STATE_DIR = "trainer_state"
TENSORS_NAME = "trainer_state.safetensors"
JSON_NAME = "trainer_state.json"
FORMAT = 1
# Options a resumed run may change: where and how it computes, not what it computes (--out is where the state
# is read from, so it is the same folder however it is spelt).
FREE_OPTIONS = ("out", "resume", "overwrite", "device", "impl", "num_workers")


class TrainingInterrupted(SystemExit):
    """SIGTERM arrived and the training state is saved: the process ends with 128 + the signal number (143),
    the code the signal itself would have given, after a one-line message on stderr."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.signum, self.message = signum, message


class TrainingDiverged(InputError):
    """The loss (or the weights) became NaN or infinite; the message names the step and the last good
    checkpoint, and run.json records it (``status`` "diverged")."""


# --------------------------------------------------------------------------------------------- signals


class StopSignals:
    """While active, SIGTERM and SIGINT only set :attr:`signum`; the training loop saves its state at the next
    step boundary and stops. A second signal stops at once (the handlers that were there before, e.g. Ctrl-C's
    KeyboardInterrupt). A signal the process ignores stays ignored; outside the main thread (signals cannot be
    caught there) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            self._restore()
            signal.raise_signal(signum)
            return
        self.signum = signum
        # os.write, not print: a handler can run in the middle of another write to sys.stderr.
        os.write(2, f"seqssm: {signal.Signals(signum).name} received: saving the training state after this step "
                    "(send it again to stop at once)\n".encode())

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a job a script started with &
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


def stop_for_signal(signum: int, message: str) -> BaseException:
    """What a pipeline raises once the state is saved: KeyboardInterrupt for SIGINT (as Ctrl-C always does),
    else :class:`TrainingInterrupted`. The message goes to stderr first (SystemExit prints nothing)."""
    os.write(2, f"seqssm: {message}\n".encode())
    return KeyboardInterrupt(message) if signum == signal.SIGINT else TrainingInterrupted(signum, message)


def diverged(what: str, checkpoint: Path, checkpoint_step: int | None, state_step: int | None,
             which: str = "") -> TrainingDiverged:
    """The error that ends a run when ``what`` ("the loss is nan at step 7": steps counted from 1, as the log
    counts them) happened, naming the last good ``checkpoint`` (saved at ``checkpoint_step``; ``which``: e.g.
    "the best, ") and the training state beside it (saved at ``state_step``); None: none was saved."""
    saved = (f"the last good checkpoint is {checkpoint} ({which}step {checkpoint_step})" if checkpoint_step
             else "no checkpoint was saved before it")
    if state_step is not None:
        saved += f", the last saved training state {checkpoint.parent / STATE_DIR} (step {state_step})"
    return TrainingDiverged(f"training diverged: {what}; {saved}; lower --lr (or --grad-clip) and train again")


def weights_finite(model: torch.nn.Module) -> bool:
    """No NaN or inf in any floating-point parameter (one host sync): checked before weights are saved."""
    flags = [torch.isfinite(p).all() for p in model.parameters() if p.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


# ------------------------------------------------------------------------------------------ RNG states


def _rng_state(device: torch.device, generators: dict[str, torch.Generator]) -> tuple[dict, dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    for name, generator in generators.items():
        tensors[f"rng.generator.{name}"] = generator.get_state()
    version, internal, gauss = random.getstate()
    numpy = np.random.get_state(legacy=False)
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": {"bit_generator": numpy["bit_generator"],
                  "state": {"key": numpy["state"]["key"].tolist(), "pos": int(numpy["state"]["pos"])},
                  "has_gauss": int(numpy["has_gauss"]), "gauss": float(numpy["gauss"])},
    }
    return tensors, meta


def _set_rng_state(tensors: dict, meta: dict, device: torch.device, generators: dict[str, torch.Generator]) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = meta["numpy"]
    np.random.set_state({**numpy, "state": {"key": np.array(numpy["state"]["key"], dtype=np.uint32),
                                            "pos": numpy["state"]["pos"]}})
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:  # a run moved between CPU and GPU keeps its CPU streams
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    for name, generator in generators.items():
        generator.set_state(tensors[f"rng.generator.{name}"])


# ------------------------------------------------------------------------------------------- optimiser


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(tensors ``optimizer.{i}.{key}``, JSON: the parameter groups and the non-tensor per-parameter values)."""
    saved = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in saved["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": saved["param_groups"], "state": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict, where: Path) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, entries in meta["state"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = []
    for saved, current in zip(meta["param_groups"], optimizer.param_groups, strict=False):
        # JSON has no tuples; give back the type the optimiser uses (AdamW's betas).
        groups.append({k: tuple(v) if isinstance(current.get(k), tuple) else v for k, v in saved.items()})
    try:
        if len(meta["param_groups"]) != len(optimizer.param_groups):
            raise ValueError("a different number of parameter groups")
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as err:
        raise InputError(f"--resume: the optimiser state in {where} does not fit this model ({err}); resume with "
                         "the options of the run that saved it") from None


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, and no two sharing memory (tied weights): safetensors refuses shared tensors."""
    out, seen = {}, set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key in seen:
            tensor = tensor.clone()
        seen.add(key)
        out[name] = tensor
    return out


# ------------------------------------------------------------------------------------ saving, loading


def _config_record(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def save_trainer_state(folder: str | os.PathLike, cfg, position: dict, *, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, scheduler, device: torch.device,
                       generators: dict[str, torch.Generator] | None = None, ema=None) -> Path:
    """Write ``folder`` (``{out}/trainer_state``) atomically; ``position`` is the pipeline's own JSON (its
    ``step`` at least). Call it at a step boundary, after anything that step logs or saves."""
    folder = Path(folder)
    generators = generators or {}
    rng_tensors, rng_meta = _rng_state(device, generators)
    optimizer_tensors, optimizer_meta = _optimizer_state(optimizer)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        ema_state = ema.state_dict()
        tensors.update({f"ema.{k}": v for k, v in ema_state["model"].items()})
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    meta = {"format": FORMAT, "step": position["step"], "config": _config_record(cfg), "position": position,
            "optimizer": optimizer_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta,
            "ema_updates": ema_state["updates"] if ema is not None else None}
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        save_file(_unshared(tensors), str(tmp / TENSORS_NAME),
                  metadata={"step": str(position["step"]), DIGEST_KEY: DIGEST_PLACEHOLDER})
        seal_digest(tmp / TENSORS_NAME)
        (tmp / JSON_NAME).write_text(json.dumps(meta, indent=1) + "\n")
        for name in (TENSORS_NAME, JSON_NAME):  # on disk before the rename makes it the state to resume from
            _fsync(tmp / name)
    return folder


@dataclass
class TrainerState:
    """A saved training state, read by :func:`read_trainer_state` and restored piece by piece: the weights
    before the model is wrapped (DDP) or copied (EMA), the rest once optimiser and scheduler exist."""

    folder: Path
    meta: dict
    tensors: dict

    @property
    def position(self) -> dict:
        return self.meta["position"]

    def _part(self, prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def load_model(self, model: torch.nn.Module) -> None:
        try:
            model.load_state_dict(self._part("model."))
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise InputError(f"--resume: the weights in {self.folder} do not fit this model ({first}); resume "
                             "with the options of the run that saved them") from None

    def restore(self, *, optimizer: torch.optim.Optimizer, scheduler, device: torch.device,
                generators: dict[str, torch.Generator] | None = None, ema=None) -> None:
        """Optimiser, scheduler, EMA and every RNG; call it last, just before the first step, so nothing
        drawn while setting up moves a stream after it was restored."""
        _load_optimizer(optimizer, self.tensors, self.meta["optimizer"], self.folder)
        scheduler.load_state_dict(self.meta["scheduler"])
        if ema is not None:
            if self.meta["ema_updates"] is None:
                raise InputError(f"--resume: {self.folder} holds no weight average; resume without --ema")
            ema.load_state_dict({"updates": self.meta["ema_updates"], "model": self._part("ema.")})
        _set_rng_state(self.tensors, self.meta["rng"], device, generators or {})


def _option(name: str) -> str:
    return "DATA" if name == "data" else f"--{name.replace('_', '-')}"


def _same_value(then, now) -> bool:
    """Equal, or two spellings of one existing path (a run resumed from another folder)."""
    if then == now:
        return True
    if not (isinstance(then, str) and isinstance(now, str) and os.path.exists(then) and os.path.exists(now)):
        return False
    return os.path.samefile(then, now)


def read_trainer_state(out: str | os.PathLike, cfg) -> TrainerState:
    """The state saved in ``{out}/trainer_state`` for ``--resume``: InputError when there is none, when it is
    damaged, or when ``cfg`` differs from the saved run's config in anything but :data:`FREE_OPTIONS`."""
    folder = Path(out) / STATE_DIR
    tensors_path, json_path = folder / TENSORS_NAME, folder / JSON_NAME
    if not (tensors_path.is_file() and json_path.is_file()):
        raise InputError(f"--resume: {out} holds no saved training state ({folder} is missing: the run there saved "
                         "none yet, or it is not a training run's folder); start the run without --resume")
    fix = "the state cannot be resumed; start the run again without --resume (and with --overwrite)"
    try:
        meta = json.loads(json_path.read_text())
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise InputError(f"--resume: {folder} is damaged ({err}); {fix}") from None
    verify_digest(tensors_path, folder, fix)
    if meta.get("format") != FORMAT:
        raise InputError(f"--resume: {folder} was written in format {meta.get('format')!r} by another seqssm "
                         f"version, this one reads format {FORMAT}; {fix}")
    saved, current = meta["config"], _config_record(cfg)
    changed = [k for k in current if k not in FREE_OPTIONS and not _same_value(saved.get(k), current[k])]
    if changed:
        shown = "; ".join(f"{_option(k)} {saved.get(k)!r} then, {current[k]!r} now" for k in changed)
        raise InputError(f"--resume: the run in {out} was started with other options ({shown}); resume with the "
                         "options it was started with, or start a new run in another --out")
    return TrainerState(folder, meta, tensors)


def resume_log(path: Path, header: str, step: int) -> list[str]:
    """The lines of ``path`` (an earlier part's train_log.tsv) a run resumed at ``step`` keeps: the header and
    the rows of steps up to ``step``; later rows came after the saved state, and the resumed run writes them
    again."""
    if not path.is_file():
        return [header]
    lines = path.read_text().splitlines(keepends=True)
    if not lines or lines[0] != header:
        raise InputError(f"--resume: {path} is not the training log this command writes (its header differs); "
                         "move it away and resume again")
    kept = [header]
    for line in lines[1:]:
        first = line.split("\t", 1)[0]
        if not first.isdigit():
            raise InputError(f"--resume: {path} has a row that does not start with a step number ({line.strip()!r}); "
                             "move the file away and resume again")
        if int(first) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    return kept
