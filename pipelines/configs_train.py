"""The configs of the training jobs, `seqssm pretrain` and `seqssm finetune`, and the fields they share.

A light module (no job imported) so that ``seqssm.cli`` builds the commands' options from these fields
(``seqssm.options``: a field is the option). ``BackboneOptions`` (the model trained) and ``TrainingOptions``
(the optimiser and the run) are written once and inherited by both configs; a config that needs another
default or help redeclares the field giving only that. A new architecture field (e.g. a mixer choice)
goes in ``BackboneOptions`` and both commands get it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seqssm.config import IMPLS, MIXERS, POOLINGS
from seqssm.datasets.input_spec import InputSpec
from seqssm.errors import InputError
from seqssm.options import (
    Options,
    at_least,
    between_0_and_1,
    device_option,
    one_of,
    one_of_ints,
    option,
    out_option,
    overwrite_option,
    positive,
    positive_int,
    resume_option,
    seed_value,
    zero_or_more,
)


@dataclass(kw_only=True)
class BackboneOptions(Options):
    """The backbone a training job trains: ``init_from`` a checkpoint, else a fresh model of these sizes."""

    init_from: str | None = option(None, path=True, help="Backbone checkpoint; a fresh model when absent.")
    d_model: int = option(check=positive)
    n_layer: int = option(check=positive)
    d_state: int = option(16, check=positive)
    expand: int = option(2, check=positive)
    bidirectional: bool = option(help="Fresh model: bidirectional (Caduceus-style).")
    rc_equivariant: bool = option(False, help="Fresh model: reverse-complement equivariant (DNA).")
    impl: str = option("auto", help="auto, triton, chunked or ref.", check=one_of(*IMPLS))
    # Architecture of a fresh model (MambaConfig's fields, same names and defaults; see its docstring).
    mixer: str = option("mamba", help="Fresh model: the SSM of each 'M' layer: mamba, mamba2 (SSD) or s4d (LTI).",
                        check=one_of(*MIXERS))
    layers: str = option("", help="Fresh model: layer pattern of M (SSM) and A (attention) repeated to "
                         "--n-layer, e.g. MMMA (Jamba-style hybrid).")
    attn_every: int = option(0, help="Fresh model: every k-th layer is attention (0: none; or use --layers).",
                             check=zero_or_more)
    n_heads: int = option(4, help="Fresh model: attention heads.", check=positive)
    attn_max_len: int = option(4096, help="Fresh model: the most positions an attention layer decodes or "
                               "streams (its KV cache).", check=positive)
    moe_every: int = option(0, help="Fresh model: every k-th layer gets a mixture-of-experts MLP (0: none).",
                            check=zero_or_more)
    n_experts: int = option(8, help="Fresh model: experts per MoE layer.", check=positive)
    top_k: int = option(1, help="Fresh model: experts per token (1 or 2).", check=one_of_ints(1, 2))
    capacity_factor: float = option(1.25, help="Fresh model: an expert takes at most this × its even share of a "
                                    "batch's tokens in training (the rest skip the MoE MLP).", check=positive)
    moe_aux_weight: float = option(0.01, help="Fresh model: weight of the MoE load-balancing loss added to the "
                                   "training loss.", check=zero_or_more)

    def architecture(self) -> dict:
        """The MambaConfig fields of the architecture options (for a fresh model)."""
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}


ARCHITECTURE_FIELDS = ("mixer", "layers", "attn_every", "n_heads", "attn_max_len", "moe_every", "n_experts",
                       "top_k", "capacity_factor", "moe_aux_weight")


@dataclass(kw_only=True)
class TrainingOptions(Options):
    """AdamW with warm-up then cosine decay, validation, seeds and the run's outputs."""

    batch_size: int = option(check=positive)
    lr: float = option(2e-3, help="Head learning rate.", check=positive)
    weight_decay: float = option(check=zero_or_more)
    warmup_steps: int = option(50, check=zero_or_more)
    grad_clip: float = option(1.0, help="Gradient-norm clip.", check=positive)
    val_every: int | None = option(check=positive)
    max_minutes: float | None = option(None, check=positive, help="Stop after this much wall time (the learning "
                                       "rate decays by then).")
    seed: int = option(0, check=seed_value)
    device: str = device_option()
    overwrite: bool = overwrite_option()
    resume: bool = resume_option()


