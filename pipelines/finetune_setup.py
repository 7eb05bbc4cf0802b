"""The pieces of `seqssm finetune` around its training loop: the data and its split, the task, the backbone,
the data loaders, the optimiser and the sample-rate warning (``seqssm.pipelines.finetune`` runs them)."""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils.data import DataLoader

from seqssm.config import MambaConfig
from seqssm.datasets.labelled import InputSpec, natural_key, split_label
from seqssm.datasets.splits import labelled_splits
from seqssm.datasets.training_sets import AudioEvalClips, AudioTrainClips, RCFlipped
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.models.frontends import LOGMEL_BANDS
from seqssm.models.heads import SequenceClassifier, TaskConfig
from seqssm.pipelines.classify import TaskCollate, pad_tokens_for
from seqssm.pipelines.common import load_checked
from seqssm.pipelines.configs_train import FinetuneConfig
from seqssm.pipelines.train_utils import RECIPE_SAMPLE_RATE, EpochSampler, param_groups, sample_rate_warning
from seqssm.transforms import WaveformAugment

RAW_PATCH = 16  # the raw front end's default samples per token


def load_data(cfg: FinetuneConfig):
    """(labels of every item, {split: items}, sample rate): Examples for DNA, AudioRecords for audio; the split
    `seqssm baseline` takes too (``seqssm.datasets.splits``)."""
    return labelled_splits(InputSpec.of(cfg), cfg.split, cfg.seed, cfg.level)


def init_seed(cfg: FinetuneConfig) -> int:
    """The seed of everything random in training but the split."""
    return cfg.seed if cfg.init_seed is None else cfg.init_seed


# --pooling auto takes flatten up to this many positions (its head has length x d_model weights a class): on
# short fixed-length DNA tasks it beat mean pooling clearly (sigma subtypes 0.822 against a majority-class
# collapse at 0.602; promoters 0.848; benchmarks/RESULTS-classification.md).
AUTO_FLATTEN_MAX = 512


def _rc_equivariant(cfg: FinetuneConfig) -> bool:
    """Whether the backbone (--init-from's, else the fresh one) is RC-equivariant."""
    if cfg.init_from:
        from seqssm.models.io import read_config

        return read_config(cfg.init_from).rc_equivariant
    return cfg.rc_equivariant


def pooling_of(cfg: FinetuneConfig, splits: dict) -> str:
    """``--pooling``, with auto resolved by the data: flatten for sequence-level DNA inputs of one length up to
    AUTO_FLATTEN_MAX, mean otherwise (audio, variable lengths, long inputs, token-level tasks, RC-equivariant
    backbones, whose RC-invariant pooling is mean)."""
    if cfg.pooling != "auto":
        return cfg.pooling
    rc = _rc_equivariant(cfg)
    if cfg.modality == "dna" and cfg.level == "sequence" and not rc:  # RC-equivariant models pool by mean
        lengths = {len(item.data) for items in splits.values() for item in items}
        if len(lengths) == 1 and 0 < next(iter(lengths)) <= AUTO_FLATTEN_MAX:
            return "flatten"
    return "mean"


# --patch-size auto (None) reads sequence-level DNA whose median input is longer than AUTO_DNA_PATCH_OVER bases in
# patches of AUTO_DNA_PATCH bases (seqssm.models.frontends.DnaPatchEmbedding): 8x fewer tokens, so a 1-2 kb task
# trains at ~89 k bases/s on one CPU core against ~9 k base by base (d_model 64, 2 bidirectional layers, batch 32
# of 1,536 bases, 2026-12-04); benchmarks/NOTES-classification.md has what it does to accuracy.
AUTO_DNA_PATCH_OVER = 512
AUTO_DNA_PATCH = 8


