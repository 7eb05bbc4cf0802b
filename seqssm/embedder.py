"""Python API for embeddings: :class:`Embedder` (load a checkpoint, embed anything) and :class:`SeqEmbedder`
(the same as a scikit-learn transformer, for pipelines such as ``make_pipeline(SeqEmbedder(ckpt),
LogisticRegression())``).

The checkpoint is a backbone (``seqssm pretrain``) or a fine-tuned classifier (``seqssm finetune``; its
backbone, and for audio its waveform patch projection, are used; the head is not). DNA is tokenised with
the nucleotide tokenizer; audio goes through the classifier's patch projection, or, for an audio language
model, its μ-law tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from seqssm.datasets.batching import pad_batch
from seqssm.device import resolve_device
from seqssm.errors import InputError
from seqssm.models.heads import TASK_NAME, encode_dna, load_classifier, pool_hidden
from seqssm.models.loading import load_model
from seqssm.tokenizers import get_tokenizer

_AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Embedder:
    """Embeddings from a checkpoint's backbone, batched, pooled [N, F] or per position ([L_i, D] each).

    Args:
        checkpoint: a backbone or classifier checkpoint folder.
        pooling: "mean" over real positions (RC-invariant, F = D / 2, for RC-equivariant models), "last",
            "cls" (DNA with a bidirectional model: a cls token is prepended), or "flatten" (every position's
            vector in order, F = L * D, for inputs that all have one length L, as short fixed-length DNA
            tasks do). None: a classifier's own pooling (but "mean" for its "flatten"), else "mean".
        batch_size: inputs per forward pass.
        device: "auto", "cpu", "cuda"...
        impl: kernel path ("auto", "triton", "chunked", "ref").

    ``modality`` ("dna", "audio", or "bytes" for a byte-level model) and ``dim`` (F; D per position for
    "flatten") are set from the checkpoint.
    """

    def __init__(self, checkpoint: str | os.PathLike, *, pooling: str | None = None, batch_size: int = 32,
                 device: str = "auto", impl: str = "auto"):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"Embedder: batch_size must be a positive integer, got {batch_size!r}")
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.checkpoint = Path(checkpoint)
        self.patch = None
        if (self.checkpoint / TASK_NAME).is_file():
            classifier = load_classifier(self.checkpoint, self.device, impl=impl)
            self.lm, self.patch, self.modality = classifier.lm, classifier.patch, classifier.task.modality
            self.sample_rate = classifier.task.sample_rate
            pooling = pooling or (classifier.task.pooling if classifier.task.pooling != "flatten" else "mean")
        else:
            self.lm = load_model(self.checkpoint, self.device, impl=impl)
            self.modality = {"nucleotide": "dna", "byte": "bytes"}.get(self.lm.config.tokenizer, "audio")
            self.sample_rate = self.lm.config.sample_rate
        self.lm.eval()
        self.pooling = pooling or "mean"
        if self.pooling not in ("mean", "last", "cls", "flatten"):
            raise InputError(f"Embedder: pooling must be mean, last, cls or flatten, got {self.pooling!r}")
        if self.pooling == "cls" and (self.modality != "dna" or not self.lm.config.bidirectional):
            raise InputError("Embedder: cls pooling needs a bidirectional DNA model; use 'mean' or 'last'")
        rc = self.lm.config.rc_equivariant
        if rc and self.pooling != "mean":
            raise InputError("Embedder: an RC-equivariant model pools RC-invariantly with 'mean' only")
        self.tokenizer = get_tokenizer(self.lm.config.tokenizer)
        self.dim = self.lm.config.d_model // 2 if rc else self.lm.config.d_model

    def __repr__(self) -> str:
        return (f"Embedder({str(self.checkpoint)!r}, modality={self.modality!r}, pooling={self.pooling!r}, "
                f"dim={self.dim})")

    def _require(self, modality: str) -> None:
        if self.modality != modality:
            raise InputError(f"mismatched modality: {self.checkpoint} is a {self.modality} model, given "
                             f"{modality} input")

    @torch.no_grad()
    def _outputs(self, hidden: torch.Tensor, mask: torch.Tensor, per_position: bool, skip: int = 0) -> list:
        if per_position:
            return [h[skip:int(n)].float().cpu().numpy() for h, n in zip(hidden, mask.sum(1), strict=True)]
        pooled = pool_hidden(hidden, mask, self.pooling, rc_equivariant=self.lm.config.rc_equivariant)
        return list(pooled.float().cpu().numpy())

    def _stack(self, rows: list, per_position: bool):
        if per_position:
            return rows
        if self.pooling == "flatten" and len({row.shape[0] for row in rows}) > 1:
            # Each batch was checked for padding; inputs of another length in another batch land here.
            lengths = sorted({row.shape[0] // self.dim for row in rows})
            raise InputError(f"flatten pooling needs inputs of one length, got lengths {lengths[0]} to "
                             f"{lengths[-1]}; use pooling 'mean' (or cut the inputs to one length)")
        return np.stack(rows).astype(np.float32, copy=False)

    @torch.no_grad()
    def embed_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                     per_position: bool = False):
        """Token ids [B, L] (or [L]; right-padded with ``attention_mask`` [B, L]) → [B, F] or B arrays [L_b, D]."""
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() not in (1, 2):
            raise InputError("embed_tokens: input_ids must be a [B, L] or [L] tensor of token ids")
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
            attention_mask = attention_mask[None] if attention_mask is not None else None
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
        rows: list = []
        for start in range(0, input_ids.shape[0], self.batch_size):
            ids = input_ids[start:start + self.batch_size].to(self.device)
            mask = attention_mask[start:start + self.batch_size].to(self.device)
            rows += self._outputs(*self._dna_hidden(ids, mask, per_position), per_position)
        return self._stack(rows, per_position)

    def _dna_hidden(self, ids: torch.Tensor, mask: torch.Tensor, per_position: bool):
        """(hidden [B, L, D], token mask [B, L]) of DNA ids [B, N]: through a classifier's patch front end when it
        reads DNA in patches (L = ceil(N / P)), else base by base (L = N)."""
        if self.patch is None:
            return self.lm.backbone(ids, mask), mask
        if per_position:
            raise InputError(f"{self.checkpoint} reads DNA in patches of {self.patch.patch_size} bases, so it has "
                             "no per-base vectors; embed pooled, or use a model fine-tuned with --patch-size 1")
        embeds, mask = self.patch(ids, mask)
        return self.lm.backbone(None, mask, inputs_embeds=embeds), mask

    @torch.no_grad()
    def embed_bytes(self, items: Sequence[bytes | str], *, per_position: bool = False):
        """Byte-level model: bytes objects (or text, UTF-8 encoded) → [N, F], or N arrays [L_i, D] (one row per
        byte). A file's bytes: ``embed(path)``, or ``seqssm.datasets.byte_windows.read_bytes(path)``."""
        self._require("bytes")
        if isinstance(items, (str, bytes, bytearray, memoryview)):
            raise InputError("embed_bytes: pass a list of byte strings or texts (for one, [item])")
        rows: list = []
        for chunk in _chunks(list(items), self.batch_size):
            ids, mask = pad_batch(encode_dna(chunk, self.tokenizer), self.tokenizer.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            rows += self._outputs(self.lm.backbone(ids, mask), mask, per_position)
        if not rows:
            raise InputError("embed_bytes: nothing given")
        return self._stack(rows, per_position)

    @torch.no_grad()
    def embed_sequences(self, sequences: Sequence[str], *, per_position: bool = False):
        """DNA strings → [N, F], or N arrays [L_i, D] (one row per base). A byte-level model embeds any text
        (:meth:`embed_bytes`)."""
        if self.modality == "bytes" and not isinstance(sequences, str):
            return self.embed_bytes(sequences, per_position=per_position)
        self._require("dna")
        if isinstance(sequences, str):
            raise InputError("embed_sequences: pass a list of sequences (for one, [seq])")
        cls = self.pooling == "cls"
        rows: list = []
        for chunk in _chunks(list(sequences), self.batch_size):
            ids, mask = pad_batch(encode_dna(chunk, self.tokenizer, add_cls=cls), self.tokenizer.pad_id)
            ids, mask = ids.to(self.device), mask.to(self.device)
            rows += self._outputs(*self._dna_hidden(ids, mask, per_position), per_position, skip=int(cls))
        if not rows:
            raise InputError("embed_sequences: no sequences given")
        return self._stack(rows, per_position)

    def embed_fasta(self, path: str | os.PathLike, *, per_position: bool = False) -> tuple[list[str], object]:
        """(record names, embeddings) of every record of a FASTA file, streamed batch by batch."""
        from seqssm.datasets.fasta import iter_fasta

        names, rows = [], []
        records = iter_fasta(path)
        while batch := [r for _, r in zip(range(self.batch_size), records, strict=False)]:
            names += [name for name, _ in batch]
            out = self.embed_sequences([seq for _, seq in batch], per_position=per_position)
            rows += list(out)
        if not rows:
            raise InputError(f"{path}: the FASTA file holds no records")
        return names, self._stack(rows, per_position)

    def _load_waves(self, waves, sample_rate: int | None) -> list[torch.Tensor]:
        from seqssm.datasets.audio import load_audio

        rate = self.sample_rate
        out = []
        for w in waves:
            if isinstance(w, (str, os.PathLike)):
                out.append(load_audio(w, rate)[0][0])
                continue
            w = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w)
            if not w.dtype.is_floating_point or w.dim() != 1:
                raise InputError(f"embed_audio: each waveform must be a 1-D float array, got {w.dtype} "
                                 f"{tuple(w.shape)}")
            if sample_rate is not None and rate is not None and sample_rate != rate:
                import torchaudio.functional as AF

                w = AF.resample(w.float(), sample_rate, rate)
            out.append(w.float().clamp(-1, 1))
        return out

    @torch.no_grad()
    def embed_audio(self, waves, *, sample_rate: int | None = None, per_position: bool = False):
        """Waveforms (1-D float arrays at ``sample_rate``, resampled to the model's) or audio file paths →
        [N, F], or N arrays [L_i, D] (one row per token: per patch of samples, or per sample)."""
        self._require("audio")
        if isinstance(waves, (str, os.PathLike)) or (isinstance(waves, (np.ndarray, torch.Tensor))
                                                     and waves.ndim == 1):
            waves = [waves]
        rows: list = []
        for chunk in _chunks(list(waves), self.batch_size):
            loaded = self._load_waves(chunk, sample_rate)
            lengths = torch.tensor([len(w) for w in loaded])
            wave = torch.nn.utils.rnn.pad_sequence(loaded, batch_first=True).to(self.device)
            mask = (torch.arange(wave.shape[1]) < lengths[:, None]).to(self.device)
            if self.patch is not None:
                embeds, mask = self.patch(wave, mask)
                hidden = self.lm.backbone(None, mask, inputs_embeds=embeds)
            else:
                ids = torch.where(mask, self.tokenizer.encode(wave), self.tokenizer.pad_id)
                hidden = self.lm.backbone(ids, mask)
            rows += self._outputs(hidden, mask, per_position)
        if not rows:
            raise InputError("embed_audio: no waveforms given")
        return self._stack(rows, per_position)

    def embed(self, inputs, *, per_position: bool = False, attention_mask: torch.Tensor | None = None,
              sample_rate: int | None = None):
        """Embed whatever ``inputs`` is: a DNA string or list of them (byte-level models: text or bytes, or a
        file path read as raw bytes), token ids [L] / [B, L] (an integer
        tensor), a FASTA path (returns only the embeddings; use :meth:`embed_fasta` for the names), audio
        file paths, or float waveforms ([T] arrays, a list of them, or [B, T] without padding).

        Returns [N, F] pooled (N = 1 for a single input), or a list of [L_i, D] arrays with ``per_position``.
        """
        if isinstance(inputs, torch.Tensor) and not inputs.dtype.is_floating_point:
            return self.embed_tokens(inputs, attention_mask, per_position=per_position)
        if isinstance(inputs, (np.ndarray, torch.Tensor)):
            if inputs.ndim == 2:
                inputs = list(inputs)
            return self.embed_audio(inputs, sample_rate=sample_rate, per_position=per_position)
        if isinstance(inputs, (bytes, bytearray, memoryview)):
            return self.embed_bytes([inputs], per_position=per_position)
        if isinstance(inputs, (str, os.PathLike)):
            path = Path(inputs)
            if isinstance(inputs, os.PathLike) or (len(str(inputs)) < 4096 and path.is_file()):
                if self.modality == "bytes":  # any file: its raw bytes, one input
                    from seqssm.datasets.byte_windows import read_bytes

                    return self.embed_bytes([read_bytes(path).tobytes()], per_position=per_position)
                if path.suffix.lower() in _AUDIO_SUFFIXES:
                    return self.embed_audio([path], per_position=per_position)
                return self.embed_fasta(path, per_position=per_position)[1]
            return self.embed_sequences([inputs], per_position=per_position)
        inputs = list(inputs)
        if inputs and all(isinstance(x, str) for x in inputs) and self.modality == "dna":
            return self.embed_sequences(inputs, per_position=per_position)
        if self.modality == "bytes":
            return self.embed_bytes(inputs, per_position=per_position)
        return self.embed_audio(inputs, sample_rate=sample_rate, per_position=per_position)


