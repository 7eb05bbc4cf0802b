"""The pieces of `seqssm finetune` around its training loop: the data and its split, the task, the backbone,
the data loaders, the optimiser and the sample-rate warning (``seqssm.pipelines.finetune`` runs them)."""

from __future__ import annotations

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
from seqssm.pipelines.classify import TaskCollate
from seqssm.pipelines.common import load_checked
from seqssm.pipelines.configs_train import FinetuneConfig
from seqssm.pipelines.train_utils import RECIPE_SAMPLE_RATE, EpochSampler, param_groups, sample_rate_warning
from seqssm.transforms import WaveformAugment


def load_data(cfg: FinetuneConfig):
    """(labels of every item, {split: items}, sample rate): Examples for DNA, AudioRecords for audio; the split
    `seqssm baseline` takes too (``seqssm.datasets.splits``)."""
    return labelled_splits(InputSpec.of(cfg), cfg.split, cfg.seed, cfg.level)


def init_seed(cfg: FinetuneConfig) -> int:
    """The seed of everything random in training but the split."""
    return cfg.seed if cfg.init_seed is None else cfg.init_seed


def fixed_length(cfg: FinetuneConfig, splits: dict) -> int | None:
    """The one length of every DNA input, which flatten pooling needs."""
    if cfg.pooling != "flatten" or cfg.level != "sequence":
        return None
    if cfg.modality != "dna":
        raise InputError("--pooling flatten needs DNA inputs of one length; use mean or last for audio")
    lengths = {len(item.data) for items in splits.values() for item in items}
    if len(lengths) != 1:
        raise InputError(f"--pooling flatten needs inputs of one length, {cfg.data} has lengths "
                         f"{min(lengths)} to {max(lengths)}; use --pooling mean (or --length for BED)")
    return lengths.pop()


def task(cfg: FinetuneConfig, labels: list[str], rate: int | None, length: int | None = None) -> TaskConfig:
    multi = cfg.problem_type == "multi_label" or (
        cfg.problem_type == "auto" and cfg.level == "sequence" and any(";" in label for label in labels))
    if cfg.level == "token":
        classes = {c for label in labels for c in label}
    elif multi:
        classes = {part for label in labels for part in split_label(label)}
    else:
        classes = set(labels)
    return TaskConfig(classes=sorted(classes, key=natural_key), problem_type="multi_label" if multi else
                      "single_label", level=cfg.level, pooling=cfg.pooling, modality=cfg.modality,
                      patch_size=cfg.patch_size if cfg.modality == "audio" else None, sample_rate=rate,
                      dropout=cfg.dropout, length=length, **frontend(cfg))


def frontend(cfg: FinetuneConfig) -> dict:
    """The audio front end's TaskConfig fields (``seqssm.models.frontends``)."""
    if cfg.modality != "audio" or cfg.frontend == "raw":
        return {}
    return {"frontend": cfg.frontend, "n_mels": LOGMEL_BANDS}


def backbone(cfg: FinetuneConfig, rate: int | None) -> MambaLMHeadModel:
    if cfg.init_from:
        return load_checked(cfg.init_from, impl=cfg.impl)
    extra = {"tokenizer": "mulaw8", "vocab_size": 256, "sample_rate": rate} if cfg.modality == "audio" else {
        "tokenizer": "nucleotide", "vocab_size": 10}
    config = MambaConfig(d_model=cfg.d_model, n_layer=cfg.n_layer, d_state=cfg.d_state, expand=cfg.expand,
                         bidirectional=cfg.bidirectional or cfg.rc_equivariant, rc_equivariant=cfg.rc_equivariant,
                         **extra, **cfg.architecture())
    return MambaLMHeadModel(config, impl=cfg.impl)


def loaders(cfg: FinetuneConfig, task: TaskConfig, splits: dict, rate: int | None):
    """(train, val, test) DataLoaders. Training order, RC flips, crops and augmentation are pure functions of
    (init seed, epoch, index): the train loader's ``EpochSampler`` resumes mid-epoch by skipping indices."""
    seed = init_seed(cfg)
    if cfg.modality == "audio":
        augment = WaveformAugment() if cfg.augment else None
        train = AudioTrainClips(splits["train"], rate, round(cfg.clip_seconds * rate), seed, augment)
        val, test = AudioEvalClips(splits["val"], rate), AudioEvalClips(splits["test"], rate)
    else:
        train = RCFlipped(splits["train"], seed, cfg.level == "token") if cfg.rc_augment else splits["train"]
        val, test = splits["val"], splits["test"]
    kwargs = {"batch_size": cfg.batch_size, "num_workers": cfg.num_workers}
    eval_collate = TaskCollate(task)
    # The generator only seeds worker processes, which draw nothing: it keeps the global stream (dropout) apart.
    train_loader = DataLoader(train, sampler=EpochSampler(len(train), seed), collate_fn=TaskCollate(task),
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
    return sample_rate_warning(rate, RECIPE_SAMPLE_RATE, f"the {RECIPE_SAMPLE_RATE} Hz the audio recipe is sized for "
                               f"(--patch-size {cfg.patch_size}, --clip-seconds {cfg.clip_seconds:g})")


def optimizer(cfg: FinetuneConfig, model: SequenceClassifier) -> torch.optim.Optimizer:
    head = torch.nn.ModuleList([model.head] + ([model.patch] if model.patch is not None else []))
    groups = [{**g, "lr": cfg.lr} for g in param_groups(head, cfg.weight_decay)]
    if not cfg.freeze_backbone:
        lr = cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr
        groups += [{**g, "lr": lr} for g in param_groups(model.lm, cfg.weight_decay)]
    return torch.optim.AdamW([g for g in groups if g["params"]], betas=(0.9, 0.98))
