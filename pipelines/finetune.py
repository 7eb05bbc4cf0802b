"""Fine-tuning a backbone with a classification head on labelled DNA or audio.

The data (see ``seqssm.pipelines.predict`` for the input formats) is split once by ``seed`` into train / val / test
(stratified by label for single-label sequence tasks; FSDD keeps its own test split, takes 0-4). Every
epoch (or every ``val_every`` steps) the model is scored on val; the best checkpoint by ``metric`` is kept
(replaced atomically) and training stops early after ``patience`` validations without improvement. At the
end the best checkpoint predicts the test split into ``test_predictions.tsv``, the table `seqssm evaluate`
reads.

The set-up around the loop (data, task, backbone, loaders, optimiser) is in ``finetune_setup``; what other
jobs share lives in ``classify``, ``classical``, ``folds``, ``self_pretrain`` and ``train_utils``.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqssm.errors import InputError
from seqssm.models.heads import (
    SequenceClassifier,
    classification_loss,
    load_classifier,
)
from seqssm.pipelines.checkpointing import (
    STATE_DIR,
    StopSignals,
    TrainingDiverged,
    diverged,
    read_trainer_state,
    resume_log,
    save_trainer_state,
    stop_for_signal,
    weights_finite,
)
from seqssm.pipelines.classify import class_weights, model_inputs, write_predictions
from seqssm.pipelines.common import (
    FILE,
    FOLDER,
    OutputPlan,
    atomic_path,
    autocast,
    check_checkpoint,
    progress,
    resolve_device,
    seed_everything,
)
from seqssm.pipelines.configs_train import FinetuneConfig
from seqssm.pipelines.ema import WeightEMA
from seqssm.pipelines.finetune_setup import backbone as _backbone
from seqssm.pipelines.finetune_setup import class_weights_of as _class_weights_of
from seqssm.pipelines.finetune_setup import dna_patch_of as _dna_patch_of
from seqssm.pipelines.finetune_setup import fixed_length as _fixed_length
from seqssm.pipelines.finetune_setup import init_seed as _init_seed
from seqssm.pipelines.finetune_setup import load_data as _load_data
from seqssm.pipelines.finetune_setup import loaders as _loaders
from seqssm.pipelines.finetune_setup import metric_of as _metric_of
from seqssm.pipelines.finetune_setup import optimizer as _optimizer
from seqssm.pipelines.finetune_setup import pooling_of as _pooling_of
from seqssm.pipelines.finetune_setup import rate_warning as _rate_warning
from seqssm.pipelines.finetune_setup import task as _task
from seqssm.pipelines.metrics import cat_batches, compute_metrics, evaluate_split, task_metrics
from seqssm.pipelines.objectives import ExpertUse
from seqssm.pipelines.self_pretrain import for_finetune as self_pretrain
from seqssm.pipelines.train_utils import (
    RunWarnings,
    TimeCapWatch,
    cosine_schedule,
    few_steps_warning,
    write_run_record,
)


@dataclass
class FinetuneResult:
    checkpoint: Path
    metric: str
    best_value: float
    best_step: int
    steps: int
    seconds: float
    sizes: dict
    test_metrics: dict | None = None
    test_predictions: Path | None = None
    history: list = field(default_factory=list)
    test_notes: list = field(default_factory=list)
    baseline: dict | None = None
    folds: dict | None = None  # --folds: the cross-validation record (seqssm.pipelines.folds)
    warnings: list = field(default_factory=list)  # the lines printed to stderr, also in run.json
    self_pretrain: dict | None = None  # what --self-pretrain-steps did (also run.json's "self_pretrain")


def finetune_outputs(cfg: FinetuneConfig) -> OutputPlan:
    """What ``finetune`` writes into ``cfg.out`` and the inputs it must never replace."""
    out = Path(cfg.out)
    labels = cfg.bed_labels if cfg.bed_labels is not None and not cfg.bed_labels.isdigit() else None
    if cfg.folds:
        paths = [*((out / f"fold_{f}", FOLDER) for f in range(cfg.folds)), (out / "run.json", FILE),
                 (out / "oof_predictions.tsv", FILE), *([(out / "baseline_oof_predictions.tsv", FILE)]
                                                        if cfg.baseline else [])]
    else:
        paths = [(out / "checkpoint", FOLDER), (out / STATE_DIR, FOLDER), (out / "train_log.tsv", FILE),
                 (out / "run.json", FILE), (out / "test_predictions.tsv", FILE),
                 *([(out / "baseline_predictions.tsv", FILE)] if cfg.baseline else [])]
    return OutputPlan(paths, folder=out,
                      overwrite=cfg.overwrite or cfg.resume,
                      inputs=[("training data", cfg.data), ("genome", cfg.genome), ("--bed-labels table", labels),
                              ("--init-from checkpoint", cfg.init_from)])


def finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune on ``cfg.data``; write ``{out}/checkpoint`` (the best by validation ``metric``),
    ``train_log.tsv`` (step, epoch, train_loss, val_loss, val_<metric>…, lr, seconds), ``run.json`` (with
    ``status``: complete, interrupted or diverged) and, when the test split is not empty,
    ``test_predictions.tsv``; ``{out}/trainer_state`` (see ``seqssm.pipelines.checkpointing``) at every validation
    and on SIGTERM / SIGINT, which ``resume`` continues from exactly. Outputs are checked before training
    starts (``finetune_outputs``); the folder appears at the first validation. With ``folds`` K: one such run
    per fold in ``{out}/fold_<f>`` and the pooled out-of-fold predictions (``_cross_validate``).
    """
    if cfg.init_from:
        check_checkpoint(cfg.init_from, "finetune", modality=cfg.modality)
    out = Path(cfg.out)
    saved = read_trainer_state(out, cfg) if cfg.resume else None
    finetune_outputs(cfg).check()
    device = resolve_device(cfg.device)
    seed_everything(_init_seed(cfg))  # the split draws from its own seeded generator (split_indices)
    labels, splits, rate = _load_data(cfg)
    if cfg.folds:
        return _cross_validate(cfg, device, labels, splits, rate)
    return _train(cfg, saved, device, labels, splits, rate)


