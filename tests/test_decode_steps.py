"""Mamba-2 and S4D decode steps: against the parallel forward, the Triton step of Mamba-2 against its PyTorch
reference step, the cached step constants after an optimizer step, and how many ops one step issues (standing
in for GPU time at batch 1; tests/op_count.py). Without CUDA the Triton tests rerun under TRITON_INTERPRET=1 in
a child pytest (tests/triton_harness.py)."""

from __future__ import annotations

import pytest
import torch
from op_count import step_ops
from triton_harness import DEVICE, interpreted

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
from seqssm.models.mamba2 import Mamba2Mixer
from seqssm.models.s4d import S4DMixer

VOCAB = 10
ARCHS = {"mamba2": {"mixer": "mamba2", "expand": 2, "headdim": 8},
         "s4d": {"mixer": "s4d"}}
# Ops of one layer step before the constants were cached and (Mamba-2) the Triton kernels taken: S4D 21,
# Mamba-2 32 (31 on the reference path); Mamba-1's Triton step is 7.
BOUND = 12


def _model(arch: str, impl: str) -> MambaLMHeadModel:
    torch.manual_seed(0)
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=VOCAB, d_state=8, **ARCHS[arch])
    model = MambaLMHeadModel(config, impl=impl)
    with torch.no_grad():  # off the structured init, so no term hides behind a 0 or a 1
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _optimizer_step(model: torch.nn.Module) -> None:
    """One SGD step with made-up gradients: every parameter changes in place (its ``_version``)."""
    g = torch.Generator().manual_seed(5)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g).to(p)
    torch.optim.SGD(model.parameters(), lr=0.05).step()


def _steps_vs_forward(model: MambaLMHeadModel, ref: MambaLMHeadModel, ids: torch.Tensor, prompt: int) -> None:
    """Prefill ``prompt`` tokens, step through the rest: each step's logits equal ``ref``'s parallel forward."""
    with torch.no_grad():
        full = ref(ids)
        cache = model.allocate_cache(ids.shape[0])
        model.prefill(ids[:, :prompt], cache)
        for t in range(prompt, ids.shape[1]):
            torch.testing.assert_close(model.step(ids[:, t], cache), full[:, t], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_steps_equal_the_parallel_forward_and_follow_an_optimizer_step(arch):
    model = _model(arch, "auto")
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
    _steps_vs_forward(model, model, ids, 3)
    _optimizer_step(model)  # the cached constants are stale now: the steps must see the new parameters
    _steps_vs_forward(model, model, ids, 3)


def test_s4d_step_ops():
    mixer = S4DMixer(d_model=16, d_state=8)
    count = step_ops(mixer, torch.randn(2, 16), mixer.allocate_state(2))
    assert count.total < BOUND, count.ops


def _mixer_steps(dtype: torch.dtype, d_conv: int, steps: int = 4):
    """A Triton and a reference Mamba-2 mixer with one set of weights, stepped from one random state: (the
    Triton mixer, its cache, the last input) after the outputs and states were compared."""
    torch.manual_seed(0)
    kw = {"d_model": 16, "d_state": 8, "headdim": 8, "ngroups": 2, "d_conv": d_conv, "device": DEVICE,
          "dtype": dtype}
    fast, ref = Mamba2Mixer(impl="triton", **kw), Mamba2Mixer(impl="ref", **kw)
    ref.load_state_dict(fast.state_dict())
    caches = [m.allocate_state(3, device=DEVICE, dtype=dtype) for m in (fast, ref)]
    # bf16: one rounding of y, z and the projections apart (the interpreter truncates, tests/triton_harness.py).
    tol = {"atol": 1e-5, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    with torch.no_grad():
        for name in ("conv_state", "ssm_state"):  # one random state in both
            state = torch.randn_like(getattr(caches[0], name))
            for c in caches:
                getattr(c, name).copy_(state)
        for _ in range(steps):
            u = torch.randn(3, 16, device=DEVICE, dtype=dtype)
            torch.testing.assert_close(fast.step(u, caches[0]), ref.step(u, caches[1]), **tol)
    torch.testing.assert_close(caches[0].conv_state, caches[1].conv_state, **tol)
    torch.testing.assert_close(caches[0].ssm_state, caches[1].ssm_state, **tol)
    return fast, caches[0], u


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mamba2_triton_step_equals_the_reference_step(dtype):
    fast, cache, u = _mixer_steps(dtype, d_conv=4)
    count = step_ops(fast, u, cache)
    assert count.total < BOUND, count.ops
    assert not any(name.startswith("aten::exp") or "softplus" in name for name in count.ops), count.ops


@interpreted
def test_mamba2_conv_wider_than_the_kernel_takes_the_reference_step():
    fast, cache, u = _mixer_steps(torch.float32, d_conv=5, steps=2)  # the conv update kernel takes W <= 4
    assert not any(name.startswith("triton:_selective") for name in step_ops(fast, u, cache).ops)


def test_s4d_step_on_a_strided_state():
    """A state that is no contiguous block (a view into a larger buffer) is advanced as a contiguous one."""
    torch.manual_seed(0)
    mixer = S4DMixer(d_model=8, d_state=4)
    dense = torch.randn(2, 8, 2, 2)
    strided = torch.zeros(2, 8, 2, 3)[..., :2].copy_(dense)  # the pair dim not unit-strided in memory
    caches = [mixer.allocate_state(2) for _ in range(2)]
    caches[0].ssm_state.copy_(dense)
    caches[1].ssm_state = strided
    with torch.no_grad():
        u = torch.randn(2, 8)
        torch.testing.assert_close(mixer.step(u, caches[1]), mixer.step(u, caches[0]))
    torch.testing.assert_close(strided, caches[0].ssm_state)


@interpreted
def test_mamba2_triton_decode_equals_the_forward_after_an_optimizer_step():
    fast, ref = _model("mamba2", "triton").to(DEVICE), _model("mamba2", "ref").to(DEVICE)
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    _steps_vs_forward(fast, ref, ids, 2)
    _optimizer_step(fast)
    ref.load_state_dict(fast.state_dict())
    _steps_vs_forward(fast, ref, ids, 2)
