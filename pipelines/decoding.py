"""The one decoding loop of every causal model: prefill, then recurrent steps, replayed from a CUDA graph.

A :class:`Decoder` owns a recurrent cache for ``batch_size`` rows and turns prompts into ``new_tokens``
sampled continuations (:meth:`Decoder.decode`). Prompts may differ in length: the shortest common length
``m`` is prefilled in one parallel pass (``model.prefill``), and the rest of each prompt is teacher-forced
inside the step loop: at step t (position m + t) row b feeds its own prompt token while t < len_b - m,
else the token just sampled, and its outputs are the steps from its own prompt's end on. So one loop of
identical steps serves every row.

A step is: uniform noise ``torch.rand`` [B, V] on the device → :func:`sample_tokens` on the current
logits → the teacher-forcing select → the token written into a device ring buffer at a device-side step
counter → ``model.backbone.step`` and the head, whose logits feed the next step. Nothing in it waits for
the host. On CUDA (``cuda_graph``) K steps are captured unrolled in one CUDA graph, so a replay launches
K steps' kernels at once; the ring is copied to pinned host memory (non-blocking) once every
``flush_steps`` steps, and the host waits only for the copy before last. The eager loop runs the very same
step function, on the CPU or as the reference on CUDA, and gives the same tokens: both draw the noise from
one generator seeded by ``seed``, which a CUDA graph advances per replay as the eager calls do
(``CUDAGraph.register_generator_state``). A graph replay runs whole blocks of K steps; the surplus steps
of the last block only produce outputs past the end, which are never read (the cache is scratch after
:meth:`Decoder.decode`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from seqssm.errors import InputError
from seqssm.pipelines.common import progress
from seqssm.pipelines.sampling import check_sampling, sample_tokens

__all__ = ["DecodeResult", "Decoder"]


@dataclass
class DecodeResult:
    """What :meth:`Decoder.decode` returns.

    tokens: [B, N] int64 on the CPU, the N new tokens of each row.
    logprobs: [B, N] fp32, log p(token) under the model itself (temperature 1, no filtering).
    steps: recurrent steps the loop ran (the longest prompt's tail plus N).
    seconds: wall time of the step loop (after prefill and graph capture) until the last token was on
        the host.
    """

    tokens: torch.Tensor
    logprobs: torch.Tensor
    steps: int
    seconds: float


def _as_rows(prompts, batch_size: int, vocab_size: int) -> list[torch.Tensor]:
    """Prompts as a list of B int64 CPU tensors [L_b], checked."""
    if isinstance(prompts, torch.Tensor):
        if prompts.dim() != 2:
            raise InputError(f"decode: prompts must be [B, L] or a list of [L_b] id tensors, got a tensor of "
                             f"shape {tuple(prompts.shape)}")
        prompts = list(prompts)
    rows = [torch.as_tensor(p).reshape(-1).cpu() for p in prompts]
    if len(rows) != batch_size:
        raise InputError(f"decode: {len(rows)} prompts for a decoder of batch size {batch_size}; give one "
                         "prompt per row")
    for i, row in enumerate(rows):
        if row.numel() and (row.dtype.is_floating_point or row.dtype == torch.bool):
            raise InputError(f"decode: prompt {i} holds {row.dtype} values; prompts are integer token ids")
        if row.numel() and (int(row.min()) < 0 or int(row.max()) >= vocab_size):
            raise InputError(f"decode: prompt {i} has ids outside [0, {vocab_size}); check the tokenizer "
                             "matches the model")
    return [row.long() for row in rows]


class Decoder:
    """Sampled continuations of B prompts from a causal ``MambaLMHeadModel`` with a recurrent cache.

    Args:
        model: a causal model (in eval mode, on its device; its dtype sets the conv state's).
        batch_size: rows B decoded together.
        temperature, top_k, top_p, allowed: sampling options (:func:`seqssm.pipelines.sampling.sample_tokens`);
            ``allowed`` is a bool [V] mask of drawable tokens or None.
        cuda_graph: "auto" (a CUDA graph on CUDA, eager on the CPU), True (a CUDA graph; an error on the
            CPU) or False (eager).
        steps_per_replay: K, steps unrolled into one graph (amortises the launch of a replay).
        flush_steps: steps between copies of the outputs to the host (rounded up to a multiple of K).
        prefill_tokens: at most this many prompt tokens (rows × positions) per prefill pass, which bounds
            prefill activation memory; longer prompts are prefilled in pieces.
    """

    def __init__(
        self,
        model,
        batch_size: int,
        *,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        allowed: torch.Tensor | None = None,
        cuda_graph: bool | str = "auto",
        steps_per_replay: int = 8,
        flush_steps: int = 512,
        prefill_tokens: int = 2**20,
    ) -> None:
        check_sampling(temperature, top_k, top_p)
        for name, value in (("steps_per_replay", steps_per_replay), ("flush_steps", flush_steps),
                            ("prefill_tokens", prefill_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"Decoder: {name} must be a positive integer, got {value!r}")
        if cuda_graph not in (True, False, "auto"):
            raise InputError(f"Decoder: cuda_graph must be True, False or 'auto', got {cuda_graph!r}")
        self.model = model
        self.cache = model.allocate_cache(batch_size)  # also rejects bidirectional models
        self.device = self.cache.layers[0].ssm_state.device
        if cuda_graph is True and self.device.type != "cuda":
            raise InputError(f"Decoder: cuda_graph=True needs a model on CUDA, this one is on {self.device}; "
                             "use cuda_graph='auto' or move the model to a GPU")
        self.use_graph = self.device.type == "cuda" and cuda_graph is not False
        self.batch_size, self.vocab_size = batch_size, model.config.vocab_size
        self.sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}
        if allowed is not None:
            allowed = torch.as_tensor(allowed, dtype=torch.bool).to(self.device)
            if allowed.shape != (self.vocab_size,) or not bool(allowed.any()):
                raise InputError(f"Decoder: allowed must be a bool [{self.vocab_size}] mask with at least one "
                                 f"True, got shape {tuple(allowed.shape)}")
        self.allowed = allowed
        self.k = steps_per_replay
        self.ring_steps = self.k * math.ceil(flush_steps / self.k)
        self.prefill_tokens = prefill_tokens
        B, V, dev = batch_size, self.vocab_size, self.device
        # The step's state, at fixed addresses (a captured graph reads and writes exactly these tensors).
        self.logits = torch.zeros(B, V, dtype=torch.float32, device=dev)
        self.t = torch.zeros(1, dtype=torch.long, device=dev)
        self.ring_tokens = torch.zeros(self.ring_steps, B, dtype=torch.long, device=dev)
        self.ring_logprobs = torch.zeros(self.ring_steps, B, dtype=torch.float32, device=dev)
        self.tail = self.tail_len = None  # prompt tails [B, C] and their lengths [B]; sized per decode
        self.generator = torch.Generator(device=dev)
        self.graph = None

    # The step ------------------------------------------------------------------------------------------

    def _step(self) -> None:
        """One position for every row; reads and writes only the decoder's fixed buffers."""
        noise = torch.rand(self.logits.shape, generator=self.generator, device=self.device)
        sampled, logprob = sample_tokens(self.logits, noise, allowed=self.allowed, **self.sampling)
        forced = self.t < self.tail_len
        col = self.t.clamp(max=self.tail.shape[1] - 1).expand(self.batch_size, 1)
        token = torch.where(forced, self.tail.gather(1, col)[:, 0], sampled)
        slot = self.t.remainder(self.ring_steps)
        self.ring_tokens.index_copy_(0, slot, token[None])
        self.ring_logprobs.index_copy_(0, slot, logprob[None])
        self.logits.copy_(self.model._logits(self.model.backbone.step(token, self.cache)))
        self.t.add_(1)

    def _capture(self) -> None:
        # Warm-up on a side stream, as torch requires before a capture (Triton compiles, cuBLAS picks its
        # kernels); it changes the cache, logits and counter, which _prepare then overwrites entirely.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)  # each replay advances it as K eager steps would
        with torch.cuda.graph(graph):
            for _ in range(self.k):
                self._step()
        self.graph = graph

    # Prompts -------------------------------------------------------------------------------------------

    def _ensure_tail(self, width: int) -> None:
        """Prompt-tail buffers of at least ``width`` columns; a wider one needs a fresh capture."""
        if self.tail is None or self.tail.shape[1] < width:
            capacity = 1 << max(width - 1, 0).bit_length()  # powers of two, so captures stay rare
            self.tail = torch.zeros(self.batch_size, capacity, dtype=torch.long, device=self.device)
            self.tail_len = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
            self.graph = None

    def _prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """Run ids [R, m] (R = B, or 1 when every row shares the prefix) in pieces; logits [R, V] at m - 1."""
        step = max(1, self.prefill_tokens // ids.shape[0])
        cache = None
        for start in range(0, ids.shape[1], step):
            logits, cache = self.model.prefill(ids[:, start : start + step].to(self.device), cache)
        # Into the decoder's own buffers, whose addresses a captured graph holds; every state of a layer
        # ([B, ...] each: conv_state, ssm_state), broadcast from one row when the prefix is shared.
        for mine, fresh in zip(self.cache.layers, cache.layers, strict=True):
            for f in dataclasses.fields(mine):
                dst = getattr(mine, f.name)
                if isinstance(dst, torch.Tensor):
                    dst.copy_(getattr(fresh, f.name).expand_as(dst))
        return logits[:, -1]

    def _prepare(self, rows: list[torch.Tensor], m: int) -> None:
        """Cache after each row's first m tokens, logits at m - 1, prompt tails, counter at 0."""
        if m == 0:
            # No context at all: the first token is drawn uniformly from the allowed tokens.
            self.cache.reset()
            self.logits.zero_()
        else:
            heads = torch.stack([row[:m] for row in rows])
            shared = bool((heads == heads[:1]).all())
            logits = self._prefill(heads[:1] if shared else heads)
            self.logits.copy_(logits.expand_as(self.logits))
        self.cache.seqlen_offset = m
        self.tail.zero_()
        for b, row in enumerate(rows):
            self.tail[b, : len(row) - m] = row[m:].to(self.device)
        self.tail_len.copy_(torch.tensor([len(row) - m for row in rows]))
        self.t.zero_()

    # The loop ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self, prompts, new_tokens: int, seed: int = 0, *, desc: str = "decode",
               unit: str = "token") -> DecodeResult:
        """Sample ``new_tokens`` tokens after each prompt.

        Args:
            prompts: B prompts, a list of int64 [L_b] (lengths may differ, may be 0) or one [B, L] tensor.
            new_tokens: N, tokens to sample after each prompt.
            seed: seeds the noise generator; the same seed, prompts and options give the same tokens.
            desc, unit: the progress bar's label and unit (its rate counts tokens of all rows).

        Returns:
            a :class:`DecodeResult` (tokens [B, N] on the CPU).
        """
        if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
            raise InputError(f"decode: new_tokens must be a positive integer, got {new_tokens!r}")
        rows = _as_rows(prompts, self.batch_size, self.vocab_size)
        lens = [len(row) for row in rows]
        m = min(lens)
        tails = [n - m for n in lens]
        steps = max(tails) + new_tokens
        self._ensure_tail(max(tails))
        if self.use_graph and self.graph is None:
            self._capture()
        self._prepare(rows, m)
        self.generator.manual_seed(seed)

        B, N, R = self.batch_size, new_tokens, self.ring_steps
        tokens = torch.empty(B, N, dtype=torch.long)
        logprobs = torch.empty(B, N, dtype=torch.float32)
        pinned = self.device.type == "cuda"
        host = [(torch.empty(R, B, dtype=torch.long, pin_memory=pinned),
                 torch.empty(R, B, dtype=torch.float32, pin_memory=pinned)) for _ in range(2)]

        def collect(window: int, count: int) -> None:
            # Steps [first, first + count) of the ring, now on the host, into each row's own columns.
            first, (tok, logp) = window * R, host[window % 2]
            for b, tail in enumerate(tails):
                lo, hi = max(first, tail), min(first + count, tail + N)
                if lo < hi:
                    tokens[b, lo - tail : hi - tail] = tok[lo - first : hi - first, b]
                    logprobs[b, lo - tail : hi - tail] = logp[lo - first : hi - first, b]

        bar = progress(total=steps, desc=desc, unit=unit, unit_scale=B if B > 1 else False)
        start = time.perf_counter()
        pending = None  # (window, count, event) copied to the host but not yet collected
        for window in range(math.ceil(steps / R)):
            count = min(R, steps - window * R)
            done = 0
            while done < count:
                block = self.k if self.use_graph else min(self.k, count - done)
                if self.use_graph:
                    self.graph.replay()
                else:
                    for _ in range(block):
                        self._step()
                done += block
                bar.update(min(block, count - (done - block)))
            tok, logp = host[window % 2]
            tok[:count].copy_(self.ring_tokens[:count], non_blocking=pinned)
            logp[:count].copy_(self.ring_logprobs[:count], non_blocking=pinned)
            event = torch.cuda.Event() if pinned else None
            if event is not None:
                event.record()
            if pending is not None:
                # Wait for the previous window only: the GPU meanwhile runs this one.
                if pending[2] is not None:
                    pending[2].synchronize()
                collect(pending[0], pending[1])
            pending = (window, count, event)
        if pending[2] is not None:
            pending[2].synchronize()
        collect(pending[0], pending[1])
        seconds = time.perf_counter() - start
        bar.close()
        self.cache.seqlen_offset = m + math.ceil(steps / self.k) * self.k if self.use_graph else m + steps
        return DecodeResult(tokens=tokens, logprobs=logprobs, steps=steps, seconds=seconds)