def _as_strings(X) -> list[str]:
    """X as a list of N DNA strings: a list / 1-D array of strings, or a 2-D array of one column."""
    if isinstance(X, str):
        raise InputError("SeqEmbedder: X must be a list of sequences, not one string; wrap it: [seq]")
    array = np.asarray(X, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InputError(f"SeqEmbedder: X must be N sequences (a list or one column), got shape {array.shape}")
    bad = next((i for i, x in enumerate(array) if not isinstance(x, str)), None)
    if bad is not None:
        raise InputError(f"SeqEmbedder: X[{bad}] is {type(array[bad]).__name__}, not a DNA string")
    return list(array)


class SeqEmbedder(TransformerMixin, BaseEstimator):
    """scikit-learn transformer: DNA strings → frozen embeddings [N, F] of a checkpoint's backbone.

    ``fit`` only loads the checkpoint (nothing is learned, so ``y`` is ignored); ``transform`` embeds.
    Clonable and picklable: ``__init__`` stores its arguments and nothing else, and the loaded model is not
    pickled but reloaded from ``checkpoint`` when needed.
    """

    def __init__(self, checkpoint: str | None = None, pooling: str = "mean", batch_size: int = 32,
                 device: str = "cpu"):
        self.checkpoint = checkpoint
        self.pooling = pooling
        self.batch_size = batch_size
        self.device = device

    def _embedder(self) -> Embedder:
        cached = self.__dict__.get("_cached_embedder")
        if cached is None:
            if self.checkpoint is None:
                raise InputError("SeqEmbedder: checkpoint is None; pass the checkpoint folder to embed with")
            cached = Embedder(self.checkpoint, pooling=self.pooling, batch_size=self.batch_size,
                              device=self.device)
            cached._require("dna")
            self.__dict__["_cached_embedder"] = cached
        return cached

    def fit(self, X, y=None):
        """Load the checkpoint; X is checked but nothing is learned."""
        self.__dict__.pop("_cached_embedder", None)
        strings = _as_strings(X)
        embedder = self._embedder()
        self.n_features_out_ = embedder.dim
        if embedder.pooling == "flatten":  # F = L * D: L from the inputs, which must share it
            lengths = sorted({len(x) for x in strings})
            if len(lengths) != 1:
                raise InputError(f"SeqEmbedder: flatten pooling needs inputs of one length, got lengths "
                                 f"{lengths[0]} to {lengths[-1]}; use pooling 'mean'")
            self.n_features_out_ = lengths[0] * embedder.dim
        return self

    def transform(self, X) -> np.ndarray:
        """N DNA strings → float32 [N, F]."""
        check_is_fitted(self, "n_features_out_")
        return self._embedder().embed_sequences(_as_strings(X))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self, "n_features_out_")
        return np.asarray([f"embedding{i}" for i in range(self.n_features_out_)], dtype=object)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_cached_embedder", None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = True
        return tags


__all__ = ["Embedder", "SeqEmbedder"]
