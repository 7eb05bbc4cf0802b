"""Small-batch projections (kernels/gemv) and the fused decode pieces (the add + norm inside in_proj, x_proj's sum +
dt_proj + the state update) against their PyTorch references, and the decode step through them.

On a CUDA machine the kernels run compiled; without CUDA they run under Triton's interpreter at small sizes:
this module reruns itself in a child pytest with TRITON_INTERPRET=1 (tests/triton_harness.py) and each test
here reports its twin's outcome. Every fresh kernel output starts as NaN (POISON), so an element no program
wrote fails the comparison.
"""

from __future__ import annotations

import pytest
import torch
from triton_harness import DEVICE, ON_CUDA, PROXY, interpreted

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (N, K): the d_model 768 step's in_proj [3072, 768], x_proj [80, 1536], dt_proj [1536, 48] and out_proj
# [768, 1536] at 1/32 scale (x_proj's N kept: its short-N, long-K shape is what split-K is for), then odd N and K
# that end inside a tile, and a K shorter than one tile.
SHAPES = [(96, 24), (80, 48), (48, 3), (24, 48), (37, 53), (5, 131)]
if ON_CUDA:
    SHAPES += [(3072, 768), (80, 1536), (1536, 48), (768, 1536), (50277, 768)]

if not PROXY:
    from seqssm.config import MambaConfig
    from seqssm.errors import InputError
    from seqssm.kernels import common
    from seqssm.kernels.gemv import (
        GemvConfig,
        add_norm_gemv,
        add_norm_gemv_ref,
        gemv,
        gemv_ref,
        gemv_x_dt,
        gemv_x_dt_ref,
    )
    from seqssm.kernels.gemv import triton as gemv_triton
    from seqssm.kernels.rms_norm import add_rms_norm_fused
    from seqssm.kernels.rms_norm import triton_fwd as norm_triton
    from seqssm.kernels.selective_scan import (
        selective_state_update_fused,
        selective_state_update_x_dt,
        selective_state_update_x_dt_ref,
        triton_update,
    )
    from seqssm.models import MambaLMHeadModel
    from seqssm.models import mixer as mixer_module


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    if not PROXY:
        monkeypatch.setattr(common, "POISON", True)


def _tol(dtype: torch.dtype) -> dict:
    """A rounding step of the output dtype (fp32 sums in another order; the interpreter truncates to bf16
    where PyTorch rounds)."""
    if dtype == torch.bfloat16:
        return dict(rtol=2e-2, atol=2e-2)
    if dtype == torch.float16:
        return dict(rtol=3e-3, atol=3e-3)
    return dict(rtol=1e-5, atol=1e-5)


def _rand(*shape, seed: int, dtype=torch.float32, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=g)).to(DEVICE, dtype)


def _check(got: torch.Tensor, ref: torch.Tensor) -> None:
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    assert torch.isfinite(got).all(), "entries no kernel wrote (NaN)"
    torch.testing.assert_close(got.float(), ref.float(), **_tol(ref.dtype))


@interpreted
@pytest.mark.parametrize("rows", [1, 2, 5])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_gemv_matches_reference(shape, rows):
    """The default launch shapes; each shape sees the three dtypes over its three row counts (the interpreter
    is slow), with and without a bias."""
    n, k = shape
    dtypes = DTYPES if ON_CUDA else DTYPES[(SHAPES.index(shape) + rows) % 3 :][:1]
    for i, dtype in enumerate(dtypes):
        x = _rand(rows, k, seed=i, dtype=dtype)
        w = _rand(n, k, seed=10 + i, dtype=dtype, scale=k**-0.5)
        bias = _rand(n, seed=20 + i) if (i + rows + n) % 2 else None  # fp32 bias on low-precision weights too
        _check(gemv(x, w, bias), gemv_ref(x, w, bias))


# (block_b, block_n, block_k, splits, num_warps), then (rows, N, K) and the dtype
LAUNCH_SHAPES = {
    "b1n1": ((1, 1, 16, 1, 1), (2, 3, 39), torch.float32),  # one row, one weight row a program
    "split3": ((2, 16, 16, 3, 1), (5, 19, 87), torch.bfloat16),  # K split in 3, 5 rows in 3 row blocks
    "wide": ((8, 32, 64, 1, 2), (5, 19, 87), torch.float16),  # tiles wider than N and than K's tail
    "oversplit": ((4, 32, 16, 64, 1), (3, 19, 87), torch.float32),  # more splits asked for than K has tiles
    "long": ((8, 32, 16, 1, 1), (3, 19, 16 * 17 + 7), torch.bfloat16),  # 18 K tiles > MAX_K_ITERS: split
}


