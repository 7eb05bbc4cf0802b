"""The pretraining loop: length warm-up and memory-capped steps train on the same tokens as plain steps."""

from __future__ import annotations

import pytest
import torch

from seqssm.data import lambda_phage_fasta
from seqssm.models import load_model
from seqssm.pipelines.pretrain import PretrainConfig, pretrain

TINY = dict(window=64, batch_size=4, steps=3, val_every=3, val_windows=4, lr=1e-2, warmup_steps=1, d_model=16,
            n_layer=1, d_state=4, device="cpu")


def _weights(out) -> dict:
    return load_model(out / "checkpoint").state_dict()


@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_memory_capped_steps_equal_plain_steps(tmp_path, objective):
    extra = {"objective": objective, "bidirectional": objective == "mlm"}
    plain = pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "a"), **TINY, **extra))
    # 32 tokens per forward/backward: each 64-token window goes through the chunked exact backward in two
    # chunks, the batch through gradient accumulation; the gradients must be those of the plain step.
    capped = pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "b"), **TINY, **extra,
                                     max_tokens_per_micro_batch=32))
    assert plain.steps == capped.steps == 3
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=2e-5, msg=name)
    assert abs(plain.val_bits_per_token - capped.val_bits_per_token) < 1e-3


def test_length_warmup_trains_and_differs_from_plain(tmp_path):
    pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "a"), **TINY))
    warm = pretrain(PretrainConfig(data=str(lambda_phage_fasta()), out=str(tmp_path / "b"), **TINY,
                                   length_warmup_steps=2, min_window=16))
    assert warm.steps == 3 and warm.val_bits_per_token == warm.val_bits_per_token  # not NaN
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert any(not torch.allclose(a[n], b[n]) for n in a), "shorter early pieces must change the training"