def _cross_validate(cfg: FinetuneConfig, device, labels: list[str], splits: dict, rate: int | None) -> FinetuneResult:
    """``--folds K``: ``seqssm.pipelines.folds.cross_validate`` with a run of ``_train`` per fold."""
    from seqssm.pipelines.folds import cross_validate

    def train_fold(fold_cfg: FinetuneConfig, fold: dict, info: dict) -> FinetuneResult:
        seed_everything(_init_seed(fold_cfg))
        return _train(fold_cfg, None, device, labels, fold, rate, fold=info)

    start = time.perf_counter()
    record, runs = cross_validate(cfg, labels, splits, train_fold)
    warned = list(dict.fromkeys(w for r in runs for w in r.warnings))  # every fold's, once
    write_run_record(Path(cfg.out), cfg, {"status": "complete", "warnings": warned, "cross_validation": record})
    return FinetuneResult(checkpoint=Path(cfg.out), metric=runs[0].metric,
                          best_value=float(np.mean([r.best_value for r in runs])), best_step=0,
                          steps=sum(r.steps for r in runs), seconds=time.perf_counter() - start,
                          sizes={"test": record["rows"]}, test_metrics=record["pooled"],
                          test_predictions=Path(cfg.out) / "oof_predictions.tsv", folds=record,
                          baseline=record.get("baseline"), warnings=warned)