@interpreted
@pytest.mark.parametrize("name", list(LAUNCH_SHAPES))
def test_gemv_launch_shapes(name):
    cfg, (rows, n, k), dtype = LAUNCH_SHAPES[name]
    x = _rand(rows, k, seed=1, dtype=dtype)
    w = _rand(n, k, seed=2, dtype=dtype, scale=k**-0.5)
    bias = _rand(n, seed=3, dtype=dtype)
    _check(gemv(x, w, bias, config=GemvConfig(*cfg)), gemv_ref(x, w, bias))


@interpreted
def test_gemv_even_k_and_float64_baseline():
    """K a multiple of the tiles (the unmasked loads), against the product in float64."""
    rows, n, k = 3, 21, 64
    x, w, bias = _rand(rows, k, seed=4), _rand(n, k, seed=5), _rand(n, seed=6)
    expected = x.double() @ w.double().T + bias.double()
    for cfg in (GemvConfig(4, 32, 16, 1, 1), GemvConfig(4, 32, 16, 2, 1), GemvConfig(2, 16, 32, 2, 1)):
        torch.testing.assert_close(gemv(x, w, bias, config=cfg).double(), expected, rtol=1e-5, atol=1e-5)


@interpreted
def test_gemv_strided_inputs():
    """x a column slice of a wider buffer and transposed; weight a row-strided view and a transposed one."""
    rows, n, k = 4, 13, 29
    x_wide = _rand(rows, k + 6, seed=7)[:, 3 : 3 + k]
    x_t = _rand(k, rows, seed=8).T
    w_rows = _rand(n, 2 * k, seed=9)[:, ::2]
    w_t = _rand(k, n, seed=10).T
    for x in (x_wide, x_t):
        for w in (w_rows, w_t):
            _check(gemv(x, w), gemv_ref(x, w))


@interpreted
@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("dims", [(24, 3, 4, 24), (40, 20, 8, 37)], ids=["mamba", "odd"])
def test_gemv_x_dt_matches_reference(dims, rows):
    """x_proj [R + 2N, E] then dt_proj [E2, R]: (E 24, R 3, N 4) is the d_model 12 block's, then an odd E2;
    the default launch, and split K with row blocks of 2."""
    e, rank, d_state, e2 = dims
    for i, dtype in enumerate((torch.float32, torch.bfloat16) if ON_CUDA else DTYPES[rows % 2 :][:1]):
        x = _rand(rows, e, seed=30 + i, dtype=dtype)
        wx = _rand(rank + 2 * d_state, e, seed=40 + i, dtype=dtype, scale=e**-0.5)
        wdt = _rand(e2, rank, seed=50 + i, dtype=dtype, scale=rank**-0.5)
        for cfg in (None, GemvConfig(2, 32, 16, 3, 1)):
            x_dbl, dt = gemv_x_dt(x, wx, wdt, config=cfg)
            ref_dbl, ref_dt = gemv_x_dt_ref(x, wx, wdt)
            _check(x_dbl, ref_dbl)
            _check(dt, ref_dt)
            # dt comes from x_dbl as stored: the dt_proj of the returned x_dbl, to fp32 precision.
            torch.testing.assert_close(dt.float(), gemv_ref(x_dbl[:, :rank], wdt).float(), **_tol(dtype))


# (rows, dtype, residual: None | "same" (x's dtype) | "fp32", residual_in_fp32, bias, launch shape or None)
NORM_CASES = [
    (1, torch.float32, None, True, False, None),  # the first layer: no residual, the sum stored in fp32
    (2, torch.bfloat16, None, False, True, None),  # no residual, none written: x is the residual
    (3, torch.bfloat16, "fp32", True, True, (2, 8, 16, 3, 1)),  # K split in 3 (partials + the summing kernel)
    (4, torch.float16, "same", False, False, (4, 16, 16, 1, 1)),  # the sum rounded to fp16 before the norm
    (4, torch.float32, "same", True, True, None),
]


