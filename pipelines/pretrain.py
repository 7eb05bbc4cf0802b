"""Pretraining a language model on windows of a genome (causal or masked LM) or of audio (causal LM)."""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seqssm.config import MambaConfig
from seqssm.datasets.windows import GenomeWindowDataset
from seqssm.errors import InputError
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.checkpointing import (
    STATE_DIR,
    StopSignals,
    TrainingDiverged,
    TrainingInterrupted,
    diverged,
    read_trainer_state,
    resume_log,
    save_trainer_state,
    stop_for_signal,
    weights_finite,
)
from seqssm.pipelines.common import (
    FILE,
    FOLDER,
    LM,
    OutputPlan,
    atomic_path,
    autocast,
    check_checkpoint,
    load_checked,
    progress,
    require_file,
    resolve_device,
    seed_everything,
)
from seqssm.pipelines.configs_train import PretrainConfig
from seqssm.pipelines.length_schedule import LengthScheduleConfig, plan_length_schedule, stage_at, step_backward
from seqssm.pipelines.objectives import IGNORE, ExpertUse, Objective, evaluate_bits, mask_tokens, on_device
from seqssm.pipelines.train_utils import (
    RunWarnings,
    TimeCapWatch,
    cosine_schedule,
    few_steps_warning,
    param_groups,
    write_run_record,
)
from seqssm.tokenizers import get_tokenizer

# The checkpoint modality (``check_checkpoint``) each --modality trains; and the symbols a uniform guess
# spreads over (the "uniform" bits reported beside the validation loss): bases, or byte values.
CHECKPOINT_MODALITY = {"bytes": "byte"}
UNIFORM_SYMBOLS = {"dna": 4, "bytes": 256}


@dataclass
class PretrainResult:
    checkpoint: Path
    val_bits_per_token: float
    uniform_bits: float
    steps: int
    seconds: float
    history: list
    warnings: list = field(default_factory=list)  # the lines printed to stderr, also in run.json
    packing: dict | None = None  # --pack: run.json's "packing" (efficiency: real tokens / row positions)


def _build_model(cfg: PretrainConfig, tokenizer, sample_rate: int | None) -> MambaLMHeadModel:
    if cfg.init_from:
        return load_checked(cfg.init_from, impl=cfg.impl)
    config = MambaConfig(
        d_model=cfg.d_model, n_layer=cfg.n_layer, vocab_size=tokenizer.vocab_size, d_state=cfg.d_state,
        expand=cfg.expand, bidirectional=cfg.bidirectional or cfg.rc_equivariant, tokenizer=tokenizer.name,
        sample_rate=sample_rate, rc_equivariant=cfg.rc_equivariant, **cfg.architecture(),
    )
    return MambaLMHeadModel(config, impl=cfg.impl)


def _length_stages(cfg: PretrainConfig, world: int, config: MambaConfig):
    """The sequence-length warm-up stages, or None for plain fixed-length steps.

    A stage whose one sequence is over ``--max-tokens-per-micro-batch`` trains in chunks with exact state
    passing (``seqssm.streaming.chunked_backward``), which Mamba layers alone support: attention, Mamba-2,
    S4D and MoE layers are refused there (an MoE layer's capacity and balance loss would be per chunk).
    """
    if not cfg.length_warmup_steps and cfg.max_tokens_per_micro_batch is None:
        return None
    if world > 1:
        raise InputError("--length-warmup-steps / --max-tokens-per-micro-batch are not supported under torchrun yet")
    stages = plan_length_schedule(LengthScheduleConfig(
        max_length=cfg.window, tokens_per_step=cfg.window * cfg.batch_size,
        max_tokens_per_micro_batch=cfg.max_tokens_per_micro_batch or cfg.window * cfg.batch_size,
        min_length=min(cfg.min_window, cfg.window), warmup_steps=cfg.length_warmup_steps,
    ))
    chunked = [stage.seq_len for stage in stages if stage.chunk_size is not None]
    other = [what for what, used in (("attention layers", "A" in config.layer_kinds),
                                     (f"the {config.mixer} mixer", config.mixer != "mamba"),
                                     ("MoE layers", bool(config.moe_every))) if used]
    if chunked and other:
        raise InputError(f"--max-tokens-per-micro-batch {cfg.max_tokens_per_micro_batch} is below the sequence "
                         f"length {max(chunked)}, which trains in chunks, and chunked training supports Mamba "
                         f"layers only (this model has {' and '.join(other)}); raise --max-tokens-per-micro-batch "
                         f"to at least {max(chunked)}")
    return stages


