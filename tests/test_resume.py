"""`--resume`: a run killed (SIGKILL) or stopped (SIGTERM) and resumed ends bit for bit where an uninterrupted
run ends: weights, optimiser state, RNG streams, the kept checkpoint, the log (appended) and the test
predictions; a NaN loss stops a run with one line naming the step and the last good checkpoint.

Every run is a real `seqssm` process on the CPU with one thread, so the parts and the reference compute alike.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seqssm.data import lambda_phage_fasta
from seqssm.errors import InputError
from seqssm.pipelines import finetune as finetune_module
from seqssm.pipelines import objectives as objectives_module
from seqssm.pipelines.checkpointing import JSON_NAME, STATE_DIR, TENSORS_NAME, TrainingDiverged, resume_log
from seqssm.pipelines.finetune import FinetuneConfig, finetune
from seqssm.pipelines.pretrain import PretrainConfig, pretrain

SEQSSM = str(Path(sys.executable).parent / "seqssm")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PRETRAIN_STEPS = 60
# A masked LM: its masks come from the pipeline's own torch.Generator, one more stream to restore.
PRETRAIN = ["--steps", str(PRETRAIN_STEPS), "--val-every", "5", "--window", "64", "--batch-size", "4",
            "--objective", "mlm", "--bidirectional", "--d-model", "16", "--n-layer", "2", "--d-state", "4",
            "--val-windows", "4", "--lr", "1e-2", "--warmup-steps", "2", "--device", "cpu"]
# 114 training rows in batches of 8: 15 steps an epoch (the last one short), 45 in all.
FINETUNE = ["--d-model", "16", "--n-layer", "2", "--d-state", "4", "--expand", "1", "--epochs", "3",
            "--batch-size", "8", "--val-every", "3", "--warmup-steps", "2", "--device", "cpu", "--impl", "chunked",
            "--rc-augment", "--dropout", "0.2", "--ema", "0.9"]


def launch(tmp_path: Path, name: str, *args) -> subprocess.Popen:
    """A `seqssm` process whose output goes to files (a pipe nobody reads could fill up and stall it)."""
    stdout, stderr = (open(tmp_path / f"{name}.{s}", "w") for s in ("out", "err"))
    proc = subprocess.Popen([SEQSSM, *map(str, args)], stdout=stdout, stderr=stderr, env=ENV, cwd=tmp_path)
    proc.log = tmp_path / f"{name}.err"
    return proc


def finished(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    rc = proc.wait(timeout)
    return rc, proc.log.read_text()


def state_step(out: Path) -> int | None:
    """The step of the saved training state, None while there is none (or during its swap)."""
    try:
        return json.loads((out / STATE_DIR / JSON_NAME).read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for_state(out: Path, proc: subprocess.Popen, beyond: int = 0, timeout: float = 120) -> int:
    """Poll until ``proc`` has saved a state past step ``beyond``; fails if it ends first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        step = state_step(out)
        if step is not None and step > beyond:
            return step
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit code {proc.returncode}) before saving a state past step {beyond}:\n"
                        + proc.log.read_text()[-2000:])
        time.sleep(0.005)
    pytest.fail(f"no training state past step {beyond} after {timeout} s")


def log_rows(out: Path) -> list[list[str]]:
    """train_log.tsv without its wall-clock column."""
    return [line.split("\t")[:-1] for line in (out / "train_log.tsv").read_text().splitlines()]


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    unequal = [name for name in a if not torch.equal(a[name], b[name])]
    assert not unequal, f"{what}: {unequal[:5]} differ"


def kill_stop_and_resume(tmp_path: Path, command: str, data: str, args: list[str], total: int) -> tuple[Path, Path]:
    """The reference run beside a run that is SIGKILLed after its first saved state, resumed, stopped by
    SIGTERM, and resumed to the end. Returns (reference folder, resumed folder)."""
    ref_out, out = tmp_path / "reference", tmp_path / "run"
    reference = launch(tmp_path, "reference", command, data, "--out", ref_out, *args)
    first = launch(tmp_path, "first", command, data, "--out", out, *args)
    killed_at = wait_for_state(out, first)
    first.kill()
    assert finished(first)[0] == -signal.SIGKILL
    assert killed_at < total, "the first part must stop mid-run"
    log_after_kill = (out / "train_log.tsv").read_text().splitlines()

    second = launch(tmp_path, "second", command, data, "--out", out, *args, "--resume")
    wait_for_state(out, second, beyond=killed_at)  # it got going: SIGTERM now stops it at a step boundary
    second.send_signal(signal.SIGTERM)
    rc, err = finished(second)
    stopped_at = state_step(out)
    # Documented: SIGTERM saves the state and exits with 128 + 15, the code the signal itself gives.
    assert rc == 143, err[-2000:]
    assert f"interrupted by SIGTERM at step {stopped_at} of {total}" in err and "--resume" in err
    assert "Traceback" not in err
    assert killed_at < stopped_at < total
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert record["interrupted"]["step"] == stopped_at and record["interrupted"]["signal"] == "SIGTERM"

    rc, err = finished(launch(tmp_path, "third", command, data, "--out", out, *args, "--resume"))
    assert rc == 0, err[-2000:]
    rc, err = finished(reference)
    assert rc == 0, err[-2000:]

    # Bit for bit: the weights trained (and the average), every optimiser tensor, every RNG stream.
    assert state_step(out) == state_step(ref_out) == total
    assert_same_tensors(load_file(out / STATE_DIR / TENSORS_NAME), load_file(ref_out / STATE_DIR / TENSORS_NAME),
                        "training state")
    assert_same_tensors(load_file(out / "checkpoint" / "model.safetensors"),
                        load_file(ref_out / "checkpoint" / "model.safetensors"), "checkpoint")
    # The log was appended to: the first part's rows are there as it wrote them (wall clock included), and
    # every step once, with the reference's numbers.
    final_log = (out / "train_log.tsv").read_text().splitlines()
    assert final_log[:len(log_after_kill)] == log_after_kill
    steps = [row[0] for row in log_rows(out)[1:]]
    assert len(steps) == len(set(steps))
    assert log_rows(out) == log_rows(ref_out)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert not [p.name for p in out.iterdir() if p.name.endswith((".tmp", ".old"))]
    return ref_out, out


