"""Classification on top of a Mamba backbone: pooling, heads, the classifier model and its checkpoint.

A :class:`SequenceClassifier` keeps the whole :class:`~seqssm.models.lm.MambaLMHeadModel` it was built from,
so its checkpoint directory is a backbone checkpoint (``config.json`` + ``model.safetensors``, which
:func:`~seqssm.models.io.load_model` still reads) plus ``head.safetensors`` (head, and the front end's
projection: audio, or DNA patches) and ``task.json`` (:class:`TaskConfig`). DNA enters as token ids, base by
base or (``patch_size`` P > 1) in patches of P bases; audio enters as raw waveform samples, cut into
non-overlapping frames of P samples; a front end's linear map turns either kind of patch into the backbone's
inputs (``inputs_embeds``), so N bases or T samples are N / P or T / P tokens long.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from seqssm.config import POOLINGS
from seqssm.errors import InputError
from seqssm.models.frontends import FRONTENDS, DnaPatchEmbedding, audio_frontend, masked_waveform
from seqssm.models.io import (
    CONFIG_NAME,
    DIGEST_KEY,
    DIGEST_PLACEHOLDER,
    check_finite,
    save_pretrained,
    seal_digest,
    verify_digest,
)
from seqssm.models.lm import MambaLMHeadModel
from seqssm.models.loading import load_model
from seqssm.models.rcps import rc_invariant_pool
from seqssm.version import __version__

TASK_NAME = "task.json"
HEAD_NAME = "head.safetensors"
TASK_FORMAT = "seqssm-classifier"
PROBLEM_TYPES = ("single_label", "multi_label")
LEVELS = ("sequence", "token")
MODALITIES = ("dna", "audio")
IGNORE_INDEX = -100  # targets at padding (and the cls position) in token-level tasks


@dataclass
class TaskConfig:
    """What a classifier predicts and how it reads its inputs; saved as ``task.json``.

    ``classes``: the K label names, in output order. ``problem_type``: "single_label" (softmax over K,
    binary included) or "multi_label" (K independent sigmoids). ``level``: "sequence" (one prediction per
    input, from the pooled hidden states) or "token" (one per position). ``pooling``: "mean" over real
    positions (strand-combined :func:`~seqssm.models.rcps.rc_invariant_pool` for RC-equivariant backbones),
    "cls" (a cls token prepended to DNA; bidirectional backbones only), "last" real position, or "flatten":
    every position's vector concatenated, for DNA inputs of one fixed ``length`` in tokens (a position-aware
    head, as a CNN's dense layer is: promoter elements sit at fixed offsets).
    ``modality``: "dna" (token ids; with ``patch_size`` P > 1 read in patches of P bases, one token each, so
    ``length`` counts patches) or "audio" (waveform, with ``patch_size`` samples per token at ``sample_rate``
    Hz). ``normalize_audio`` scales each clip to peak 1 (recording levels vary a lot).
    ``frontend`` (audio): "raw" frames of samples or "logmel" spectrogram frames of ``n_mels`` bands, one token
    per ``patch_size`` samples either way (``seqssm.models.frontends``).

    ``num_labels`` is derived.
    """

    classes: list[str]
    problem_type: str = "single_label"
    level: str = "sequence"
    pooling: str = "mean"
    modality: str = "dna"
    patch_size: int | None = None
    sample_rate: int | None = None
    normalize_audio: bool = True
    dropout: float = 0.0
    length: int | None = None
    frontend: str = "raw"
    n_mels: int | None = None

    num_labels: int = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.classes, (list, tuple)) or not all(isinstance(c, str) and c for c in self.classes):
            raise InputError(f"TaskConfig.classes must be a list of non-empty label strings, got {self.classes!r}")
        self.classes = list(self.classes)
        if len(set(self.classes)) != len(self.classes):
            raise InputError(f"TaskConfig.classes has a label twice: {self.classes}")
        for name, choices in (("problem_type", PROBLEM_TYPES), ("level", LEVELS), ("pooling", POOLINGS),
                              ("modality", MODALITIES)):
            if getattr(self, name) not in choices:
                raise InputError(f"TaskConfig.{name} must be one of {choices}, got {getattr(self, name)!r}")
        minimum = 1 if self.problem_type == "multi_label" else 2
        if len(self.classes) < minimum:
            raise InputError(f"a {self.problem_type} task needs at least {minimum} classes, got {self.classes}; "
                             "check the label column")
        if self.frontend not in FRONTENDS or (self.frontend != "raw" and self.modality != "audio"):
            raise InputError(f"TaskConfig.frontend must be one of {FRONTENDS} (logmel: audio), got {self.frontend!r}")
        if self.modality == "audio":
            for name in ("patch_size", "sample_rate"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise InputError(f"TaskConfig.{name} must be a positive integer for audio, got {value!r}")
            if self.pooling in ("cls", "flatten"):
                raise InputError(f"{self.pooling} pooling needs DNA (a cls token, or one fixed length); use "
                                 "pooling 'mean' or 'last' for audio")
        elif self.patch_size is not None:  # DNA read in patches of P bases (seqssm.models.frontends)
            if isinstance(self.patch_size, bool) or not isinstance(self.patch_size, int) or self.patch_size < 1:
                raise InputError(f"TaskConfig.patch_size must be a positive integer (bases per token) or None, "
                                 f"got {self.patch_size!r}")
            if self.patch_size == 1:
                self.patch_size = None  # one base a token: the backbone's own embedding
            elif self.level != "sequence" or self.pooling == "cls":
                raise InputError(f"DNA patches (patch_size {self.patch_size}) give one token per patch: they need "
                                 f"a sequence-level task pooled by mean, last or flatten; use --patch-size 1 for "
                                 f"{'token-level labels' if self.level != 'sequence' else 'cls pooling'}")
        if self.pooling == "flatten" and self.level == "sequence" and (
                isinstance(self.length, bool) or not isinstance(self.length, int) or self.length < 1):
            raise InputError(f"flatten pooling needs the fixed input length in tokens, got length={self.length!r}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"TaskConfig.dropout must be in [0, 1), got {self.dropout}")
        self.num_labels = len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskConfig:
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown task keys {unknown}; the known keys are {sorted(known)}")
        return cls(**data)


def pool_hidden(
    hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str, *, rc_equivariant: bool = False
) -> torch.Tensor:
    """Pool hidden states [B, L, D] of right-padded rows into [B, D] ([B, D / 2] for RC mean pooling).

    ``attention_mask`` [B, L] is 1 on real positions (None: all real). "mean" averages real positions,
    "cls" takes position 0, "last" each row's last real position, "flatten" concatenates all L positions
    ([B, L * D]; no padding allowed). An RC-equivariant backbone's "mean" is :func:`rc_invariant_pool`, the
    same vector for a sequence and its reverse complement.
    """
    if pooling not in POOLINGS:
        raise InputError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if attention_mask is None:
        attention_mask = hidden.new_ones(hidden.shape[:2], dtype=torch.bool)
    counts = attention_mask.sum(dim=1)
    if bool((counts == 0).any()):
        row = int((counts == 0).nonzero()[0])
        raise InputError(f"pooling: row {row} has no real position (empty sequence); drop empty inputs")
    if pooling == "flatten":
        if not bool(attention_mask.all()):
            raise InputError("flatten pooling needs inputs of one length (no padding); use pooling 'mean'")
        return hidden.reshape(hidden.shape[0], -1)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), counts - 1]
    if rc_equivariant:
        return rc_invariant_pool(hidden, attention_mask)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / counts.to(hidden.dtype).unsqueeze(-1)


def pool_hidden_ref(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Row-by-row reference of :func:`pool_hidden` (not RC): obviously correct, for tests."""
    rows = []
    for b in range(hidden.shape[0]):
        n = hidden.shape[1] if attention_mask is None else int(attention_mask[b].sum())
        real = hidden[b, :n]
        rows.append({"mean": real.mean(dim=0), "cls": real[0], "last": real[-1],
                     "flatten": torch.cat(list(real))}[pooling])
    return torch.stack(rows)