def _scheduled_backward(model, objective: Objective, ids: torch.Tensor, stage, generator, device,
                        expert_use: ExpertUse) -> float:
    """One step of the length schedule: the batch's windows [B, W(+1)] are cut into [B·W/S, S] pieces of the
    stage's length S (same tokens, shorter context), then micro-batched / chunked by ``step_backward``."""
    if objective.kind == "clm":
        inputs, targets = ids[:, :-1], ids[:, 1:]
    else:
        inputs, targets = mask_tokens(ids, mask_id=objective.mask_id, vocab_ids=objective.vocab_ids,
                                      mask_prob=objective.mask_prob, generator=generator)
    shape = (-1, stage.seq_len)
    with autocast(device):
        return step_backward(model, inputs.reshape(shape), targets.reshape(shape), stage, ignore_index=IGNORE,
                             extra_loss=expert_use.loss if expert_use else None)


def distributed_setup(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under `torchrun` (WORLD_SIZE > 1) joins the process group: NCCL with one
    GPU per process (LOCAL_RANK), or gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(device_name)
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return torch.distributed.get_rank(), world, device


def agree(flags: list[bool], world: int, device: torch.device) -> list[bool]:
    """Each flag True on every rank if it is True on any rank (so all ranks stop at the same step); one
    all-reduce for all of them."""
    if world == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def _datasets(cfg: PretrainConfig, world: int = 1):
    """(tokenizer, train, val, sample rate): datasets of int64 windows [window + 1] for this modality."""
    if cfg.modality == "audio":
        from seqssm.datasets.audio_windows import audio_lm_datasets
        from seqssm.transforms import AudioTokenizer

        tokenizer = AudioTokenizer("mulaw", bits=8)
        train, val, rate = audio_lm_datasets(
            cfg.data, cfg.window + 1, num_train=cfg.steps * cfg.batch_size * world, num_val=cfg.val_windows,
            seed=cfg.seed, val_fraction=cfg.val_fraction, sample_rate=cfg.sample_rate, tokenizer=tokenizer,
        )
        return tokenizer, train, val, rate
    # clm: +1 so the model sees `window` tokens and predicts the next one at each position.
    length = cfg.window + 1 if cfg.objective == "clm" else cfg.window
    if cfg.pack:
        return (*_packed_datasets(cfg, length, world), None)
    if cfg.modality == "bytes":
        from seqssm.datasets.byte_windows import ByteWindowDataset

        train = ByteWindowDataset(cfg.data, length, num_samples=cfg.steps * cfg.batch_size * world, seed=cfg.seed,
                                  split="train", val_fraction=cfg.val_fraction)
        val = ByteWindowDataset(cfg.data, length, num_samples=cfg.val_windows, seed=cfg.seed + 1, split="val",
                                val_fraction=cfg.val_fraction)
        return get_tokenizer("byte"), train, val, None
    require_file(cfg.data, "FASTA file")
    tokenizer = get_tokenizer("nucleotide")
    train = GenomeWindowDataset(
        cfg.data, length, tokenizer=tokenizer, num_samples=cfg.steps * cfg.batch_size * world,
        seed=cfg.seed, split="train", val_fraction=cfg.val_fraction,
    )
    val = GenomeWindowDataset(
        cfg.data, length, tokenizer=tokenizer, num_samples=cfg.val_windows,
        seed=cfg.seed + 1, split="val", val_fraction=cfg.val_fraction,
    )
    return tokenizer, train, val, None


def _packed_datasets(cfg: PretrainConfig, length: int, world: int):
    """(tokenizer, train, val) of ``--pack``: rows of ``length`` tokens packed from the records of ``cfg.data``
    (``seqssm.datasets.packed``); val is one fixed pass over the held-out records, ``val_windows`` rows at most."""
    from seqssm.datasets.packed import PackedRecords, read_records, split_records

    tokenizer = get_tokenizer("nucleotide")
    records = read_records(cfg.data, tokenizer)
    train_idx, val_idx = split_records(records, cfg.val_fraction)
    least = 2 if cfg.objective == "clm" else 1  # a piece of one token has no next-token target
    train = PackedRecords(records, train_idx, length, tokenizer, num_rows=cfg.steps * cfg.batch_size * world,
                          seed=cfg.seed, min_length=least, split="train")
    val = PackedRecords(records, val_idx, length, tokenizer, seed=cfg.seed + 1, min_length=least,
                        random_cuts=False, split="val")
    return tokenizer, train, torch.utils.data.Subset(val, range(min(len(val), cfg.val_windows)))


def pretrain_outputs(cfg: PretrainConfig) -> OutputPlan:
    """What ``pretrain`` writes into ``cfg.out`` and the inputs it must never replace (with ``resume``, the
    earlier part's outputs are expected there)."""
    out = Path(cfg.out)
    return OutputPlan([(out / "checkpoint", FOLDER), (out / STATE_DIR, FOLDER), (out / "train_log.tsv", FILE),
                       (out / "run.json", FILE)],
                      folder=out, inputs=[("training data", cfg.data), ("--init-from checkpoint", cfg.init_from)],
                      overwrite=cfg.overwrite or cfg.resume)


def log_header(expert_use: ExpertUse) -> str:
    """train_log.tsv's header: step, train_loss, val_bits_per_token, lr, seconds; for a model with MoE layers
    ``aux_loss`` and each MoE layer's ``moe{i}_max_share``, ``moe{i}_balance`` before lr (``ExpertUse``)."""
    return "\t".join(["step", "train_loss", "val_bits_per_token", *expert_use.columns, "lr", "seconds"]) + "\n"


def pretrain(cfg: PretrainConfig) -> PretrainResult:
    """Train an LM on random windows of ``cfg.data``; validate on the held-out tail of each contig.

    DNA: causal LM, or masked LM (15% of positions, 80/10/10) for bidirectional / RC-equivariant models;
    both strands are sampled (reverse-complement augmentation). Audio (``modality="audio"``, ``data`` a
    folder or file of recordings; for DNA it is a FASTA file): causal LM over 8-bit mu-law tokens. Bytes
    (``modality="bytes"``, ``data`` any file or folder of files, gzip decompressed): the file's raw bytes
    (``ByteTokenizer``, a FASTA with its headers and newlines), causal LM (or masked with
    ``bidirectional``); the validation loss is in bits per byte (run.json ``result.val_bits_per_byte``).

    Writes ``{out}/checkpoint`` (config.json + model.safetensors, replaced atomically at every validation),
    ``{out}/trainer_state`` (everything ``resume`` restores, see ``seqssm.pipelines.checkpointing``; saved with each
    checkpoint and on SIGTERM / SIGINT), ``{out}/train_log.tsv`` and ``{out}/run.json`` (resolved config,
    versions, results, and ``status``: complete, interrupted or diverged). Outputs are checked before
    training starts (``pretrain_outputs``); the folder appears at the first validation. ``resume`` continues
    the run in ``out`` from its trainer state, with the weights, optimiser, schedule, data position and RNG
    streams it had, so the result equals an uninterrupted run's.

    Packing (``pack``, DNA): the rows are whole records of ``data`` (FASTA records or SAM/BAM reads, long ones cut)
    packed with ``seq_idx`` (``seqssm.datasets.packed``), each run alone, no loss on padding or across a
    boundary; run.json ``packing`` gives the efficiency. Warnings (stderr and run.json ``warnings``): fewer than
    ``MIN_STEPS`` steps, or a ``max_minutes`` cap that, at the first steps' pace, stops it before ``steps`` (any cut:
    the decay runs over the steps; ``train_utils.TimeCapWatch``).

    Mixture of experts (``moe_every``): every training forward adds the weighted load-balancing loss
    (``objectives.ExpertUse``) to the LM loss it backpropagates (``train_loss`` logs the LM loss alone);
    the log gains the expert-use columns and run.json ``expert_use`` (tokens per expert per MoE layer).
    """
    if cfg.init_from:
        check_checkpoint(cfg.init_from, "pretrain", modality=CHECKPOINT_MODALITY.get(cfg.modality, cfg.modality),
                         kind=LM, causal=cfg.objective == "clm")
    out = Path(cfg.out)
    saved = read_trainer_state(out, cfg) if cfg.resume else None  # every rank reads it, before any rank writes
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes
        pretrain_outputs(cfg).check()
    rank, world, device = distributed_setup(cfg.device)
    generator = seed_everything(cfg.seed)
    tokenizer, train, val, sample_rate = _datasets(cfg, world)
    objective = Objective(cfg, tokenizer)
    position = saved.position if saved is not None else {
        "step": 0, "train_loss": math.nan, "val_bits": math.nan, "history": [], "seconds": 0.0, "finished": False}
    step = position["step"]
    # Each rank trains on its own stride of the sample indices: the global batch is batch_size × world. Item i
    # is a pure function of (seed, i), so a resumed run starts at the first window it has not trained on.
    shard = torch.utils.data.Subset(train, range(rank + step * cfg.batch_size * world, len(train), world))
    train_loader = torch.utils.data.DataLoader(shard, batch_size=cfg.batch_size, shuffle=False)
    val_batches = list(torch.utils.data.DataLoader(val, batch_size=cfg.batch_size))

    # Same seed on every rank, so every rank starts from the same weights.
    model = _build_model(cfg, tokenizer, sample_rate).to(device)
    if saved is not None:
        saved.load_model(model)  # before DDP, which broadcasts rank 0's weights
    expert_use = ExpertUse(model)  # the MoE balance loss and expert counts (nothing without MoE layers)
    if cfg.pack and expert_use:
        raise InputError(f"--pack with the MoE layers of --init-from {cfg.init_from}: the packed forward pads each "
                         "sequence to the batch's longest and the experts' router would count that padding; drop "
                         "--pack")
    expert_use.load_state(position.get("expert_use"))
    # An expert that no token chose in a step has no gradient: DDP must not wait for it.
    trained = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
        model, find_unused_parameters=bool(expert_use))
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.steps)
    stages = _length_stages(cfg, world, model.config)
    log_path, state_dir = out / "train_log.tsv", out / STATE_DIR
    header = log_header(expert_use)
    log_lines = resume_log(log_path, header, step) if saved is not None and rank == 0 else [header]
    history: list = position["history"]
    running, bits = position["train_loss"], position["val_bits"]
    saved_step = step if saved is not None else None  # the step of the trainer state on disk
    checkpoint_step = history[-1]["step"] if history else None  # and of the checkpoint (every rank knows both)
    start = time.perf_counter() - position["seconds"]  # the clock runs on from the earlier parts'
    deadline = None if cfg.max_minutes is None else start + 60 * cfg.max_minutes
    generators = {"objective": generator}
    warned = RunWarnings()  # rank 0: one line each on stderr, and run.json's "warnings"
    if rank == 0:
        warned.warn(few_steps_warning(cfg.steps))
    # Any cut of --steps: the cosine decay runs over the steps, so a run the cap stops ends at a high rate.
    watch = TimeCapWatch(warned, deadline if rank == 0 else None, cfg.steps, cfg.max_minutes, minimum=cfg.steps)

    def save_state(finished: bool) -> None:
        nonlocal saved_step
        if rank == 0:
            save_trainer_state(state_dir, cfg, {
                "step": step, "train_loss": running, "val_bits": bits, "history": history,
                "seconds": time.perf_counter() - start, "finished": finished, "expert_use": expert_use.state(),
            }, model=model, optimizer=optimizer, scheduler=scheduler, device=device, generators=generators)
        saved_step = step
        if world > 1:
            torch.distributed.barrier()

    def stop_diverged(what: str, at: int, loss: float | None = None) -> TrainingDiverged:
        """Record a divergence at step ``at`` (counted from 1) in run.json; return the error to raise."""
        finish({"status": "diverged", "diverged": {"step": at, "loss": None if loss is None else str(loss),
                                                   "last_checkpoint_step": checkpoint_step}})
        return diverged(what, out / "checkpoint", checkpoint_step, saved_step)

    def validate_and_save(finished: bool) -> float:
        nonlocal bits, checkpoint_step
        if not weights_finite(model):  # every rank holds the same weights, so every rank stops here
            raise stop_diverged(f"the weights are not finite after step {step}", step)
        checkpoint_step = step
        experts = expert_use.row(world, device)  # every rank: the counts are summed over ranks
        if rank == 0:
            bits = evaluate_bits(model, objective, val_batches, device)
            with atomic_path(out / "checkpoint") as tmp:
                model.save_pretrained(tmp)
            elapsed = time.perf_counter() - start
            history.append({"step": step, "train_loss": running, "val_bits": bits, **experts, "seconds": elapsed})
            cells = [str(step), f"{running:.4f}", f"{bits:.4f}", *(f"{v:.4f}" for v in experts.values()),
                     f"{scheduler.get_last_lr()[0]:.3g}", f"{elapsed:.1f}"]
            log_lines.append("\t".join(cells) + "\n")
            with atomic_path(log_path) as tmp:  # rewritten whole (a few lines), so it always matches the checkpoint
                tmp.write_text("".join(log_lines))
        save_state(finished)  # last: a kill before it resumes from the previous state, and redoes these rows
        return bits

    def finish(status: dict) -> None:
        bar.close()
        if rank == 0:
            moe = {"expert_use": expert_use.record()} if expert_use else {}
            packing = {"packing": train.stats(step * cfg.batch_size * world, cfg.batch_size)} if cfg.pack else {}
            write_run_record(out, cfg, {**status, "warnings": list(warned), **packing, **moe, "history": history})
        if world > 1:
            torch.distributed.destroy_process_group()

    bar = progress(total=cfg.steps, initial=step, desc="pretrain", unit="step", disable=True if rank else None)
    batches = iter(train_loader)
    if saved is not None:  # last, so that no draw while setting up moves a restored stream
        saved.restore(optimizer=optimizer, scheduler=scheduler, device=device, generators=generators)
    finished = position["finished"] or step >= cfg.steps
    model.train()
    with StopSignals() as signals:
        while not finished:
            ids, seq_idx = on_device(next(batches), device)
            optimizer.zero_grad(set_to_none=True)
            if stages is None:
                with autocast(device):
                    loss, _ = objective(trained, ids, generator, seq_idx)
                    aux = expert_use.loss()  # MoE load balancing (0.0 without MoE layers)
                (loss + aux).backward()
                bad = not math.isfinite(expert_use.last)
            else:
                loss = torch.tensor(_scheduled_backward(model, objective, ids, stage_at(stages, step), generator,
                                                        device, expert_use))
                bad = False
            value = loss.item()  # the LM loss alone, comparable across architectures
            if agree([bad or not math.isfinite(value)], world, device)[0]:
                raise stop_diverged(f"the loss is {value} at step {step + 1}", step + 1, value)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            watch.step(step)
            running = value if math.isnan(running) else 0.9 * running + 0.1 * value
            bar.update(1)
            bar.set_postfix(loss=f"{running:.3f}", val_bits=f"{bits:.3f}")
            out_of_time, interrupted = agree([deadline is not None and time.perf_counter() > deadline,
                                              signals.signum is not None], world, device)
            finished = step >= cfg.steps or out_of_time
            if step % cfg.val_every == 0 or finished:
                bits = validate_and_save(finished)
            if interrupted and not finished:
                if saved_step != step:
                    save_state(False)
                signum = signals.signum or signal.SIGTERM  # another rank's signal: SIGTERM's exit code
                message = (f"interrupted by {signal.Signals(signum).name} at step {step} of {cfg.steps}: the "
                           f"training state is saved in {state_dir}; continue with the same command and --resume")
                finish({"status": "interrupted", "interrupted": {"signal": signal.Signals(signum).name, "step": step,
                                                                 "trainer_state": str(state_dir)}})
                raise stop_for_signal(signum, message) if rank == 0 else TrainingInterrupted(signum, message)
    watch.finish(step)
    seconds = time.perf_counter() - start
    result = PretrainResult(
        checkpoint=out / "checkpoint", val_bits_per_token=bits,
        uniform_bits=math.log2(UNIFORM_SYMBOLS.get(cfg.modality, tokenizer.vocab_size)), steps=step,
        seconds=seconds, history=history, warnings=list(warned),
        packing=train.stats(step * cfg.batch_size * world, cfg.batch_size) if cfg.pack else None,
    )
    per_byte = {"val_bits_per_byte": bits} if cfg.modality == "bytes" else {}  # a byte is a token: the same number
    finish({"status": "complete", "result": {"val_bits_per_token": bits, **per_byte, "steps": step,
                                             "seconds": round(seconds, 1)}})
    return result
