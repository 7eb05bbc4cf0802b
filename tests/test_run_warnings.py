"""Warnings of `seqssm finetune`: too few optimiser steps (from --epochs × rows / --batch-size, or a --max-minutes
cap that cuts the run short) and audio far above the rate the recipe or the --init-from backbone expects. Each is
one line on stderr and an entry of run.json's "warnings", and is absent when it does not apply."""

from __future__ import annotations

import json
from types import SimpleNamespace

from tiny_data import motif_table, tone_clips

from seqssm.pipelines import train_utils
from seqssm.pipelines.finetune import FinetuneConfig, _rate_warning, finetune
from seqssm.pipelines.train_utils import (
    MIN_STEPS,
    few_steps_warning,
    sample_rate_warning,
    time_cap_hit_warning,
    time_cap_warning,
)

TINY = {"d_model": 16, "n_layer": 1, "d_state": 4, "expand": 1, "device": "cpu", "impl": "chunked",
        "warmup_steps": 2}


def _table(path, n):
    """Class 1 rows carry GGGGGG; 16-20 bases."""
    return motif_table(path, n, (16, 20))


def _wavs(folder, rate, per_class=4):
    """Tiny clips at ``rate``: class 'lo' a 300 Hz tone, 'hi' a 2 kHz tone, 0.01-0.02 s."""
    return tone_clips(folder, (rate // 100, rate // 50), rate, per_class)


def _run(tmp_path, data, name, **kw):
    cfg = FinetuneConfig(data=str(data), out=str(tmp_path / name), **{**TINY, "epochs": 2, "batch_size": 8, **kw})
    result = finetune(cfg)
    return result, json.loads((tmp_path / name / "run.json").read_text())["warnings"]


def _lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]


# ---------------------------------------------------------------- the decisions


def test_few_steps_decision():
    message = few_steps_warning(99, 33, epochs=3, batch_size=1)
    assert "only 99 optimiser steps" in message and "--epochs" in message and "--batch-size" in message
    assert "3 epochs x 33 batches of 1 from 33 training rows" in message
    assert few_steps_warning(MIN_STEPS, 100, epochs=1, batch_size=1) is None
    assert few_steps_warning(10, 100, epochs=1, batch_size=10, minimum=10) is None


def test_time_cap_decisions():
    # 10 steps done at 1 s a step with 30 s left: about 40 of 1000 steps.
    message = time_cap_warning(10, 1.0, 30.0, 1000, 0.7)
    assert "--max-minutes 0.7" in message and "about 40 of its 1000" in message and "raise --max-minutes" in message
    assert time_cap_warning(10, 1.0, 30.0, 40, 0.7) is None  # the cap leaves time for every step
    assert time_cap_warning(10, 0.1, 30.0, 1000, 0.7) is None  # 310 steps: enough
    assert time_cap_warning(10, 1.0, -5.0, 1000, 0.7) is not None  # already past the cap
    assert "after 7 of its 500" in time_cap_hit_warning(7, 500, 0.1)
    assert time_cap_hit_warning(7, 7, 0.1) is None and time_cap_hit_warning(MIN_STEPS, 500, 1) is None


def test_sample_rate_decisions():
    message = sample_rate_warning(44100, 8000, "the 8000 Hz the audio recipe is sized for")
    assert "44100 Hz, 5.5x the 8000 Hz" in message and "--sample-rate 8000" in message
    assert sample_rate_warning(16000, 8000, "x") is None  # 2x: not "far above"
    assert sample_rate_warning(8000, 8000, "x") is None and sample_rate_warning(None, 8000, "x") is None
    assert sample_rate_warning(4000, 8000, "x") is None  # below: fewer tokens, not warned


def test_rate_warning_takes_the_init_from_backbones_rate():
    cfg = FinetuneConfig(data="clips", out="run", modality="audio", init_from="backbone")
    model = SimpleNamespace(lm=SimpleNamespace(config=SimpleNamespace(sample_rate=16000)))
    assert "--init-from backbone" in _rate_warning(cfg, model, 44100)
    assert "--sample-rate 16000" in _rate_warning(cfg, model, 44100)
    assert _rate_warning(cfg, model, 22050) is None  # 1.4x the backbone's, though 2.8x the recipe's
    fresh = FinetuneConfig(data="clips", out="run", modality="audio", frontend="raw")
    model.task = SimpleNamespace(patch_size=16)
    assert "--sample-rate 8000" in _rate_warning(fresh, model, 22050)
    # The default log-mel front end hops 10 ms at any rate: no more tokens at 22 kHz than at 8 kHz.
    assert _rate_warning(FinetuneConfig(data="clips", out="run", modality="audio"), model, 22050) is None
    assert _rate_warning(FinetuneConfig(data="t.tsv", out="run", modality="dna"), model, None) is None


# ---------------------------------------------------------------- end to end


def test_short_run_warns_on_stderr_and_in_run_json(tmp_path, capsys):
    result, warnings = _run(tmp_path, _table(tmp_path / "t.tsv", 32), "short")
    lines = _lines(capsys)
    assert len(lines) == 1 and f"only {result.steps} optimiser steps" in lines[0] and "--epochs" in lines[0]
    assert warnings == [lines[0].removeprefix("warning: ")] == result.warnings


def test_long_enough_run_does_not_warn(tmp_path, capsys, monkeypatch):
    # The threshold (MIN_STEPS) is checked above; lowered here so that a "long enough" run stays tiny.
    monkeypatch.setattr(train_utils, "MIN_STEPS", 6)
    result, warnings = _run(tmp_path, _table(tmp_path / "t.tsv", 32), "long", max_minutes=10)
    assert result.steps >= 6  # 2 epochs x 4 batches of 8 from 26 train rows
    assert warnings == [] and _lines(capsys) == []


def test_time_cap_that_cuts_the_run_warns(tmp_path, capsys):
    result, warnings = _run(tmp_path, _table(tmp_path / "t.tsv", 24), "capped", batch_size=1, epochs=6,
                            max_minutes=1e-6)
    assert result.steps < MIN_STEPS
    assert any(f"stopped this run after {result.steps} of its" in w and "--max-minutes" in w for w in warnings)
    assert set(warnings) == {line.removeprefix("warning: ") for line in _lines(capsys)}


def test_audio_far_above_the_recipe_rate_warns_and_resampled_does_not(tmp_path, capsys):
    clips = _wavs(tmp_path / "clips", 44100)
    common = {"modality": "audio", "patch_size": 8, "clip_seconds": 0.01, "epochs": 1, "split": (0.5, 0.25, 0.25)}
    _, warnings = _run(tmp_path, clips, "raw", **common)
    rate = [w for w in warnings if "Hz" in w]
    assert len(rate) == 1 and "44100 Hz, 5.5x the 8000 Hz" in rate[0] and "--sample-rate 8000" in rate[0]
    assert rate[0] in " ".join(_lines(capsys))
    _, warnings = _run(tmp_path, clips, "resampled", sample_rate=8000, **common)
    assert not any("Hz" in w for w in warnings) and not any("Hz" in line for line in _lines(capsys))


def test_time_cap_is_projected_from_the_pace_of_the_first_steps(tmp_path, capsys, monkeypatch):
    job = train_utils  # the --max-minutes watch finetune and pretrain share (TimeCapWatch)
    calls = []

    def spy(step, seconds_per_step, seconds_left, total, max_minutes):
        calls.append((step, seconds_per_step, seconds_left, total, max_minutes))
        return time_cap_warning(step, seconds_per_step, seconds_left, total, max_minutes, minimum=10**9)

    monkeypatch.setattr(job, "TIME_CHECK_STEPS", 2)
    monkeypatch.setattr(job, "time_cap_warning", spy)
    monkeypatch.setattr(train_utils, "MIN_STEPS", 6)  # no few-steps warning
    result, warnings = _run(tmp_path, _table(tmp_path / "t.tsv", 32), "paced", max_minutes=10)
    assert len(calls) == 1 and calls[0][0] == 3 and calls[0][3] == result.steps and calls[0][4] == 10
    assert 0 < calls[0][1] < 60 and 0 < calls[0][2] <= 600
    # With the threshold lifted, the projection (thousands of steps in 10 minutes) still exceeds the 8 steps.
    assert warnings == [] and _lines(capsys) == []
    calls.clear()
    monkeypatch.setattr(job, "time_cap_warning", lambda *a: spy(a[0], a[1], 0.0, *a[3:]))  # as if out of time
    _, warnings = _run(tmp_path, _table(tmp_path / "t.tsv", 32), "late", max_minutes=10)
    assert len(warnings) == 1 and "will likely stop this run after about 3 of its" in warnings[0]
    assert _lines(capsys) == [f"warning: {warnings[0]}"]


# ---------------------------------------------------------------- pretrain (the same decisions and watch)


def _pretrain(tmp_path, name, **kw):
    from seqssm.data import lambda_phage_fasta
    from seqssm.pipelines.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / name), **{
        "window": 32, "batch_size": 2, "steps": 3, "val_every": 1000, "val_windows": 2, "d_model": 16, "n_layer": 1,
        "d_state": 4, "warmup_steps": 1, "device": "cpu", "impl": "chunked", **kw})
    result = pretrain(cfg)
    return result, json.loads((tmp_path / name / "run.json").read_text())["warnings"]