def _train(cfg: FinetuneConfig, saved, device, labels: list[str], splits: dict, rate: int | None,
           fold: dict | None = None) -> FinetuneResult:
    """One fine-tuning run on ``splits`` into ``cfg.out``; ``fold`` (``--folds``) goes into run.json."""
    out = Path(cfg.out)
    pooling = _pooling_of(cfg, splits)  # --pooling auto chosen by the data; task.json and run.json keep it
    dna_patch = _dna_patch_of(cfg, splits, pooling)  # so is --patch-size auto for DNA
    task = _task(cfg, labels, rate, _fixed_length(cfg, splits, pooling, dna_patch), pooling, dna_patch)
    if dna_patch and cfg.self_pretrain_steps not in (0, "auto"):
        raise InputError(f"--self-pretrain-steps trains the backbone's base-by-base embedding, which a model reading "
                         f"DNA in patches of {dna_patch} bases does not use; add --patch-size 1 or drop "
                         "--self-pretrain-steps")
    if not splits["train"] or not splits["val"]:
        raise InputError(f"{cfg.data}: too few examples ({len(labels)}) for a train and a val split; add data")
    metric = _metric_of(cfg, task, splits["train"])  # auto: by the task and its balance; run.json keeps it
    weights_spec = _class_weights_of(cfg, task, splits["train"])
    if cfg.baseline and (task.problem_type != "single_label" or task.level != "sequence"):
        raise InputError("--baseline fits a single-label sequence classifier; drop it for multi-label or "
                         "token-level tasks")
    if metric != "loss" and metric not in task_metrics(task.problem_type):
        kind = task.problem_type.replace("_", "-")
        raise InputError(f"--metric {metric} is not scored for a {kind} task; use one of loss, "
                         f"{', '.join(task_metrics(task.problem_type))}"
                         + (" (micro F1 of a single-label task is its accuracy)" if metric == "micro_f1" else ""))
    model = SequenceClassifier(_backbone(cfg, rate), task).to(device)
    if saved is not None:
        saved.load_model(model)
    # The backbone as a language model on the training rows first (--self-pretrain-steps); not again on resume.
    pretrained = saved.position.get("self_pretrain") if saved is not None else self_pretrain(
        cfg, model.lm, splits["train"], device, rate, _init_seed(cfg))
    if cfg.freeze_backbone:
        model.lm.requires_grad_(False)
    ema = WeightEMA(model, cfg.ema) if cfg.ema is not None else None
    expert_use = ExpertUse(model)  # MoE backbones: the balance loss joins the task loss; expert use is logged
    weights = class_weights(weights_spec, task, splits["train"])
    weights = weights.to(device) if weights is not None else None
    train_loader, val_loader, test_loader = _loaders(cfg, task, splits, rate, device)
    per_epoch = len(train_loader)
    total = cfg.epochs * per_epoch
    optimizer = _optimizer(cfg, model)
    warned = RunWarnings()  # one line each on stderr, and run.json's "warnings"
    warned.warn(few_steps_warning(total, len(splits["train"]), epochs=cfg.epochs, batch_size=cfg.batch_size))
    warned.warn(_rate_warning(cfg, model, rate))

    lower_is_better = metric == "loss"
    position = saved.position if saved is not None else {
        "step": 0, "epoch": 0, "batch": 0, "train_loss": math.nan, "best": math.inf if lower_is_better else -math.inf,
        "best_step": 0, "stale": 0, "history": [], "seconds": 0.0, "finished": False}
    step, running, history = position["step"], position["train_loss"], position["history"]
    expert_use.load_state(position.get("expert_use"))
    best, best_step, stale = position["best"], position["best_step"], position["stale"]
    log_path, state_dir = out / "train_log.tsv", out / STATE_DIR
    columns = ["loss", *task_metrics(task.problem_type)]  # only the task's scores: no column of NaNs
    header = "\t".join(["step", "epoch", "train_loss", *(f"val_{m}" for m in columns), *expert_use.columns, "lr",
                        "seconds"]) + "\n"
    log_lines = resume_log(log_path, header, step) if saved is not None else [header]
    saved_step = step if saved is not None else None
    start = time.perf_counter() - position["seconds"]  # the clock (and a --max-minutes budget) runs on
    # --max-minutes covers the whole run: self-pretraining (at most a third of it) comes out of the budget.
    budget = None if cfg.max_minutes is None else max(60 * cfg.max_minutes - (pretrained or {}).get("seconds", 0),
                                                      20 * cfg.max_minutes)
    deadline = None if budget is None else start + budget
    scheduler = cosine_schedule(optimizer, min(cfg.warmup_steps, total // 10), total, seconds=budget, start=start)

    def save_state(epoch: int, batch: int, finished: bool) -> None:
        """The state after ``batch`` batches of ``epoch`` (0-based)."""
        nonlocal saved_step
        save_trainer_state(state_dir, cfg, {
            "step": step, "epoch": epoch, "batch": batch, "train_loss": running, "best": best, "best_step": best_step,
            "stale": stale, "history": history, "seconds": time.perf_counter() - start, "finished": finished,
            "expert_use": expert_use.state(), "self_pretrain": pretrained,
        }, model=model, optimizer=optimizer, scheduler=scheduler, device=device, ema=ema)
        saved_step = step

    def stop_diverged(what: str, at: int, loss: float | None = None) -> TrainingDiverged:
        """Record a divergence at step ``at`` (counted from 1) in run.json; return the error to raise."""
        bar.close()
        record({"status": "diverged", "diverged": {"step": at, "loss": None if loss is None else str(loss),
                                                   "last_checkpoint_step": best_step or None}})
        return diverged(what, out / "checkpoint", best_step, saved_step, which="the best, ")

    def validate(epoch: int, batch: int, final: bool) -> bool:
        """Score val, keep the best checkpoint, save the state; True when training should stop early."""
        nonlocal best, best_step, stale
        if not weights_finite(model):
            raise stop_diverged(f"the weights are not finite after step {step}", step)
        scored = ema.model if ema is not None else model
        scores = evaluate_split(scored, val_loader, device, source=f"the model fine-tuned into {out}")
        model.train()
        if cfg.freeze_backbone:
            model.lm.eval()
        value = scores.get(metric, math.nan)
        better = value < best if lower_is_better else value > best
        if better or best_step == 0:
            best, best_step, stale = value, step, 0
            with atomic_path(out / "checkpoint") as tmp:
                scored.save_pretrained(tmp)
        else:
            stale += 1
        elapsed = time.perf_counter() - start
        fraction = epoch + batch / per_epoch
        experts = expert_use.row()
        history.append({"step": step, "epoch": round(fraction, 3), "train_loss": running,
                        **{f"val_{m}": scores.get(m, math.nan) for m in columns}, **experts,
                        "seconds": round(elapsed, 1)})
        cells = [str(step), f"{fraction:.3f}", f"{running:.5f}", *(f"{scores.get(m, math.nan):.5f}" for m in columns),
                 *(f"{v:.4f}" for v in experts.values()), f"{scheduler.get_last_lr()[0]:.3g}", f"{elapsed:.1f}"]
        log_lines.append("\t".join(cells) + "\n")
        with atomic_path(log_path) as tmp:  # rewritten whole (a few lines), so it always matches the checkpoint
            tmp.write_text("".join(log_lines))
        stop = cfg.patience is not None and stale >= cfg.patience
        save_state(epoch, batch, final or stop)  # last: a kill before it resumes from the previous state
        return stop

    def record(status: dict) -> None:
        resolved = dataclasses.replace(cfg, init_seed=_init_seed(cfg),  # the numbers used, not None
                                       patch_size=task.patch_size or 1,
                                       frontend=task.frontend if cfg.modality == "audio" else cfg.frontend,
                                       pooling=task.pooling, metric=metric, class_weights=weights_spec)
        # The backbone actually trained: with init_from, d_model etc. in the config above are not its own.
        moe = {"expert_use": expert_use.record()} if expert_use else {}
        write_run_record(out, resolved, {**status, "warnings": list(warned), **({"fold": fold} if fold else {}),
                                         "task": task.to_dict(), "self_pretrain": pretrained,
                                         "backbone": model.config.to_dict(),
                                         **moe, "history": history})

    bar = progress(total=total, initial=step, desc="finetune", unit="step")
    if saved is not None:  # last, so that no draw while setting up moves a restored stream
        saved.restore(optimizer=optimizer, scheduler=scheduler, device=device, ema=ema)
    model.train()
    if cfg.freeze_backbone:
        model.lm.eval()
    stop = position["finished"]
    first_epoch, first_batch = position["epoch"], position["batch"]
    watch = TimeCapWatch(warned, deadline, total, cfg.max_minutes)  # the --max-minutes warnings
    with StopSignals() as signals:
        for epoch in range(first_epoch, cfg.epochs):
            if stop:
                break
            skip = first_batch if epoch == first_epoch else 0  # batches of this epoch trained before a resume
            train_loader.sampler.set_epoch(epoch, skip * cfg.batch_size)
            if hasattr(train_loader.dataset, "set_epoch"):
                train_loader.dataset.set_epoch(epoch)
            for i, batch in enumerate(train_loader, start=skip):
                with autocast(device):
                    logits = model(**model_inputs(batch, device))
                loss = classification_loss(logits, batch["targets"].to(device), task.problem_type, weights)
                aux = expert_use.loss()  # MoE load balancing (0.0 without MoE layers or with them frozen)
                value = loss.item()
                if not math.isfinite(value + expert_use.last):
                    raise stop_diverged(f"the loss is {value} at step {step + 1}", step + 1, value)
                optimizer.zero_grad(set_to_none=True)
                (loss + aux).backward()
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                step += 1
                watch.step(step)
                running = value if math.isnan(running) else 0.95 * running + 0.05 * value
                bar.update(1)
                bar.set_postfix(loss=f"{running:.3f}", **{f"val_{metric}": f"{best:.3f}"})
                out_of_time = deadline is not None and time.perf_counter() > deadline
                end_of_epoch = i == per_epoch - 1
                due = step % cfg.val_every == 0 if cfg.val_every else end_of_epoch
                final = out_of_time or (end_of_epoch and epoch == cfg.epochs - 1)
                if due or final:
                    stop = validate(epoch, i + 1, final)
                stop = stop or out_of_time
                if signals.signum is not None and not (stop or final):
                    if saved_step != step:
                        save_state(epoch, i + 1, False)
                    name = signal.Signals(signals.signum).name
                    bar.close()
                    record({"status": "interrupted", "interrupted": {"signal": name, "step": step,
                                                                     "trainer_state": str(state_dir)}})
                    raise stop_for_signal(signals.signum, f"interrupted by {name} at step {step} of {total}: the "
                                          f"training state is saved in {state_dir}; continue with the same command "
                                          "and --resume")
                if stop:
                    break
    bar.close()
    watch.finish(step)

    test_metrics, test_path, test_notes = None, None, []
    if not splits["test"]:  # an earlier run's (only there with --overwrite) would not match this checkpoint
        (out / "test_predictions.tsv").unlink(missing_ok=True)
    else:
        best_model = load_classifier(out / "checkpoint", device, impl=cfg.impl)
        kept: list = []
        test_path = out / "test_predictions.tsv"
        write_predictions(test_path, best_model, test_loader, device, keep=kept,
                          source=f"checkpoint {out / 'checkpoint'}")
        test_metrics = compute_metrics(cat_batches([k[1].cpu() for k in kept]), cat_batches([k[2].cpu() for k in kept]),
                                       cat_batches([k[0]["targets"] for k in kept]), task, test_notes)
    base = None
    if cfg.baseline:
        from seqssm.pipelines.classical import baseline_on_split  # scikit-learn's features: only when asked

        base = baseline_on_split(splits, cfg.modality, rate, metric, out)
    seconds = time.perf_counter() - start
    sizes = {name: len(items) for name, items in splits.items()}
    result = FinetuneResult(checkpoint=out / "checkpoint", metric=metric, best_value=best, best_step=best_step,
                            steps=step, seconds=seconds, sizes=sizes, test_metrics=test_metrics,
                            test_predictions=test_path, history=history, test_notes=test_notes, baseline=base,
                            warnings=list(warned), self_pretrain=pretrained)
    record({"status": "complete", "result": {
        "metric": metric, "best_value": best, "best_step": best_step, "steps": step, "seconds": round(seconds, 1),
        "sizes": sizes, "test_metrics": test_metrics, "test_notes": test_notes, "baseline": base}})
    return result
