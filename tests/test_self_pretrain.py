"""`seqssm finetune --self-pretrain-steps` (seqssm.pipelines.self_pretrain): the backbone's LM pretraining on the
task's own training rows before fine-tuning.

Checked: the rows it sees are exactly the training rows (never val or test, per fold with --folds), run.json
records what was done, the fine-tune starts from the changed backbone (and the same head), the objective
follows the backbone, and bad values are one clear line with exit code 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_data
import torch
from tiny_data import tone_clips

import seqssm.pipelines.finetune as finetune_module
import seqssm.pipelines.self_pretrain as sp
from seqssm.datasets.predictions import read_predictions
from seqssm.errors import InputError
from seqssm.pipelines.configs_train import parse_self_pretrain_steps
from seqssm.pipelines.finetune import FinetuneConfig, finetune

SEQSSM = str(Path(sys.executable).parent / "seqssm")
TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "expand": 1, "device": "cpu", "impl": "chunked",
        "warmup_steps": 2}


def motif_table(path, n=48, seed=0):
    """Class 1 sequences carry GGGGGG; lengths 15-30, so batches are padded."""
    return tiny_data.motif_table(path, n, (15, 30), seed)


def write_wavs(folder, per_class=4):
    """8 kHz clips of 0.02-0.05 s in class folders: 'lo' a 300 Hz tone, 'hi' a 2 kHz one."""
    return tone_clips(folder, (160, 400), per_class=per_class)


@pytest.fixture
def seen(monkeypatch):
    """The ids of the rows every self-pretraining got, one list per call; the training still runs."""
    calls: list[list[str]] = []
    real = sp.self_pretrain

    def spy(lm, items, **kw):
        calls.append([item.id for item in items])
        return real(lm, items, **kw)

    monkeypatch.setattr(sp, "self_pretrain", spy)
    return calls


@pytest.fixture
def start_state(monkeypatch):
    """The classifier's weights when fine-tuning builds its optimiser (after any self-pretraining)."""
    states: list[dict] = []
    real = finetune_module._optimizer

    def spy(cfg, model):
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(cfg, model)

    monkeypatch.setattr(finetune_module, "_optimizer", spy)
    return states


def run(tmp_path, data, name="run", **kw):
    return finetune(FinetuneConfig(data=str(data), out=str(tmp_path / name),
                                   **{**TINY, "epochs": 1, "batch_size": 8, **kw}))


def split_ids(table, seed=0, fractions=(0.8, 0.1, 0.1)):
    from seqssm.datasets.labelled import read_labelled_table
    from seqssm.datasets.tables import split_indices

    data = read_labelled_table(table)
    return [{data.ids[i] for i in part} for part in split_indices(len(data), fractions, seed, data.labels)]


def test_only_training_rows_reach_self_pretraining_and_run_json_records_it(tmp_path, seen):
    table = motif_table(tmp_path / "t.tsv", n=40)
    result = run(tmp_path, table, self_pretrain_steps=30, lr=5e-3)
    train, val, test = split_ids(table)
    assert len(seen) == 1 and set(seen[0]) == train and len(seen[0]) == len(train)
    assert not set(seen[0]) & (val | test)
    assert set(read_predictions(tmp_path / "run" / "test_predictions.tsv").ids) == test
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    done = record["self_pretrain"]
    assert done["steps"] == 30 and done["requested"] == 30 and done["objective"] == "mlm"
    assert done["rows"] == len(train) and done["ids_digest"] == sp._digest(sorted(train))
    # From an untrained model's ~ln 10 nats towards the base frequencies' ~ln 4.
    assert done["loss_before"] > 2.0 and done["loss_after"] < done["loss_before"] - 0.3
    assert record["config"]["self_pretrain_steps"] == 30 and result.self_pretrain == done