@dataclass(kw_only=True)
class PretrainConfig(TrainingOptions, BackboneOptions):
    """Everything `seqssm pretrain` takes; the Python API takes the same object.

    Sequence-length warm-up: with ``length_warmup_steps`` > 0 training starts on pieces of ``min_window``
    tokens and doubles to ``window`` over that many steps, tokens per step constant (batch grows as pieces
    shrink); ``max_tokens_per_micro_batch`` caps one forward/backward (gradient accumulation, and chunked
    exact backward for a single sequence beyond it). See ``seqssm.pipelines.length_schedule``.

    Packing (``pack``, DNA): the rows are records of ``data`` (a FASTA's records, or a SAM/BAM's primary
    reads) packed end to end with ``seq_idx``, ``window`` tokens of input each (+1 for clm), a record longer
    than that cut into pieces; whole records are held out for validation (``val_fraction`` of the bases,
    ``val_windows`` rows at most). See ``seqssm.datasets.packed``; run.json ``packing`` gives the efficiency.
    """

    data: str = option(argument=True, path=True, help="Genome FASTA (plain, gzip or bgzip; --pack: also a BAM of "
                       "reads), audio folder/file, or (--modality bytes) any file or folder of files, read as raw "
                       "bytes.")
    out: str = out_option("Output folder (checkpoint/, train_log.tsv, run.json).")
    objective: str = option("clm", help="clm (causal, next token) or mlm (masked, bidirectional models).",
                            check=one_of("clm", "mlm"))
    modality: str = option("dna", help="dna, audio (8-bit mu-law tokens) or bytes (any file's raw bytes, "
                           "token-free).", check=one_of("dna", "audio", "bytes"))
    bidirectional: bool = option(False, help="Caduceus-style bidirectional backbone (use with mlm).")
    rc_equivariant: bool = option(False, help="Reverse-complement-equivariant bidirectional model (mlm).")
    mask_prob: float = option(0.15, help="mlm: fraction of positions chosen (80/10/10).", check=between_0_and_1)
    sample_rate: int | None = option(None, help="audio: resample recordings to this rate (Hz).", check=positive)
    window: int = option(1024, help="Training window length in tokens (bases or samples).", check=positive)
    batch_size: int = option(16, help="Windows per step.")
    steps: int = option(1000, help="Optimiser steps.", check=positive)
    lr: float = option(2e-3, help="Peak learning rate (AdamW, warm-up then cosine decay).")
    weight_decay: float = option(0.1)
    val_every: int = option(100, help="Validate and checkpoint every N steps.")
    val_windows: int = option(64, help="Validation windows (from the last --val-fraction of each contig).",
                              check=positive)
    val_fraction: float = option(0.1, check=between_0_and_1)
    max_minutes: float | None = option(None, help="Stop (and checkpoint) after this much wall time.")
    length_warmup_steps: int = option(0, help="Grow the length from --min-window to --window over N steps.",
                                      check=zero_or_more)
    min_window: int = option(1024, help="First length of the warm-up (tokens per step stay constant).",
                             check=positive)
    max_tokens_per_micro_batch: int | None = option(
        None, help="Cap one forward/backward: gradient accumulation, chunked backward beyond it.", check=positive)
    pack: bool = option(False, help="DNA: pack whole records (FASTA records, or the reads of a BAM; longer ones cut "
                        "at --window) end to end into rows, each run alone: padding only at row ends, no context "
                        "across records.")
    init_from: str | None = option(None, help="Continue from this checkpoint folder.")
    d_model: int = option(128)
    n_layer: int = option(4)
    impl: str = option("auto", help="Scan path: auto, triton, chunked or ref.")

    def __post_init__(self):
        super().__post_init__()
        if self.objective == "mlm" and not (self.bidirectional or self.rc_equivariant):
            raise InputError("--objective mlm needs a bidirectional model: add --bidirectional")
        if self.objective == "clm" and (self.bidirectional or self.rc_equivariant):
            raise InputError("a bidirectional model sees the future: train it with --objective mlm")
        if self.modality == "audio" and (self.objective != "clm" or self.rc_equivariant):
            raise InputError("audio models are causal LMs: use --objective clm without --rc-equivariant")
        if self.modality == "bytes" and self.rc_equivariant:
            raise InputError("--rc-equivariant is for DNA (reverse complement of bases); bytes have no complement: "
                             "drop it with --modality bytes (or use --bidirectional --objective mlm)")
        if self.pack:
            if self.modality != "dna":
                raise InputError(f"--pack packs DNA records (FASTA records or BAM reads); drop it with --modality "
                                 f"{self.modality}")
            if self.length_warmup_steps or self.max_tokens_per_micro_batch is not None:
                raise InputError("--pack rows hold several sequences, which --length-warmup-steps and "
                                 "--max-tokens-per-micro-batch would cut across: drop those or --pack")
            if self.moe_every:
                raise InputError("--pack with --moe-every: the packed forward pads each sequence to the batch's "
                                 "longest and the experts' router would count that padding; drop one of them")