@interpreted
@pytest.mark.parametrize("case", NORM_CASES, ids=[f"case{i}" for i in range(len(NORM_CASES))])
def test_add_norm_gemv_matches_reference(case):
    """The residual add + RMSNorm inside in_proj's GEMV (K 37: norm tiles and K tiles end inside a tile) against
    add_rms_norm then gemv, both as references and as the unfused kernels."""
    rows, dtype, res_kind, r32, has_bias, cfg = case
    n, k = 21, 37
    x = _rand(rows, k, seed=70, dtype=dtype)
    residual = None if res_kind is None else _rand(rows, k, seed=71, dtype=dtype if res_kind == "same" else
                                                  torch.float32)
    nw = 1 + _rand(k, seed=72, dtype=dtype, scale=0.2)
    w = _rand(n, k, seed=73, dtype=dtype, scale=k**-0.5)
    bias = _rand(n, seed=74) if has_bias else None
    y, res = add_norm_gemv(x, residual, nw, 1e-5, r32, w, bias, config=cfg and GemvConfig(*cfg))
    ref_y, ref_res = add_norm_gemv_ref(x, residual, nw, 1e-5, r32, w, bias)
    _check(y, ref_y)
    _check(res, ref_res)
    if residual is None and not r32:
        assert res is x
    normed, kernel_res = add_rms_norm_fused(x, residual, nw, 1e-5, r32)
    torch.testing.assert_close(res, kernel_res, rtol=0, atol=0)  # the same sum, stored the same way
    _check(y, gemv(normed, w, bias, config=cfg and GemvConfig(*cfg)))


# (rows, dtype, D, z, dt_bias, x_proj launch shape, block_d)
UPDATE_CASES = [
    (1, torch.float32, True, True, True, None, None),
    (2, torch.bfloat16, True, True, True, (2, 8, 16, 3, 1), 8),  # x_proj split in 3; channel blocks of 8
    (3, torch.float16, False, True, False, None, 16),
    (4, torch.float32, True, False, True, (4, 16, 16, 2, 1), 8),
]


@interpreted
@pytest.mark.parametrize("case", UPDATE_CASES, ids=[f"case{i}" for i in range(len(UPDATE_CASES))])
def test_state_update_x_dt_matches_reference(case):
    """x_proj's partials, then their sum + dt_proj + the state update in one kernel (E 37, R 3, N 5: channel
    blocks, dt's rank and the state end inside their tiles; x and z halves of in_proj's output), against the
    reference, and against gemv_x_dt then the plain update kernel (the unfused step), which it matches to fp32
    rounding under the interpreter: x_dbl and Δ are rounded to x's dtype at the same points."""
    rows, dtype, has_d, has_z, has_bias, cfg, block_d = case
    e, rank, d_state = 37, 3, 5
    xz = _rand(rows, 2 * e, seed=80, dtype=dtype)
    x, z = xz[:, :e], xz[:, e:] if has_z else None
    wx = _rand(rank + 2 * d_state, e, seed=81, dtype=dtype, scale=e**-0.5)
    wdt = _rand(e, rank, seed=82, dtype=dtype, scale=rank**-0.5)
    A = -0.5 - _rand(e, d_state, seed=83).abs()
    D = _rand(e, seed=84) if has_d else None
    dt_bias = _rand(e, seed=85, scale=0.5) if has_bias else None
    state0 = _rand(rows, e, d_state, seed=86)
    cfg = cfg and GemvConfig(*cfg)
    states = [state0.clone() for _ in range(3)]
    y = selective_state_update_x_dt(states[0], x, wx, wdt, A, D, z, dt_bias, True, config=cfg, block_d=block_d)
    ref = selective_state_update_x_dt_ref(states[1], x, wx, wdt, A, D, z, dt_bias, True)
    x_dbl, dt = gemv_x_dt(x, wx, wdt, config=cfg)
    _, B, C = x_dbl.split([rank, d_state, d_state], dim=-1)
    unfused = selective_state_update_fused(states[2], x, dt, A, B, C, D, z, dt_bias, True)
    assert torch.isfinite(y).all(), "entries no kernel wrote (NaN)"
    # Compiled, dt_proj's sum may reduce in another order than sum_dt's, and a Δ one rounding step apart
    # moves the outputs by about one step of x's dtype; interpreted, the two agree to fp32 rounding.
    tol = _tol(dtype) if ON_CUDA else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.float(), unfused.float(), **tol)
    torch.testing.assert_close(states[0], states[2], **tol)
    if dtype == torch.float32:  # in low precision the reference rounds x_dbl and Δ to nearest, the interpreter
        # truncates
        _check(y, ref)
        torch.testing.assert_close(states[0], states[1], rtol=1e-5, atol=1e-5)


