"""Audio language modelling: sampling WAVs from a causal audio checkpoint. The training windows are
``seqssm.datasets.audio_windows`` (re-exported here for older imports).

Sampling (:func:`generate_audio`). The prompt is consumed in one parallel pass, then each sample is one
recurrent step, so memory per generated sample is constant. The loop is :class:`seqssm.pipelines.decoding.Decoder`
(shared with DNA): on CUDA its steps are replayed from a CUDA graph (a decode step is dozens of tiny kernels,
so launch overhead would dominate); the eager loop is the reference beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from seqssm.datasets.audio import audio_info, decoded_frames, load_audio
from seqssm.datasets.audio_windows import (
    PRELOAD_SAMPLES,
    SILENCE_GAP_SECONDS,
    AudioPiece,
    AudioStreamWindows,
    audio_lm_datasets,
)
from seqssm.errors import InputError
from seqssm.pipelines.common import (
    FILE,
    LM,
    OutputPlan,
    atomic_path,
    check_checkpoint,
    load_checked,
    require_file,
    require_finite,
    resolve_device,
    seed_everything,
)
from seqssm.pipelines.configs_sequence import GenerateAudioConfig
from seqssm.pipelines.decoding import Decoder
from seqssm.transforms import AudioTokenizer

__all__ = [
    "PRELOAD_SAMPLES",
    "SILENCE_GAP_SECONDS",
    "AudioPiece",
    "AudioStreamWindows",
    "GenerateAudioConfig",
    "audio_lm_datasets",
    "generate_audio",
]



def _audio_tokenizer(model, checkpoint: str) -> AudioTokenizer:
    config = model.config
    if config.sample_rate is None or not config.tokenizer.startswith(("mulaw", "linear")):
        raise InputError(f"checkpoint {checkpoint!r} is not an audio model (tokenizer {config.tokenizer!r}, "
                         f"sample rate {config.sample_rate}); train one with `seqssm pretrain --modality audio`")
    if config.bidirectional:
        raise InputError(f"checkpoint {checkpoint!r} is a bidirectional model; generation needs a causal one")
    tokenizer = AudioTokenizer.from_name(config.tokenizer)
    if tokenizer.vocab_size != config.vocab_size:
        raise InputError(f"checkpoint {checkpoint!r}: tokenizer {config.tokenizer} has {tokenizer.vocab_size} "
                         f"ids but the model {config.vocab_size}; the config.json is inconsistent")
    return tokenizer


def _prompt_ids(cfg: GenerateAudioConfig, sample_rate: int, tokenizer: AudioTokenizer) -> torch.Tensor:
    """The prompt (its last ``prompt_seconds``) at the model's rate as ids [T]."""
    path = require_file(cfg.prompt_audio, "prompt audio")
    if cfg.prompt_seconds is not None:
        info = audio_info(path)
        frames = decoded_frames(path) if info.format == "MP3" else info.frames
        offset = max(frames - round(cfg.prompt_seconds * info.sample_rate), 0)
        wave, _ = load_audio(path, sample_rate, "mix", offset, frames - offset)
    else:
        wave, _ = load_audio(path, sample_rate, "mix")
    return tokenizer.encode(wave[0])


def _out_paths(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    width = len(str(count))
    return [out.with_name(f"{out.stem}_{i + 1:0{width}d}{out.suffix}") for i in range(count)]


def generate_audio_outputs(cfg: GenerateAudioConfig) -> OutputPlan:
    """The WAVs and the scores table ``generate_audio`` writes, and the inputs it must never replace."""
    out = Path(cfg.out)
    files = [*_out_paths(out, cfg.num_clips), out.with_suffix(".scores.tsv")]
    return OutputPlan([(p, FILE) for p in files], inputs=[("checkpoint", cfg.checkpoint),
                                                          ("prompt audio", cfg.prompt_audio)], overwrite=cfg.overwrite)


@torch.no_grad()
def generate_audio(cfg: GenerateAudioConfig, echo: Callable[[str], None] = print) -> list[Path]:
    """Sample ``num_clips`` clips of ``seconds`` from an audio checkpoint; write WAVs and their scores.

    Clips are 16-bit PCM WAVs at the model's ``config.sample_rate``: ``out`` itself for one clip, else
    ``{stem}_1.wav``, ``{stem}_2.wav``, … (numbers zero-padded to one width). With ``prompt_audio`` the
    recording (its last ``prompt_seconds``; resampled to the model's rate, μ-law encoded) is run through the
    model in one parallel pass and each clip is the prompt followed by its continuation, so the seam can be
    heard; without one, sampling starts from the model's zero state after one silence sample (not written).
    Each generated sample is one recurrent step (constant memory), drawn with ``temperature``, ``top_k`` and
    ``top_p``.

    The score of a clip is the mean log2-probability of its generated samples under the model itself
    (temperature 1, no filtering), in bits per sample: higher is more likely. Scores go to
    ``{out stem}.scores.tsv`` (file, prompt_seconds, seconds, mean_log2_prob) and, one line per clip,
    to ``echo``. Returns the WAV paths.
    """
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    check_checkpoint(cfg.checkpoint, "generate", modality="audio", kind=LM, causal=True)
    generate_audio_outputs(cfg).check()
    model = load_checked(cfg.checkpoint, device).eval()
    tokenizer = _audio_tokenizer(model, cfg.checkpoint)
    rate, batch = model.config.sample_rate, cfg.num_clips
    length = max(round(cfg.seconds * rate), 1)

    prompt = _prompt_ids(cfg, rate, tokenizer) if cfg.prompt_audio else torch.tensor([tokenizer.pad_id])
    # Every clip continues the same prompt: the decoder prefills it once and copies its states to each row.
    decoder = Decoder(model, batch, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                      cuda_graph="auto" if cfg.cuda_graph else False)
    result = decoder.decode([prompt] * batch, length, cfg.seed, desc="generate", unit="sample")
    require_finite(result.logprobs, f"checkpoint {cfg.checkpoint}", "the sampled audio")
    ids = result.tokens.to(torch.uint8 if tokenizer.vocab_size <= 256 else torch.int32)
    seconds_taken = result.seconds
    scores = (result.logprobs.double().sum(1) / (length * math.log(2))).tolist()

    prompt_part = prompt.numpy() if cfg.prompt_audio else np.zeros(0, dtype=np.int64)
    prompt_seconds = len(prompt_part) / rate
    paths = _out_paths(Path(cfg.out), batch)
    for path, row in zip(paths, ids.numpy(), strict=True):
        clip = tokenizer.decode(torch.from_numpy(np.concatenate([prompt_part, row.astype(np.int64)])))
        with atomic_path(path) as tmp:
            sf.write(tmp, clip.numpy(), rate, subtype="PCM_16", format="WAV")
    scores_path = Path(cfg.out).with_suffix(".scores.tsv")
    with atomic_path(scores_path) as tmp:
        lines = ["file\tprompt_seconds\tseconds\tmean_log2_prob"]
        lines += [f"{p.name}\t{prompt_seconds:.4f}\t{length / rate:.4f}\t{s:.4f}"
                  for p, s in zip(paths, scores, strict=True)]
        tmp.write_text("\n".join(lines) + "\n")
    for path, score in zip(paths, scores, strict=True):
        echo(f"{path}\t{score:.3f} bits per sample (mean log2-probability under the model)")
    echo(f"sampled {batch} x {length} samples in {seconds_taken:.2f} s on {device.type}: "
         f"{batch * length / seconds_taken:,.0f} samples/s ({length / seconds_taken:,.0f} steps/s); "
         f"scores: {scores_path}")
    return paths