def parse_split(text: str) -> tuple[float, ...]:
    """``--split 0.8,0.1,0.1`` -> (0.8, 0.1, 0.1)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--split {text!r}: give three comma-separated fractions, e.g. 0.8,0.1,0.1") from None


def split_option():
    """The one --split field: finetune's and baseline's, so the same text gives one split."""
    return option((0.8, 0.1, 0.1), cli_type=str, parse=parse_split,
                  show=lambda fractions: ",".join(f"{f:g}" for f in fractions),
                  help="train,val,test fractions (seeded; FSDD keeps takes 0-4 as test).")


def checked_split(split: Sequence[float]) -> tuple[float, ...]:
    """``split`` as three floats, or an InputError: train, val, test fractions summing to 1, train and val > 0."""
    split = tuple(float(f) for f in split)
    if len(split) != 3 or any(f < 0 for f in split) or abs(sum(split) - 1) > 1e-6 or split[0] <= 0 \
            or split[1] <= 0:
        raise InputError(f"--split must be three fractions train,val,test summing to 1 (train and val > 0), "
                         f"got {split}")
    return split


def parse_self_pretrain_steps(text: str) -> int | str:
    """``--self-pretrain-steps`` text: "auto" or a whole number of steps (0: off)."""
    text = text.strip().lower()
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--self-pretrain-steps must be auto or a whole number of steps (0: off), got "
                         f"{text!r}") from None


def check_self_pretrain_steps(flag: str, value) -> None:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InputError(f"{flag} must be auto or a whole number of steps >= 0 (0: off), got {value!r}")


def parse_class_weights(text: str) -> str | None:
    """``--class-weights`` text: auto, balanced, none (None) or the numbers as given (checked per task)."""
    text = text.strip()
    return None if text.lower() == "none" else text.lower() if text.lower() in ("auto", "balanced") else text


def _ema(flag: str, value: float | None) -> None:
    if value is not None:
        from seqssm.pipelines.ema import check_decay

        check_decay(value)


def _dropout(flag: str, value: float) -> None:
    if not 0 <= value < 1:
        raise InputError(f"{flag} must be in [0, 1), got {value:g}")


@dataclass(kw_only=True)
class FinetuneConfig(TrainingOptions, BackboneOptions, InputSpec):
    """Everything `seqssm finetune` takes; the Python API takes the same object.

    Data: the fields of :class:`~seqssm.datasets.input_spec.InputSpec` (``sample_rate``: default the first
    file's); ``split`` the train / val / test fractions.
    Task: ``problem_type`` "auto" is multi-label when a label cell holds ";"-joined labels; ``level``
    "token" takes one label character per base. ``pooling``, ``dropout``: see ``TaskConfig``.
    Backbone: ``init_from`` a checkpoint, else a fresh one of ``d_model``, ``n_layer``, ``d_state``,
    ``expand`` (``bidirectional``, ``rc_equivariant``). Audio: ``frontend`` "logmel" (log-mel frames; "auto")
    or "raw" (waveform frames), ``patch_size`` samples per token (None: 16 raw, a 10 ms hop logmel), training
    clips randomly cropped to ``clip_seconds`` (evaluation uses whole clips). DNA: ``patch_size`` bases per token
    (None: ``finetune_setup.dna_patch_of`` chooses by the input lengths).
    Training: AdamW at ``lr`` for the head (and the audio patch projection) and ``backbone_lr`` (default ``lr``) for
    the backbone, unless ``freeze_backbone``; warm-up then cosine decay; ``class_weights`` "auto" (balanced on an
    imbalanced single-label task, ``finetune_setup.AUTO_IMBALANCE``), None, "balanced" or one weight per class
    ("1,3.5", in class order); ``rc_augment`` flips DNA strands at random; early stopping on ``metric`` ("auto":
    macro_f1 for multi-label and imbalanced tasks, else accuracy) with ``patience`` validations; ``max_minutes``
    stops training after that much wall time, and the cosine decay follows the clock when it is further along than
    the steps (``train_utils.cosine_schedule``), so a run cut short still ends at the floor learning rate.
    ``augment`` (audio): every training clip is a random variant from ``seqssm.transforms.augment_waveform`` (speed,
    shift, time masks, noise), drawn from (seed, epoch, index). ``ema``: validate, keep and test an exponential
    moving average of the weights with this decay (``seqssm.pipelines.ema.WeightEMA``) instead of the raw weights.
    Seeds: ``seed`` fixes the split; ``init_seed`` (None: ``seed``) the initialisation, data order, RC
    flips, audio crops and augmentation, and dropout, so runs that differ only in ``init_seed`` train on the
    same split, e.g. the members of a checkpoint ensemble (``seqssm predict A B C data``). ``run.json``
    records the resolved ``init_seed``.
    """

    out: str = out_option("Output folder (checkpoint/, train_log.tsv, run.json, test_predictions.tsv).")
    fsdd_split: str = option("all", cli=False)  # finetune splits FSDD itself (takes 0-4 are the test split)
    split: Sequence[float] = split_option()
    problem_type: str = option("auto", help="auto, single_label or multi_label (';'-joined labels).",
                               check=one_of("auto", "single_label", "multi_label"))
    level: str = option("sequence", help="sequence, or token (one label character per base).",
                        check=one_of("sequence", "token"))
    pooling: str = option("auto", help="auto (flatten for DNA inputs of one length up to 512, else mean), mean "
                          "(RC-invariant for RC models), cls, last, or flatten (all positions; inputs of one "
                          "length).", check=one_of("auto", *POOLINGS))
    dropout: float = option(0.1, check=_dropout)
    d_model: int = option(64)
    n_layer: int = option(2)
    bidirectional: bool = option(True)
    patch_size: int | None = option(None, help="audio: samples per token (default: 16 raw, a 10 ms hop logmel); "
                                    "DNA: bases per token (default: 8 for inputs over 512 bases, else 1).",
                                    check=positive_int)
    frontend: str = option("auto", help="audio: logmel (log-mel spectrogram frames every --patch-size samples; "
                           "auto) or raw (a linear map of each frame of --patch-size samples).",
                           check=one_of("auto", "raw", "logmel"))
    clip_seconds: float = option(2.0, help="audio: random training crops of at most this length.", check=positive)
    freeze_backbone: bool = option(False, help="Train the head only.")
    backbone_lr: float | None = option(None, help="Backbone learning rate (default: --lr).", check=positive)
    weight_decay: float = option(0.01)
    epochs: int = option(10, check=positive)
    batch_size: int = option(32)
    val_every: int | None = option(None, help="Validate every N steps (default: every epoch).")
    metric: str = option("auto", help="Early-stopping metric: auto (macro_f1 for multi-label and imbalanced "
                         "tasks, else accuracy), accuracy, balanced_accuracy, macro_f1, micro_f1, mcc, auroc or "
                         "loss.")
    patience: int | None = option(None, help="Stop after N validations without improvement.", check=positive)
    class_weights: str | Sequence[float] | None = option(
        "auto", cli_type=str, parse=parse_class_weights, show=lambda v: "none" if v is None else str(v),
        help="auto (balanced when the largest class has 3x the rows of the smallest), balanced, none, or one "
        "weight per class, e.g. 1,3.")
    rc_augment: bool = option(False, help="DNA: reverse-complement training inputs at random.")
    augment: bool = option(False, help="audio: random speed (±10%), shift, time masks and noise on training "
                           "clips.")
    ema: float | None = option(None, help="Validate, keep and test a moving average of the weights with this "
                               "decay (e.g. 0.999).", check=_ema)
    num_workers: int = option(0, help="DataLoader worker processes.", check=zero_or_more)
    seed: int = option(0, help="Fixes the split (and, without --init-seed, everything else random).")
    init_seed: int | None = option(None, help="Initialisation, data order, augmentation and dropout (default: "
                                   "--seed); vary it alone to train ensemble members on one split.",
                                   check=seed_value)
    baseline: bool = option(False, flags=("--baseline",), help=(
        "Also fit `seqssm baseline` on this split and print both test scores side by side (run.json, "
        "baseline_predictions.tsv)."))
    self_pretrain_steps: int | str = option(
        "auto", cli_type=str, parse=parse_self_pretrain_steps, show=str, check=check_self_pretrain_steps, help=(
            "First pretrain the backbone on the training rows alone for N steps (masked LM for bidirectional "
            "DNA backbones, next token for causal ones; 0: off; auto: chosen by the data, see run.json)."))
    folds: int | None = option(None, help="Cross-validate in K stratified folds of the train and val rows: one "
                               "run per fold, pooled out-of-fold predictions (oof_predictions.tsv).",
                               check=at_least(2))

    def __post_init__(self):
        super().__post_init__()
        if self.modality is None:
            raise InputError("--modality must be dna or audio")
        if self.level == "token" and self.modality != "dna":
            raise InputError("--level token needs DNA (one label character per base); audio is sequence-level")
        if self.metric != "auto":
            from seqssm.pipelines.metrics import METRICS

            if self.metric not in METRICS:
                raise InputError(f"--metric must be auto or one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.rc_augment and self.modality != "dna":
            raise InputError("--rc-augment flips DNA strands; drop it for audio")
        if self.frontend == "logmel" and self.modality != "audio":
            raise InputError(f"--frontend {self.frontend} reads waveforms (audio); drop it for DNA")
        if self.augment and self.modality != "audio":
            raise InputError("--augment perturbs waveforms (audio); for DNA use --rc-augment")
        self.split = checked_split(self.split)
        if self.folds is not None and (self.resume or self.level != "sequence"):
            raise InputError("--folds cross-validates sequence-level tasks from scratch; drop --resume or "
                             "--level token")