@interpreted
def test_no_rows_and_no_outputs():
    w = _rand(7, 5, seed=1)
    assert gemv(torch.zeros(0, 5, device=DEVICE), w).shape == (0, 7)
    assert gemv(_rand(2, 5, seed=2), w[:0]).shape == (2, 0)
    x_dbl, dt = gemv_x_dt(torch.zeros(0, 5, device=DEVICE), w, _rand(9, 3, seed=3))
    assert x_dbl.shape == (0, 7) and dt.shape == (0, 9)


@interpreted
def test_rejects_bad_arguments():
    x, w = _rand(2, 6, seed=1), _rand(4, 6, seed=2)
    with pytest.raises(InputError, match="requires grad"):
        gemv(x, w.clone().requires_grad_())
    with torch.no_grad():  # inference under no_grad is fine even for parameters
        gemv(x, w.clone().requires_grad_())
    with pytest.raises(InputError, match="one dtype"):
        gemv(x, w.bfloat16())
    with pytest.raises(InputError, match="expected \\[B, K\\]"):
        gemv(x[None], w)
    with pytest.raises(InputError, match="expected \\[N, 6\\]"):
        gemv(x, w[:, :5])
    with pytest.raises(InputError, match="bias has shape"):
        gemv(x, w, torch.zeros(5, device=DEVICE))
    with pytest.raises(InputError, match="K = 0"):
        gemv(x[:, :0], w[:, :0])
    with pytest.raises(InputError, match="dtype"):
        gemv(x.double(), w.double())
    with pytest.raises(InputError, match="1 <= R <= 4"):
        gemv_x_dt(x, w, _rand(3, 5, seed=3))
    with pytest.raises(InputError, match="norm_weight is torch.bfloat16"):
        add_norm_gemv(x, None, _rand(6, seed=3, dtype=torch.bfloat16), 1e-5, True, w)
    with pytest.raises(InputError, match="residual has shape"):
        add_norm_gemv(x, x[:1], _rand(6, seed=3), 1e-5, True, w)
    state, A = torch.zeros(2, 4, 2, device=DEVICE), -torch.ones(4, 2, device=DEVICE)
    with pytest.raises(InputError, match="x_proj_weight has shape"):
        selective_state_update_x_dt(state, x[:, :4], w[:, :4], _rand(4, 1, seed=4), A)
    with pytest.raises(InputError, match="dt_proj_weight has shape"):
        selective_state_update_x_dt(state, x[:, :4], w[:, :4], _rand(4, 0, seed=4), A)
    # The inference-only kernels name what to call for autograd (kernels.common.check_no_grad).
    with pytest.raises(InputError, match="requires grad.*or use add_rms_norm and F.linear"):
        add_norm_gemv(x, None, _rand(6, seed=3), 1e-5, True, w.clone().requires_grad_())
    with pytest.raises(InputError, match="A requires grad.*torch.no_grad\\(\\)$"):
        selective_state_update_x_dt(state, x[:, :4], _rand(5, 4, seed=5), _rand(4, 1, seed=4),
                                    A.clone().requires_grad_())


# The decode step through the kernels ---------------------------------------------------------------------


def _spy(monkeypatch, launcher=None) -> list:
    """Count launches of a kernel, the GEMV one by default (the Kernels tuple holds the public functions, which
    launch it through these launchers)."""
    calls = []
    launcher = launcher or gemv_triton._launch_gemv_kernel
    real = launcher.launch
    monkeypatch.setattr(launcher, "launch", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    return calls


def _light_updates(monkeypatch) -> None:
    """Interpreted: the Triton kernels with the conv and state updates' references (those kernels have their
    own tests, and interpreted they take seconds a step); the projections stay the kernels'."""
    if ON_CUDA:
        return
    from seqssm.kernels.causal_conv1d import causal_conv1d_update_ref
    from seqssm.kernels.selective_scan import selective_state_update_ref

    kernels = mixer_module._triton_kernels()._replace(conv_update=causal_conv1d_update_ref,
                                                      state_update=selective_state_update_ref)
    monkeypatch.setattr(mixer_module, "_triton_kernels", lambda: kernels)


def _step_logits(model, ids: torch.Tensor) -> torch.Tensor:
    """Logits [T, B, V] of model.step over the tokens ids [B, T] (teacher forced)."""
    cache = model.allocate_cache(ids.shape[0])
    return torch.stack([model.step(ids[:, t], cache).float() for t in range(ids.shape[1])])


@interpreted
@pytest.mark.parametrize("mixer", ["mamba", "mamba2"])
def test_decode_step_kernel_path_matches_linear(monkeypatch, mixer):
    """Steps with the GEMV kernels (rows <= GEMV_MAX_ROWS) give F.linear's logits and greedy tokens."""
    torch.manual_seed(0)
    config = MambaConfig(d_model=16, n_layer=1, vocab_size=10, d_state=4, mixer=mixer, headdim=8)
    model = MambaLMHeadModel(config, impl="triton").to(DEVICE).eval()
    with torch.no_grad():  # off the structured init, so that the states matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ids = torch.randint(0, 10, (2, 4), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    _light_updates(monkeypatch)
    monkeypatch.setattr(mixer_module, "GEMV_MAX_ROWS", 4)  # the default
    calls = _spy(monkeypatch)
    fast = _step_logits(model, ids)
    # Per step: in_proj and out_proj of each layer, the head; Mamba-1's x_proj -> dt_proj (its first launch).
    assert len(calls) == ids.shape[1] * ((3 if mixer == "mamba" else 2) * config.n_layer + 1), len(calls)
    monkeypatch.setattr(mixer_module, "GEMV_MAX_ROWS", 0)
    calls.clear()
    linear = _step_logits(model, ids)
    assert not calls
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast, linear, rtol=1e-4, atol=1e-4)
    assert torch.equal(fast.argmax(-1), linear.argmax(-1))