def test_self_pretraining_changes_the_backbone_the_fine_tune_starts_from(tmp_path, start_state):
    table = motif_table(tmp_path / "t.tsv", n=24)
    run(tmp_path, table, name="off", self_pretrain_steps=0)
    run(tmp_path, table, name="on", self_pretrain_steps=5)
    off, on = start_state
    assert set(off) == set(on)
    layers = [k for k in off if k.startswith("lm.backbone.layers.") and off[k].is_floating_point()]
    moved = [k for k in layers if not torch.equal(off[k], on[k])]
    assert len(moved) > 0.8 * len(layers), sorted(set(layers) - set(moved))
    assert any(not torch.equal(off[k], on[k]) for k in off if k.startswith("lm.backbone.embedding"))
    for key in ("head.weight", "head.bias"):  # the head is built first: the same draw either way
        assert torch.equal(off[key], on[key])
    record = json.loads((tmp_path / "off" / "run.json").read_text())
    assert record["self_pretrain"] == {"steps": 0, "requested": 0}


def test_causal_backbone_gets_next_token_objective_and_auto_records_reason(tmp_path, seen):
    table = motif_table(tmp_path / "t.tsv", n=24)
    run(tmp_path, table, name="clm", bidirectional=False, self_pretrain_steps=3)
    assert json.loads((tmp_path / "clm" / "run.json").read_text())["self_pretrain"]["objective"] == "clm"
    run(tmp_path, table, name="auto")
    auto = json.loads((tmp_path / "auto" / "run.json").read_text())["self_pretrain"]
    assert auto["requested"] == "auto" and "reason" in auto and auto["steps"] == sp.auto_steps(
        "dna", len(split_ids(table)[0]))[0]


def test_folds_self_pretrain_each_fold_on_its_own_training_rows(tmp_path, seen):
    table = motif_table(tmp_path / "t.tsv", n=30)
    run(tmp_path, table, folds=2, self_pretrain_steps=2, split=(0.8, 0.2, 0.0))
    assert len(seen) == 2
    for f, ids in enumerate(seen):
        fold = json.loads((tmp_path / "run" / f"fold_{f}" / "run.json").read_text())
        test_ids = set(read_predictions(tmp_path / "run" / f"fold_{f}" / "test_predictions.tsv").ids)
        assert not set(ids) & test_ids and fold["self_pretrain"]["rows"] == len(ids)
        assert fold["self_pretrain"]["ids_digest"] == sp._digest(ids)
    assert set(seen[0]) != set(seen[1])


def test_audio_self_pretraining_is_next_sample_and_needs_a_causal_backbone(tmp_path, seen):
    data = write_wavs(tmp_path / "clips", per_class=4)
    run(tmp_path, data, modality="audio", patch_size=8, clip_seconds=0.02, bidirectional=False,
        self_pretrain_steps=2, split=(0.5, 0.25, 0.25))
    done = json.loads((tmp_path / "run" / "run.json").read_text())["self_pretrain"]
    assert done["objective"] == "clm" and done["rows"] == len(seen[0]) == 4
    with pytest.raises(InputError, match="--no-bidirectional"):
        run(tmp_path, data, name="bi", modality="audio", patch_size=8, self_pretrain_steps=2)


def test_bad_self_pretrain_values(tmp_path):
    for bad in (-1, 1.5, True, "many"):
        with pytest.raises(InputError, match="--self-pretrain-steps"):
            FinetuneConfig(data="x", out="y", self_pretrain_steps=bad)
    assert parse_self_pretrain_steps(" AUTO ") == "auto" and parse_self_pretrain_steps("12") == 12
    with pytest.raises(InputError, match="--self-pretrain-steps"):
        parse_self_pretrain_steps("ten")
    proc = subprocess.run([SEQSSM, "finetune", "x.tsv", "--out", str(tmp_path / "o"), "--self-pretrain-steps",
                           "ten"], capture_output=True, text=True, env={**os.environ, "SEQSSM_PROGRESS": "0"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--self-pretrain-steps" in proc.stderr.strip().splitlines()[-1]


def test_max_minutes_caps_self_pretraining_at_a_third_of_the_budget(tmp_path):
    table = motif_table(tmp_path / "t.tsv", n=24)
    run(tmp_path, table, self_pretrain_steps=100000, max_minutes=0.003)  # 0.18 s: a third is 0.06 s
    done = json.loads((tmp_path / "run" / "run.json").read_text())["self_pretrain"]
    assert done["steps"] < 100000 and done["planned_steps"] == 100000 and done["stopped_by"] == "--max-minutes"
    assert done["seconds"] < 30