def test_pretrain_few_steps_decision():
    message = few_steps_warning(40)
    assert message == "this run gets only 40 optimiser steps (--steps 40), fewer than 100: raise --steps"
    assert few_steps_warning(MIN_STEPS) is None
    # Pretrain's schedule decays over --steps, so any cut of them is worth a line (minimum=total), even one
    # that leaves more than MIN_STEPS; finetune's follows the clock, and only a cut below MIN_STEPS is.
    message = time_cap_warning(10, 1.0, 300.0, 1000, 5, minimum=1000)
    assert "after about 310 of its 1000" in message and "lower --steps" in message
    assert time_cap_warning(10, 1.0, 300.0, 1000, 5) is None
    assert time_cap_warning(10, 1.0, 990.0, 1000, 5, minimum=1000) is None  # every step fits
    assert "before its learning rate decayed" in time_cap_hit_warning(500, 1000, 5, minimum=1000)
    assert time_cap_hit_warning(500, 1000, 5) is None


def test_short_pretrain_warns_on_stderr_and_in_run_json(tmp_path, capsys):
    result, warnings = _pretrain(tmp_path, "short")
    lines = _lines(capsys)
    assert lines == ["warning: this run gets only 3 optimiser steps (--steps 3), fewer than 100: raise --steps"]
    assert warnings == [lines[0].removeprefix("warning: ")] == result.warnings