@interpreted
def test_step_with_autograd_takes_linear(monkeypatch):
    """A step that records gradients (parameters require grad, grad mode on) keeps F.linear."""
    model = MambaLMHeadModel(MambaConfig(d_model=16, n_layer=1, vocab_size=8, d_state=4), impl="triton").to(DEVICE)
    layer = model.backbone.layers[0].mixer
    cache = model.allocate_cache(2).layers[0]
    _light_updates(monkeypatch)
    monkeypatch.setattr(mixer_module, "GEMV_MAX_ROWS", 4)  # on, so that only autograd keeps F.linear
    calls = _spy(monkeypatch)
    out = layer.step(_rand(2, 16, seed=1), cache)
    assert out.requires_grad and not calls


@interpreted
@pytest.mark.parametrize(("dtype", "residual_in_fp32"), [(torch.float32, True), (torch.bfloat16, False)])
def test_fused_decode_matches_unfused(monkeypatch, dtype, residual_in_fp32):
    """A two-layer model's teacher-forced steps at B = 1..4 with FUSE_DECODE on give the logits and greedy tokens
    of the unfused GEMV step, in 5 launches a layer: add + norm + in_proj, the conv update, x_proj's partials,
    their sum + dt_proj + the state update, out_proj (no separate norm, x_dbl sum or state update)."""
    torch.manual_seed(0)
    config = MambaConfig(d_model=16, n_layer=2, vocab_size=10, d_state=4, residual_in_fp32=residual_in_fp32)
    model = MambaLMHeadModel(config, impl="triton").to(DEVICE, dtype).eval()
    with torch.no_grad():  # off the structured init, so that the states matter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    steps = 3
    counts = {name: _spy(monkeypatch, launcher) for name, launcher in (
        ("gemv", gemv_triton._launch_gemv_kernel), ("sum_dt", gemv_triton._launch_split_sum_dt_kernel),
        ("norm", norm_triton._launch_fwd), ("update", triton_update._launch_selective_state_update_fwd_kernel),
        ("x_dt_update", triton_update._launch_x_dt_state_update_kernel))}
    for rows in (1, 4):
        ids = torch.randint(0, 10, (rows, steps), generator=torch.Generator().manual_seed(rows)).to(DEVICE)
        monkeypatch.setattr(mixer_module, "FUSE_DECODE", True)
        fused = _step_logits(model, ids)
        layers = config.n_layer * steps
        got = {name: len(c) for name, c in counts.items()}
        # in_proj, x_proj and out_proj a layer and the head; the final norm alone a step
        assert got == {"gemv": 3 * layers + steps, "sum_dt": 0, "norm": steps, "update": 0, "x_dt_update": layers}
        monkeypatch.setattr(mixer_module, "FUSE_DECODE", False)
        for c in counts.values():
            c.clear()
        unfused = _step_logits(model, ids)
        assert len(counts["x_dt_update"]) == 0 and len(counts["norm"]) == (config.n_layer + 1) * steps
        for c in counts.values():
            c.clear()
        assert torch.isfinite(fused).all()
        torch.testing.assert_close(fused, unfused, **(_tol(dtype) if dtype != torch.float32 else
                                                      dict(rtol=1e-4, atol=1e-4)))
        assert torch.equal(fused.argmax(-1), unfused.argmax(-1))