def dna_patch_of(cfg: FinetuneConfig, splits: dict, pooling: str) -> int | None:
    """Bases per token of a DNA task (None: one base a token): ``--patch-size``, or auto (None) resolved by the
    data: AUTO_DNA_PATCH for sequence-level inputs of median length over AUTO_DNA_PATCH_OVER (not with cls
    pooling, token-level labels or RC-equivariant backbones, which read base by base)."""
    if cfg.modality != "dna":
        return None
    if cfg.patch_size is not None:
        return None if cfg.patch_size == 1 else cfg.patch_size
    if cfg.level != "sequence" or pooling == "cls" or _rc_equivariant(cfg):
        return None
    lengths = sorted(len(item.data) for items in splits.values() for item in items)
    return AUTO_DNA_PATCH if lengths and lengths[len(lengths) // 2] > AUTO_DNA_PATCH_OVER else None


# --class-weights auto and --metric auto turn to balanced loss weights and early stopping on macro F1 when the
# training rows' largest class has at least this many times the rows of the smallest: without them an
# imbalanced task's model drifts to the large classes (sigma subtypes, 18:1, benchmarks/RESULTS-classification.md).
AUTO_IMBALANCE = 3.0


def imbalance(task: TaskConfig, train: list) -> float | None:
    """Rows of the largest class over rows of the smallest (inf when a class has none) among the training rows
    of a single-label sequence task; None for multi-label and token-level tasks."""
    if task.problem_type != "single_label" or task.level != "sequence" or not train:
        return None
    counts = Counter(item.label for item in train)
    sizes = [counts.get(c, 0) for c in task.classes]
    return float("inf") if min(sizes) == 0 else max(sizes) / min(sizes)


def class_weights_of(cfg: FinetuneConfig, task: TaskConfig, train: list):
    """``--class-weights`` with auto resolved by the training rows: "balanced" when :func:`imbalance` is at
    least AUTO_IMBALANCE, else None."""
    if cfg.class_weights != "auto":
        return cfg.class_weights
    ratio = imbalance(task, train)
    return "balanced" if ratio is not None and ratio >= AUTO_IMBALANCE else None


def metric_of(cfg: FinetuneConfig, task: TaskConfig, train: list) -> str:
    """``--metric`` with auto resolved: macro F1 for multi-label and imbalanced single-label tasks (as
    :func:`class_weights_of` decides), accuracy otherwise."""
    if cfg.metric != "auto":
        return cfg.metric
    ratio = imbalance(task, train)
    imbalanced = ratio is not None and ratio >= AUTO_IMBALANCE
    return "macro_f1" if task.problem_type == "multi_label" or imbalanced else "accuracy"


def fixed_length(cfg: FinetuneConfig, splits: dict, pooling: str | None = None, dna_patch: int | None = None
                 ) -> int | None:
    """The one length in tokens of every DNA input, which flatten pooling needs (``pooling``: the resolved one;
    ``dna_patch``: bases per token, :func:`dna_patch_of`)."""
    if (pooling or cfg.pooling) != "flatten" or cfg.level != "sequence":
        return None
    if cfg.modality != "dna":
        raise InputError("--pooling flatten needs DNA inputs of one length; use mean or last for audio")
    lengths = {len(item.data) for items in splits.values() for item in items}
    if len(lengths) != 1:
        raise InputError(f"--pooling flatten needs inputs of one length, {cfg.data} has lengths "
                         f"{min(lengths)} to {max(lengths)}; use --pooling mean (or --length for BED)")
    return -(-lengths.pop() // (dna_patch or 1))


def task(cfg: FinetuneConfig, labels: list[str], rate: int | None, length: int | None = None,
         pooling: str | None = None, dna_patch: int | None = None) -> TaskConfig:
    """The TaskConfig of a run; ``pooling`` and ``dna_patch`` are the resolved ones (:func:`pooling_of`,
    :func:`dna_patch_of`) when ``--pooling`` / ``--patch-size`` are auto."""
    multi = cfg.problem_type == "multi_label" or (
        cfg.problem_type == "auto" and cfg.level == "sequence" and any(";" in label for label in labels))
    if cfg.level == "token":
        classes = {c for label in labels for c in label}
    elif multi:
        classes = {part for label in labels for part in split_label(label)}
    else:
        classes = set(labels)
    return TaskConfig(classes=sorted(classes, key=natural_key), problem_type="multi_label" if multi else
                      "single_label", level=cfg.level, pooling=pooling or cfg.pooling, modality=cfg.modality,
                      patch_size=patch_size(cfg, rate) if cfg.modality == "audio" else dna_patch, sample_rate=rate,
                      dropout=cfg.dropout, length=length, **frontend(cfg))


def patch_size(cfg: FinetuneConfig, rate: int) -> int:
    """Samples per token: ``--patch-size``, else 16 (raw; 2 ms at 8 kHz) or a 10 ms hop (logmel, as log-mel
    front ends use, e.g. 80 at 8 kHz)."""
    if cfg.patch_size is not None:
        return cfg.patch_size
    return RAW_PATCH if frontend_of(cfg) == "raw" else max(1, round(rate / 100))


def frontend(cfg: FinetuneConfig) -> dict:
    """The audio front end's TaskConfig fields (``seqssm.models.frontends``)."""
    if cfg.modality != "audio" or frontend_of(cfg) == "raw":
        return {}
    return {"frontend": "logmel", "n_mels": LOGMEL_BANDS}


def frontend_of(cfg: FinetuneConfig) -> str:
    """The audio front end: ``--frontend``; "auto" is logmel. On FSDD (1,200 clips, takes 0-4 test; d_model 32 ×
    2 layers, 4 CPU minutes, 3 seeds) logmel beat raw at the same 80-sample hop by +0.21 accuracy (paired SE
    0.09), and raw at its old 16-sample default stayed at chance (0.08)."""
    return "logmel" if cfg.frontend == "auto" else cfg.frontend


def backbone(cfg: FinetuneConfig, rate: int | None) -> MambaLMHeadModel:
    if cfg.init_from:
        return load_checked(cfg.init_from, impl=cfg.impl)
    extra = {"tokenizer": "mulaw8", "vocab_size": 256, "sample_rate": rate} if cfg.modality == "audio" else {
        "tokenizer": "nucleotide", "vocab_size": 10}
    config = MambaConfig(d_model=cfg.d_model, n_layer=cfg.n_layer, d_state=cfg.d_state, expand=cfg.expand,
                         bidirectional=cfg.bidirectional or cfg.rc_equivariant, rc_equivariant=cfg.rc_equivariant,
                         **extra, **cfg.architecture())
    return MambaLMHeadModel(config, impl=cfg.impl)


def loaders(cfg: FinetuneConfig, task: TaskConfig, splits: dict, rate: int | None, device: torch.device):
    """(train, val, test) DataLoaders. Training order, RC flips, crops and augmentation are pure functions of
    (init seed, epoch, index): the train loader's ``EpochSampler`` resumes mid-epoch by skipping indices. Batch
    lengths are rounded for the model's ``device`` (``classify.pad_tokens_for``)."""
    seed = init_seed(cfg)
    if cfg.modality == "audio":
        augment = WaveformAugment() if cfg.augment else None
        train = AudioTrainClips(splits["train"], rate, round(cfg.clip_seconds * rate), seed, augment)
        val, test = AudioEvalClips(splits["val"], rate), AudioEvalClips(splits["test"], rate)
    else:
        train = RCFlipped(splits["train"], seed, cfg.level == "token") if cfg.rc_augment else splits["train"]
        val, test = splits["val"], splits["test"]
    kwargs = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    pad = pad_tokens_for(device, cfg.impl)
    eval_collate = TaskCollate(task, pad_tokens=pad)
    # The generator only seeds worker processes, which draw nothing: it keeps the global stream (dropout) apart.
    train_loader = DataLoader(train, sampler=EpochSampler(len(train), seed),
                              collate_fn=TaskCollate(task, pad_tokens=pad),
                              generator=torch.Generator().manual_seed(seed), **kwargs)
    return (train_loader, DataLoader(val, collate_fn=eval_collate, **kwargs),
            DataLoader(test, collate_fn=eval_collate, **kwargs))


def rate_warning(cfg: FinetuneConfig, model: SequenceClassifier, rate: int | None) -> str | None:
    """Audio far above the rate the backbone (--init-from) or else the default recipe expects."""
    if cfg.modality != "audio":
        return None
    own = model.lm.config.sample_rate if cfg.init_from else None
    if own:
        return sample_rate_warning(rate, own, f"the {own} Hz of the --init-from backbone")
    if cfg.patch_size is None and frontend_of(cfg) == "logmel":
        return None  # a 10 ms hop at any rate: as many tokens a second at 44.1 kHz as at 8 kHz
    return sample_rate_warning(rate, RECIPE_SAMPLE_RATE, f"the {RECIPE_SAMPLE_RATE} Hz the audio recipe is sized for "
                               f"(--patch-size {model.task.patch_size}, --clip-seconds {cfg.clip_seconds:g})")


def optimizer(cfg: FinetuneConfig, model: SequenceClassifier) -> torch.optim.Optimizer:
    head = torch.nn.ModuleList([model.head] + ([model.patch] if model.patch is not None else []))
    groups = [{**g, "lr": cfg.lr} for g in param_groups(head, cfg.weight_decay)]
    if not cfg.freeze_backbone:
        lr = cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr
        groups += [{**g, "lr": lr} for g in param_groups(model.lm, cfg.weight_decay)]
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.98))