def patch_frames(
    waveform: torch.Tensor, attention_mask: torch.Tensor | None, patch_size: int, *, normalize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveform [B, T] (right-padded, mask [B, T]) → frames [B, L, P] and token mask [B, L], L = ceil(T / P).

    Padding samples are zeroed first, so a row's frames do not depend on what its padding held; a frame
    is real when its first sample is. ``normalize`` divides each row by its peak |sample|.
    """
    wave, mask = masked_waveform(waveform, attention_mask, normalize)
    batch, length = wave.shape
    n_tokens = -(-length // patch_size)
    pad = n_tokens * patch_size - length
    wave = F.pad(wave, (0, pad))
    token_mask = F.pad(mask, (0, pad))[:, ::patch_size]
    return wave.view(batch, n_tokens, patch_size), token_mask


class PatchEmbedding(nn.Module):
    """Waveform [B, T] → [B, ceil(T / P), D]: a linear map of each non-overlapping frame of P samples."""

    def __init__(self, patch_size: int, d_model: int, *, normalize: bool = True, device=None, dtype=None):
        super().__init__()
        self.patch_size = patch_size
        self.normalize = normalize
        self.proj = nn.Linear(patch_size, d_model, device=device, dtype=dtype)

    def forward(
        self, waveform: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [B, L, D], token mask [B, L])."""
        frames, mask = patch_frames(waveform, attention_mask, self.patch_size, normalize=self.normalize)
        return self.proj(frames.to(self.proj.weight.dtype)), mask


class SequenceClassifier(nn.Module):
    """A backbone (inside ``lm``, a MambaLMHeadModel whose LM head is unused) plus a linear head.

    ``forward`` gives logits [B, K] (``task.level == "sequence"``) or [B, L, K] ("token"). Its input is
    token ids [B, L] with ``attention_mask`` [B, L] (DNA), or ``input_values`` [B, T] waveform samples with
    ``attention_mask`` [B, T] (audio). Rows are right-padded; each row's output is what it gives alone.
    """

    def __init__(self, lm: MambaLMHeadModel, task: TaskConfig):
        super().__init__()
        config = lm.config
        if task.modality == "audio" and config.rc_equivariant:
            raise InputError("an RC-equivariant backbone is for DNA; audio needs a plain or bidirectional one")
        if (task.modality == "dna") != (config.tokenizer == "nucleotide"):
            raise InputError(f"mismatched modality: a {task.modality} classifier on a backbone of "
                             f"{config.tokenizer!r} tokens; use a {task.modality} checkpoint or the other modality")
        if task.pooling == "cls" and not config.bidirectional:
            raise InputError("cls pooling needs a bidirectional backbone (a causal model's first position sees "
                             "only itself); use pooling 'last' or 'mean'")
        if task.pooling != "mean" and config.rc_equivariant and task.level == "sequence":
            raise InputError(f"an RC-equivariant backbone pools RC-invariantly with 'mean' only, got "
                             f"{task.pooling!r}")
        self.lm = lm
        self.task = task
        device, dtype = lm.backbone.embedding.weight.device, lm.backbone.embedding.weight.dtype
        if task.modality == "dna" and task.patch_size is not None and config.rc_equivariant:
            raise InputError("an RC-equivariant backbone reads DNA base by base; use --patch-size 1 with it")
        if task.modality == "audio":
            self.patch = audio_frontend(task.frontend, task.patch_size, config.d_model, sample_rate=task.sample_rate,
                                        n_mels=task.n_mels, normalize=task.normalize_audio, device=device, dtype=dtype)
        elif task.patch_size is not None:
            self.patch = DnaPatchEmbedding(task.patch_size, config.vocab_size, config.d_model, device=device,
                                           dtype=dtype)
        else:
            self.patch = None
        pooled_rc = config.rc_equivariant and task.level == "sequence"
        self.feature_dim = config.d_model // 2 if pooled_rc else config.d_model
        if task.pooling == "flatten" and task.level == "sequence":
            self.feature_dim *= task.length
        self.dropout = nn.Dropout(task.dropout)
        self.head = nn.Linear(self.feature_dim, task.num_labels, device=device, dtype=dtype)

    @property
    def config(self):
        return self.lm.config

    @property
    def backbone(self):
        return self.lm.backbone

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.lm.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        """The head's, and the front end's (audio, or DNA patches), which is new to the backbone too."""
        params = list(self.head.parameters())
        return params + (list(self.patch.parameters()) if self.patch is not None else [])

    def hidden(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        input_values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(hidden [B, L, D], token mask [B, L] or None): the backbone's output for either input kind."""
        if self.task.modality == "audio":
            if input_values is None or input_ids is not None:
                raise InputError("this is an audio classifier: pass input_values (waveform [B, T]), not "
                                 "input_ids")
            embeds, mask = self.patch(input_values, attention_mask)
            return self.backbone(None, mask, inputs_embeds=embeds), mask
        if input_values is not None or input_ids is None:
            raise InputError("this is a DNA classifier: pass input_ids (token ids [B, L]), not input_values")
        if self.patch is not None:  # one token per patch of bases
            embeds, mask = self.patch(input_ids, attention_mask)
            return self.backbone(None, mask, inputs_embeds=embeds), mask
        return self.backbone(input_ids, attention_mask), attention_mask

    def features(self, input_ids=None, attention_mask=None, *, input_values=None) -> tuple[torch.Tensor, Any]:
        """What the head sees: pooled [B, F] (sequence level) or per position [B, L, F] (token level)."""
        hidden, mask = self.hidden(input_ids, attention_mask, input_values=input_values)
        if self.task.level == "token":
            return hidden, mask
        if self.task.pooling == "flatten" and hidden.shape[1] != self.task.length:
            raise InputError(f"this classifier reads inputs of exactly {self.task.length} tokens (flatten "
                             f"pooling), got {hidden.shape[1]}; cut or pad the sequences to that length")
        return pool_hidden(hidden, mask, self.task.pooling, rc_equivariant=self.config.rc_equivariant), mask

    def forward(self, input_ids=None, attention_mask=None, *, input_values=None) -> torch.Tensor:
        """Logits [B, K] or [B, L, K] (see the class doc)."""
        feats, _ = self.features(input_ids, attention_mask, input_values=input_values)
        return self.head(self.dropout(feats))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over classes (single-label) or one sigmoid per label (multi-label), in fp32."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.task.problem_type == "multi_label" else logits.softmax(dim=-1)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        save_classifier(self, path)


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, problem_type: str, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean loss of logits [..., K] against targets.

    single_label: class indices [...] (IGNORE_INDEX skipped), cross-entropy weighted per class as
    ``F.cross_entropy(weight=)`` does (a weighted mean). multi_label: 0/1 targets [..., K], binary
    cross-entropy with ``class_weights`` as the positive weight of each label. Half-precision logits are
    scored in fp32.
    """
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if class_weights is not None:
        class_weights = class_weights.to(logits.dtype)
    if problem_type == "multi_label":
        return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=class_weights)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), weight=class_weights,
                           ignore_index=IGNORE_INDEX)


def save_classifier(model: SequenceClassifier, path: str | os.PathLike) -> None:
    """Write the backbone checkpoint (``config.json``, ``model.safetensors``), ``head.safetensors`` and
    ``task.json`` into directory ``path``."""

    path = Path(path)
    save_pretrained(model.lm, path)
    head = {f"head.{k}": v for k, v in model.head.state_dict().items()}
    if model.patch is not None:
        head.update({f"patch.{k}": v for k, v in model.patch.state_dict().items()})
    save_file({k: v.detach().contiguous() for k, v in head.items()}, str(path / HEAD_NAME),
              metadata={"format": "pt", DIGEST_KEY: DIGEST_PLACEHOLDER})
    seal_digest(path / HEAD_NAME)
    record = {"format": TASK_FORMAT, "seqssm_version": __version__, **model.task.to_dict()}
    (path / TASK_NAME).write_text(json.dumps(record, indent=2) + "\n")


def read_task(path: str | os.PathLike) -> TaskConfig:
    """The :class:`TaskConfig` of a classifier checkpoint; InputError for a backbone-only one."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise InputError(f"{path} is not a checkpoint directory ({CONFIG_NAME} is missing); pass the "
                         "checkpoint/ folder that `seqssm finetune` wrote")
    task_file = path / TASK_NAME
    if not task_file.is_file():
        raise InputError(f"{path} has no classification head ({TASK_NAME} is missing): it is a backbone "
                         "checkpoint; fine-tune it first with `seqssm finetune --init-from` it")
    try:
        data = json.loads(task_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{task_file} is not valid JSON ({err}); re-run the fine-tuning") from None
    if not isinstance(data, dict) or data.pop("format", None) != TASK_FORMAT:
        raise InputError(f"{task_file} is not a seqssm classifier task file; re-run the fine-tuning")
    data.pop("seqssm_version", None)
    try:
        return TaskConfig.from_dict(data)
    except (InputError, TypeError) as err:
        raise InputError(f"{task_file}: {err}") from None


def load_classifier(
    path: str | os.PathLike, device: torch.device | str = "cpu", *, impl: str = "auto"
) -> SequenceClassifier:
    """Read a classifier checkpoint written by :func:`save_classifier` (bit-exact)."""
    path = Path(path)
    task = read_task(path)
    model = SequenceClassifier(load_model(path, device, impl=impl), task)
    weights = path / HEAD_NAME
    if not weights.is_file():
        raise InputError(f"{path} is not a complete classifier checkpoint: {HEAD_NAME} is missing")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError) as err:
        raise InputError(f"{weights} cannot be read as safetensors ({err}); re-run the fine-tuning") from None
    fix = "restore it from a copy or re-run the fine-tuning"
    verify_digest(weights, path, fix)
    check_finite(state, path, fix)
    for prefix, module in (("head", model.head), ("patch", model.patch)):
        if module is None:
            continue
        own = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        try:
            module.load_state_dict(own)
        except RuntimeError as err:
            detail = "; ".join(line.strip() for line in str(err).splitlines()[1:3])
            raise InputError(f"{weights} does not match {path / TASK_NAME}: {detail}") from None
    return model


def encode_dna(sequences: Sequence[str], tokenizer, *, add_cls: bool = False,
               names: Sequence[str] | None = None) -> list[torch.Tensor]:
    """DNA strings → token id tensors [L_i] (the cls id first with ``add_cls``); errors name ``names[i]``."""
    out = []
    for i, seq in enumerate(sequences):
        ids = tokenizer.encode(seq, source=f"input {names[i]!r}" if names is not None else f"sequence {i}")
        if add_cls:
            ids = np.concatenate(([tokenizer.cls_id], ids))
        out.append(torch.from_numpy(np.asarray(ids, dtype=np.int64)))
    return out