def test_pretrain_killed_and_stopped_resumes_bit_for_bit(tmp_path):
    kill_stop_and_resume(tmp_path, "pretrain", str(lambda_phage_fasta()), PRETRAIN, PRETRAIN_STEPS)


def test_finetune_killed_and_stopped_resumes_bit_for_bit(tmp_path, shared_data):
    # A real labelled table, every 40th row of the E. coli promoter benchmark (143 rows, both classes).
    lines = (shared_data / "labelled" / "ecoli_promoters.tsv").read_text().splitlines()
    table = tmp_path / "promoters.tsv"
    table.write_text("\n".join(lines[:1] + lines[40::40]) + "\n")
    ref_out, out = kill_stop_and_resume(tmp_path, "finetune", str(table), FINETUNE, 45)
    assert (out / "test_predictions.tsv").read_bytes() == (ref_out / "test_predictions.tsv").read_bytes()
    assert_same_tensors(load_file(out / "checkpoint" / "head.safetensors"),
                        load_file(ref_out / "checkpoint" / "head.safetensors"), "kept head")


def test_nan_loss_stops_with_one_line_exit_code_2_and_a_record(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([SEQSSM, "pretrain", str(lambda_phage_fasta()), "--out", str(out), *PRETRAIN,
                           "--lr", "1e30", "--warmup-steps", "0"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("warning: ")]  # 60 steps
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("seqssm: error: training diverged: the loss is nan at step ")
    assert "no checkpoint was saved before it" in lines[0] and "--lr" in lines[0]
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "diverged" and record["diverged"]["last_checkpoint_step"] is None
    assert f"at step {record['diverged']['step']};" in lines[0]


TINY = dict(window=64, batch_size=4, val_windows=4, lr=1e-2, warmup_steps=1, d_model=16, n_layer=1, d_state=4,
            device="cpu")


def test_nan_after_a_checkpoint_names_it(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = objectives_module.causal_lm_loss  # pretrain's Objective calls it there

    def poisoned(model, ids, *args, **kwargs):  # the 7th training step's loss is NaN (validation is in eval mode)
        calls["n"] += model.training
        loss = real(model, ids, *args, **kwargs)
        return loss * float("nan") if model.training and calls["n"] == 7 else loss

    monkeypatch.setattr(objectives_module, "causal_lm_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as err:
        pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(out), steps=20, val_every=5, **TINY))
    assert "the loss is nan at step 7" in str(err.value)
    assert f"the last good checkpoint is {out / 'checkpoint'} (step 5)" in str(err.value)
    record = json.loads((out / "run.json").read_text())
    assert record["diverged"] == {"step": 7, "loss": "nan", "last_checkpoint_step": 5}
    assert [h["step"] for h in record["history"]] == [5]
    assert state_step(out) == 5  # the state on disk is the last good one


def test_resume_needs_a_state_and_the_same_options(tmp_path):
    data, out = str(lambda_phage_fasta()), tmp_path / "run"
    with pytest.raises(InputError, match="holds no saved training state"):
        pretrain(PretrainConfig(data=data, out=str(out), steps=2, val_every=2, resume=True, **TINY))
    done = pretrain(PretrainConfig(data=data, out=str(out), steps=2, val_every=2, **TINY))
    with pytest.raises(InputError, match=r"--lr 0\.01 then, 0\.02 now"):
        pretrain(PretrainConfig(data=data, out=str(out), steps=2, val_every=2, resume=True,
                                **{**TINY, "lr": 2e-2}))
    weights = load_file(out / "checkpoint" / "model.safetensors")
    # A finished run resumes to its end at once: nothing is trained again, the record is written again.
    again = pretrain(PretrainConfig(data=data, out=str(out), steps=2, val_every=2, resume=True, **TINY))
    assert again.steps == done.steps == 2 and again.val_bits_per_token == done.val_bits_per_token
    assert_same_tensors(load_file(out / "checkpoint" / "model.safetensors"), weights, "checkpoint")
    assert len(log_rows(out)) == 2
    # Another spelling of the same data file is the same option.
    pretrain(PretrainConfig(data=os.path.relpath(data), out=str(out), steps=2, val_every=2, resume=True, **TINY))


def test_resumed_log_drops_the_rows_written_after_the_saved_state(tmp_path):
    log, header = tmp_path / "train_log.tsv", "step\tloss\n"
    log.write_text(header + "5\t1.0\n10\t0.9\n15\t0.8")  # killed after the row of 15, before its state
    assert resume_log(log, header, 10) == [header, "5\t1.0\n", "10\t0.9\n"]
    assert resume_log(tmp_path / "absent.tsv", header, 10) == [header]
    with pytest.raises(InputError, match="its header differs"):
        resume_log(log, "step\tother\n", 10)


def test_torchrun_stopped_by_sigterm_resumes_bit_for_bit(tmp_path):
    """Two gloo ranks: torchrun passes SIGTERM on to both, they agree on the step, rank 0 saves; both ranks
    restore the one state, and the resumed run equals an uninterrupted one."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", SEQSSM]
    args = ["pretrain", str(lambda_phage_fasta()), *PRETRAIN, "--steps", "20"]

    def run(name: str, *extra) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.err", "w")
        proc = subprocess.Popen([*torchrun, *args, "--out", str(tmp_path / name), *extra], stdout=log,
                                stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path)
        proc.log = tmp_path / f"{name}.err"
        return proc

    reference, part = run("reference"), run("run")
    wait_for_state(tmp_path / "run", part)
    part.send_signal(signal.SIGTERM)
    _, err = finished(part)
    assert err.count("seqssm: interrupted by SIGTERM at step") == 1, err[-3000:]  # rank 0 only
    stopped = state_step(tmp_path / "run")
    assert stopped < 20
    rc, err = finished(run("run", "--resume"))
    assert rc == 0, err[-3000:]
    assert finished(reference)[0] == 0
    assert_same_tensors(load_file(tmp_path / "run" / STATE_DIR / TENSORS_NAME),
                        load_file(tmp_path / "reference" / STATE_DIR / TENSORS_NAME), "training state")
    assert log_rows(tmp_path / "run") == log_rows(tmp_path / "reference")


def test_finetune_nan_loss_or_weights_name_the_kept_checkpoint(tmp_path, monkeypatch):
    rng = random.Random(0)
    rows = ["sequence\tlabel\tid"] + [f"{''.join(rng.choice('ACGT') for _ in range(20))}\t{i % 2}\ts{i}"
                                      for i in range(40)]
    (tmp_path / "t.tsv").write_text("\n".join(rows) + "\n")
    kw = dict(data=str(tmp_path / "t.tsv"), d_model=8, n_layer=1, d_state=4, batch_size=8, warmup_steps=0,
              device="cpu", impl="chunked")
    real = finetune_module.classification_loss
    calls = {"n": 0}

    class NaNGradient(torch.autograd.Function):
        """A finite loss whose gradient is NaN: the weights, not the loss, go bad."""

        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    def bad_gradient(logits, targets, *args):  # the 2nd training step (validation's logits need no gradient)
        calls["n"] += logits.requires_grad
        loss = real(logits, targets, *args)
        return NaNGradient.apply(loss) if logits.requires_grad and calls["n"] == 2 else loss

    monkeypatch.setattr(finetune_module, "classification_loss", bad_gradient)
    out = tmp_path / "weights"
    with pytest.raises(TrainingDiverged, match=r"the weights are not finite after step 2; the last good checkpoint "
                                               r"is .* \(the best, step 1\), the last saved training state"):
        finetune(FinetuneConfig(out=str(out), val_every=1, **kw))
    assert json.loads((out / "run.json").read_text())["diverged"] == {"step": 2, "loss": None,
                                                                      "last_checkpoint_step": 1}
    assert state_step(out) == 1  # the bad weights were not saved

    def poisoned(logits, targets, *args):  # the loss of the 3rd training step is inf
        calls["n"] += logits.requires_grad
        return real(logits, targets, *args) * (float("inf") if logits.requires_grad and calls["n"] == 3 else 1.0)

    calls["n"] = 0
    monkeypatch.setattr(finetune_module, "classification_loss", poisoned)
    out = tmp_path / "loss"
    with pytest.raises(TrainingDiverged) as err:
        finetune(FinetuneConfig(out=str(out), val_every=2, **kw))
    assert str(err.value).startswith(
        f"training diverged: the loss is inf at step 3; the last good checkpoint is {out / 'checkpoint'} (the best, "
        f"step 2), the last saved training state {out / STATE_DIR} (step 2); lower --lr")
    assert json.loads((out / "run.json").read_text())["diverged"] == {"step": 3, "loss": "inf",
                                                                      "last_checkpoint_step": 2}
