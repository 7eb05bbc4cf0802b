"""`torchrun` data-parallel pretraining on the CPU (gloo) equals one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from seqssm.data import lambda_phage_fasta
from seqssm.models import load_model

SEQSSM = str(Path(sys.executable).parent / "seqssm")
ARGS = ["--steps", "4", "--val-every", "4", "--window", "48", "--d-model", "16", "--n-layer", "1",
        "--d-state", "4", "--val-windows", "4", "--lr", "1e-2", "--warmup-steps", "1", "--device", "cpu"]


def test_two_ranks_match_one_process_with_the_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fasta = str(lambda_phage_fasta())
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", SEQSSM, "pretrain",
         fasta, "--out", str(tmp_path / "ddp"), "--batch-size", "3", *ARGS],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert ddp.stdout.count("validation:") == 1  # only rank 0 reports
    single = subprocess.run([SEQSSM, "pretrain", fasta, "--out", str(tmp_path / "one"), "--batch-size", "6", *ARGS],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]

    a = load_model(tmp_path / "ddp" / "checkpoint").state_dict()
    b = load_model(tmp_path / "one" / "checkpoint").state_dict()
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