def test_long_enough_pretrain_does_not_warn(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_utils, "MIN_STEPS", 3)
    result, warnings = _pretrain(tmp_path, "long", max_minutes=10)
    assert result.steps == 3 and warnings == [] and _lines(capsys) == []


def test_time_cap_that_cuts_a_pretrain_run_warns(tmp_path, capsys):
    result, warnings = _pretrain(tmp_path, "capped", steps=MIN_STEPS, max_minutes=1e-6)
    assert result.steps == 1  # the cap is past after the first step
    assert warnings == [f"--max-minutes 1e-06 stopped this run after 1 of its {MIN_STEPS} optimiser steps, before "
                        "its learning rate decayed: raise --max-minutes or lower --steps"]
    assert _lines(capsys) == [f"warning: {warnings[0]}"]


def test_pretrain_time_cap_is_projected_from_the_pace_of_the_first_steps(tmp_path, capsys, monkeypatch):
    calls = []

    def late(step, seconds_per_step, seconds_left, total, max_minutes, minimum):  # as if the cap were reached
        calls.append((step, seconds_per_step, seconds_left, total, max_minutes, minimum))
        return time_cap_warning(step, seconds_per_step, 0.0, total, max_minutes, minimum)

    monkeypatch.setattr(train_utils, "TIME_CHECK_STEPS", 2)
    monkeypatch.setattr(train_utils, "time_cap_warning", late)
    monkeypatch.setattr(train_utils, "MIN_STEPS", 4)  # 5 steps: no few-steps warning
    result, warnings = _pretrain(tmp_path, "paced", steps=5, max_minutes=10)
    assert result.steps == 5 and len(calls) == 1 and calls[0][0] == 3 and calls[0][3:] == (5, 10, 5)
    assert 0 < calls[0][1] < 60 and 0 < calls[0][2] <= 600
    assert warnings == ["--max-minutes 10 will likely stop this run after about 3 of its 5 optimiser steps "
                        f"({calls[0][1]:.2g} s a step), before its learning rate decayed: raise --max-minutes or "
                        "lower --steps"]
    assert _lines(capsys) == [f"warning: {warnings[0]}"]
