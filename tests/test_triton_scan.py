"""Triton selective scan and decode step against the fp32 loop references in kernels/selective_scan/naive.py.

On a CUDA machine the kernels run compiled at large sizes. Without CUDA they run under Triton's interpreter
at small sizes: TRITON_INTERPRET=1 must be set before triton is first imported, which another test file of
the same session may already have done, so this module reruns itself in a child pytest with the variable set
and each test here reports its child twin's outcome.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from triton_harness import DEVICE, ON_CUDA, PROXY, interpreted, packed_seq_idx, rel_error, rounded

# (batch, channels, states, lengths): small under the interpreter, a few chunks of 256 on the GPU.
BATCH, DIM, NSTATE = (2, 64, 16) if ON_CUDA else (2, 4, 3)
LENGTHS = (1, 256, 1337) if ON_CUDA else (1, 16, 37)
LONG = LENGTHS[-1]

if not PROXY:
    import triton

    from seqssm.errors import InputError
    from seqssm.kernels import common
    from seqssm.kernels.selective_scan import ptx, triton_bwd
    from seqssm.kernels.selective_scan import triton as scan_triton
    from seqssm.kernels.selective_scan.naive import selective_scan_ref, selective_state_update_ref
    from seqssm.kernels.selective_scan.triton import selective_scan_fused
    from seqssm.kernels.selective_scan.triton_update import selective_state_update_fused


@pytest.fixture(autouse=True)
def _poison(monkeypatch):
    """Fresh kernel outputs start as NaN, so that any element a kernel fails to write fails the comparison."""
    if not PROXY:
        monkeypatch.setattr(common, "POISON", True)


def _bc(form: str, length: int, dtype: torch.dtype) -> torch.Tensor:
    shapes = {"const": (DIM, NSTATE), "var": (BATCH, NSTATE, length), "grouped": (BATCH, 2, NSTATE, length)}
    return torch.randn(*shapes[form], device=DEVICE, dtype=dtype)


def _inputs(length, form="var", dtype=torch.float32, optional=True, initial=True, softplus=True):
    """Random inputs in the Mamba ranges: A < 0, Δ > 0 (after softplus when asked), parameters fp32."""
    x = {
        "u": torch.randn(BATCH, DIM, length, device=DEVICE, dtype=dtype),
        "delta": ((0.5 * torch.randn(BATCH, DIM, length, device=DEVICE) - 1.0) if softplus
                  else (0.05 + 0.5 * torch.rand(BATCH, DIM, length, device=DEVICE))).to(dtype),
        "A": -(0.5 + 4 * torch.rand(DIM, NSTATE, device=DEVICE)),
        "B": _bc(form, length, dtype),
        "C": _bc(form, length, dtype),
    }
    if optional:
        x["D"] = torch.randn(DIM, device=DEVICE)
        x["z"] = torch.randn(BATCH, DIM, length, device=DEVICE, dtype=dtype)
        x["delta_bias"] = 0.5 * torch.randn(DIM, device=DEVICE)
    if initial:
        x["initial_state"] = torch.randn(BATCH, DIM, NSTATE, device=DEVICE)
    return {k: v.requires_grad_() for k, v in x.items()}


def _reference(inputs, softplus, seq_idx=None):
    """The fp32 loop on fp32 leaf copies (so that its gradients stay fp32), and those copies."""
    leaves = {k: v.detach().float().requires_grad_() for k, v in inputs.items()}
    out, last = selective_scan_ref(**leaves, delta_softplus=softplus, return_final_state=True, seq_idx=seq_idx)
    return out, last, leaves


def _compare(inputs, softplus, rounding_factor=None, seq_idx=None, **options):
    """Outputs, final state and every gradient of the Triton scan (``options``: launch shapes) against the
    reference.

    fp32 inputs: relative error under 1e-4. Lower precision: under ``rounding_factor`` times the error of
    rounding the fp32 reference to the input dtype.
    """
    out, last = selective_scan_fused(**inputs, delta_softplus=softplus, return_final_state=True, seq_idx=seq_idx,
                                     **options)
    ref_out, ref_last, ref_leaves = _reference(inputs, softplus, seq_idx)
    dout = torch.randn_like(ref_out).to(out.dtype).float()
    dlast = torch.randn_like(ref_last)
    names = list(inputs)
    grads = torch.autograd.grad((out.float() * dout).sum() + (last * dlast).sum(), [inputs[k] for k in names])
    ref_loss = (ref_out * dout).sum() + (ref_last * dlast).sum()
    ref_grads = torch.autograd.grad(ref_loss, [ref_leaves[k] for k in names])
    pairs = [("out", out, ref_out), ("final_state", last, ref_last)]
    pairs += [(f"d{k}", g, r) for k, g, r in zip(names, grads, ref_grads, strict=True)]
    for name, got, ref in pairs:
        assert got.shape == ref.shape, name
        assert torch.isfinite(got).all(), f"{name} has non-finite entries"
        err = rel_error(got, ref)
        if rounding_factor is None:
            assert err < 1e-4, f"{name}: relative error {err:.2e}"
        else:
            rounding = rel_error(rounded(ref, out.dtype), ref)
            assert err <= rounding_factor * rounding, f"{name}: relative error {err:.2e}, rounding {rounding:.2e}"


@interpreted
@pytest.mark.parametrize("form", ["const", "var", "grouped"])
def test_scan_all_inputs_matches_reference(form):
    _compare(_inputs(LONG, form), softplus=True)


@interpreted
@pytest.mark.parametrize("length", LENGTHS)
def test_scan_without_optional_inputs(length):
    _compare(_inputs(length, optional=False, initial=False, softplus=False), softplus=False)


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_scan_low_precision_within_rounding(dtype):
    _compare(_inputs(LONG, "grouped", dtype=dtype), softplus=True, rounding_factor=1.5)


@interpreted
@pytest.mark.parametrize("used", ["out", "final_state"])
def test_scan_gradient_through_one_output(used):
    """Only one of (out, final_state) reaches the loss: autograd passes None for the other (the scan does not
    ask it for zeros), and the gradients still match the reference's."""
    x = _inputs(LONG, "var")
    out, last = selective_scan_fused(**x, delta_softplus=True, return_final_state=True)
    ref_out, ref_last, ref_leaves = _reference(x, True)
    got, ref = (out, ref_out) if used == "out" else (last, ref_last)
    weight = torch.randn_like(ref)
    names = list(x)
    grads = torch.autograd.grad((got * weight).sum(), [x[k] for k in names])
    # The final state does not depend on z, D or C: the reference has no gradient for them, the scan zeros.
    ref_grads = torch.autograd.grad((ref * weight).sum(), [ref_leaves[k] for k in names], allow_unused=True)
    for name, g, r in zip(names, grads, ref_grads, strict=True):
        if r is None:
            assert used == "final_state" and name in ("z", "D", "C") and not g.any(), f"d{name} should be zero"
        else:
            assert rel_error(g, r) < 1e-4, f"d{name}: relative error {rel_error(g, r):.2e}"


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_scan_backward_whole_chunks(dtype):
    """L a multiple of every chunk length (no partial chunk anywhere: the unmasked tiles of the sequential
    forward, whole backward chunks)."""
    length = 2048 if ON_CUDA else 32
    _compare(_inputs(length, "var", dtype=dtype), softplus=True,
             rounding_factor=None if dtype == torch.float32 else 1.5)


@interpreted
# The interpreter runs one small shape whatever block_t says, so it runs each dtype once.
@pytest.mark.parametrize("block_t", [128, 256, 512] if ON_CUDA else [16])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_scan_backward_launch_shapes(block_t, dtype):
    """The backward at each one-warp chunk length the benchmarks consider (the forward saves states at its
    chunk starts). On a GPU, L is a multiple of 16 (not of the chunk), so that the inline-PTX reverse scan runs
    (over 1, 2 or 4 runs of positions a thread)."""
    length = LONG + 7 if ON_CUDA else LONG
    x = _inputs(length, "var", dtype=dtype)
    if ON_CUDA:
        flags = triton_bwd.pair_bwd_flags(1, block_t, 1, dtype.itemsize)
        assert flags["REV_PTX"], "the PTX scan should serve this shape"
    bwd_cfg = scan_triton.ScanConfig(1, block_t, 1) if ON_CUDA else scan_triton.INTERPRET_CONFIG._replace(block_d=1)
    out, last = selective_scan_fused(**x, delta_softplus=True, return_final_state=True, bwd_config=bwd_cfg)
    ref_out, ref_last, ref_leaves = _reference(x, True)
    dout, dlast = torch.randn_like(ref_out).to(out.dtype).float(), torch.randn_like(ref_last)
    names = list(x)
    grads = torch.autograd.grad((out.float() * dout).sum() + (last * dlast).sum(), [x[k] for k in names])
    ref_grads = torch.autograd.grad((ref_out * dout).sum() + (ref_last * dlast).sum(), [ref_leaves[k] for k in names])
    pairs = [("out", out, ref_out), ("final_state", last, ref_last)]
    pairs += [(f"d{k}", g, r) for k, g, r in zip(names, grads, ref_grads, strict=True)]
    for name, got, ref in pairs:
        bound = 1e-4 if got.dtype == torch.float32 else 1.5 * rel_error(rounded(ref, got.dtype), ref)
        assert rel_error(got, ref) <= max(bound, 1e-4), f"{name}: relative error {rel_error(got, ref):.2e}"


@interpreted
def test_scan_segments_match_reference():
    """The forward with one segment per chunk (most cross-segment folding), with one segment, and with the GPU
    default's tile width, gives the reference's output and final state."""
    x = {k: v.detach() for k, v in _inputs(LONG).items()}
    ref, ref_last = selective_scan_ref(**x, delta_softplus=True, return_final_state=True)
    base = scan_triton.SEQ_CONFIG if ON_CUDA else scan_triton.SEQ_INTERPRET_CONFIG
    for cfg in (base._replace(target_programs=1), base._replace(target_programs=10**6),
                base._replace(tt=scan_triton.SEQ_CONFIG.tt)):
        out, last = selective_scan_fused(**x, delta_softplus=True, return_final_state=True, seq_config=cfg)
        assert rel_error(out, ref) < 1e-5
        assert rel_error(last, ref_last) < 1e-5


@interpreted
def test_scan_strided_inputs():
    """B, C as [B, L, N] transposed views (as the mixer passes them) and u sliced out of a wider tensor."""
    x = _inputs(LONG)
    wide = torch.randn(BATCH, 2 * DIM, LONG, device=DEVICE)
    x["u"] = wide[:, DIM:].requires_grad_()
    x["B"] = torch.randn(BATCH, LONG, NSTATE, device=DEVICE).transpose(1, 2).requires_grad_()
    _compare(x, softplus=True)


@interpreted
def test_scan_two_halves_equal_one_pass():
    """The final state handed on as the next initial state continues the scan exactly."""
    x = {k: v.detach() for k, v in _inputs(LONG, optional=False, initial=False).items()}
    whole = selective_scan_fused(**x, delta_softplus=True)
    cut = LONG // 2 + 1
    first, last = {}, {}
    for k, v in x.items():
        first[k], last[k] = (v[..., :cut], v[..., cut:]) if v.dim() >= 3 else (v, v)
    y1, state = selective_scan_fused(**first, delta_softplus=True, return_final_state=True)
    y2 = selective_scan_fused(**last, delta_softplus=True, initial_state=state)
    assert rel_error(torch.cat([y1, y2], -1), whole) < 1e-5


@interpreted
def test_scan_calls_of_one_shape_reuse_plans_safely():
    """Launches are worked out once per input signature and reused (``triton._PLANS``). Calls of one shape
    with no gradient and then with gradients, with fresh values, with u an unaligned view, and in another
    dtype each match the reference. Interpreted, at two chunks (17): what is tested is the reuse, not length."""
    length = LONG if ON_CUDA else 17
    x = _inputs(length)
    with torch.no_grad():
        out = selective_scan_fused(**x, delta_softplus=True)
    assert rel_error(out, _reference(x, True)[0]) < 1e-4
    _compare(x, softplus=True)
    _compare(_inputs(length), softplus=True)
    y = _inputs(length)
    y["u"] = torch.randn(BATCH, DIM, length + 1, device=DEVICE)[..., 1:].requires_grad_()
    _compare(y, softplus=True)
    _compare(_inputs(length, dtype=torch.bfloat16), softplus=True, rounding_factor=1.5)


@interpreted
def test_scan_rejects_bad_shapes():
    x = {k: v.detach() for k, v in _inputs(LONG, optional=False, initial=False).items()}
    with pytest.raises(InputError, match="delta has shape"):
        selective_scan_fused(**{**x, "delta": x["delta"][..., :-1]})
    with pytest.raises(InputError, match="groups"):
        selective_scan_fused(**{**x, "B": torch.randn(BATCH, 3, NSTATE, LONG, device=DEVICE)})
    with pytest.raises(InputError, match="seq_idx"):
        selective_scan_fused(**x, seq_idx=torch.zeros(BATCH, LONG + 1, dtype=torch.int32, device=DEVICE))
    with pytest.raises(InputError, match="does not divide"):
        selective_scan_fused(**x, seq_config=scan_triton.SEQ_INTERPRET_CONFIG._replace(tt=3))


@interpreted
@pytest.mark.parametrize("grouped", [False, True], ids=["shared", "grouped"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_state_update_matches_reference(grouped, dtype):
    bc = (BATCH, 2, NSTATE) if grouped else (BATCH, NSTATE)
    state = torch.randn(BATCH, DIM, NSTATE, device=DEVICE)
    args = dict(
        x=torch.randn(BATCH, DIM, device=DEVICE, dtype=dtype),
        dt=torch.randn(BATCH, DIM, device=DEVICE, dtype=dtype),
        A=-torch.rand(DIM, NSTATE, device=DEVICE) - 0.5,
        B=torch.randn(*bc, device=DEVICE, dtype=dtype),
        C=torch.randn(*bc, device=DEVICE, dtype=dtype),
        D=torch.randn(DIM, device=DEVICE),
        z=torch.randn(BATCH, DIM, device=DEVICE, dtype=dtype),
        dt_bias=torch.randn(DIM, device=DEVICE),
    )
    ref_state = state.clone()
    y = selective_state_update_fused(state, **args, dt_softplus=True)
    y_ref = selective_state_update_ref(ref_state, **{k: v.float() for k, v in args.items()}, dt_softplus=True)
    assert rel_error(state, ref_state) < 1e-5
    bound = 1e-5 if dtype == torch.float32 else 1.5 * rel_error(rounded(y_ref, dtype), y_ref)
    assert rel_error(y.float(), y_ref) <= bound


@interpreted
def test_scan_plain_paths_match_reference(monkeypatch):
    """The kernels' plain Triton paths, which a Triton version the inline PTX was not verified on gets
    (``ptx.ptx_paths``): on a GPU the backward's associative_scan at a shape the PTX scan would serve and plain
    bf16 converts in the forward; under the interpreter these are the paths every test runs."""
    monkeypatch.setattr(triton, "__version__", "0.0.0")
    monkeypatch.setattr(scan_triton, "_PLANS", {})
    ptx.ptx_paths.cache_clear()
    triton_bwd.pair_bwd_flags.cache_clear()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert not triton_bwd.pair_bwd_flags(1, 256, 1, 2)["REV_PTX"]
            _compare(_inputs(LONG + 7 if ON_CUDA else LONG, dtype=torch.bfloat16), softplus=True,
                     rounding_factor=1.5)
    finally:
        ptx.ptx_paths.cache_clear()
        triton_bwd.pair_bwd_flags.cache_clear()


def _seq_idx(length: int, seed: int = 0) -> torch.Tensor:
    """[BATCH, L] int32 packed-sequence ids: row 0 cut at a chunk boundary (16), just after it, at position
    1, into a one-position sequence and at the last position; row 1 one value repeated after a change (a run
    is a sequence, not a value) and its last sequence padding (-1)."""
    return packed_seq_idx(BATCH, length, (1, 16, 17, 18, length - 1, length // 2 + 3))


# Interpreted, each of these costs 30-70 s of one core: the CPU runs the grouped form (B/C per group, the
# general indexing) and one-sequence rows; the GPU runs every form and dtype, whole chunks and launch shapes.
SEQ_FORMS = ["const", "var", "grouped"] if ON_CUDA else ["grouped"]
_GPU_ONLY = pytest.mark.skipif(not ON_CUDA, reason="interpreted it costs minutes; seq_idx is covered above")
SEQ_DTYPES = [pytest.param(torch.float32, id="fp32", marks=_GPU_ONLY),
              pytest.param(torch.bfloat16, id="bf16", marks=_GPU_ONLY)]


@interpreted
@pytest.mark.parametrize("form", SEQ_FORMS)
def test_scan_seq_idx_matches_reference(form):
    """Packed sequences: output, final state and every gradient (initial state included) as the reference's."""
    _compare(_inputs(LONG, form), softplus=True, seq_idx=_seq_idx(LONG))


@interpreted
@pytest.mark.parametrize("dtype", SEQ_DTYPES)
def test_scan_seq_idx_whole_chunks_and_launch_shapes(dtype):
    """seq_idx with L a multiple of every chunk (unmasked tiles) and, on a GPU, at the one-warp backward whose
    reverse scan is inline PTX; forward with one segment per chunk and with one segment."""
    length = 2048 if ON_CUDA else 32
    seq = _seq_idx(length)
    _compare(_inputs(length, "var", dtype=dtype), softplus=True, seq_idx=seq,
             rounding_factor=None if dtype == torch.float32 else 1.5)
    x = {k: v.detach() for k, v in _inputs(LONG, dtype=dtype).items()}
    seq = _seq_idx(LONG)
    # The reference in fp32 (on the same, bf16-rounded values), so that the bound below is the rounding's.
    ref, ref_last = selective_scan_ref(**{k: v.float() for k, v in x.items()}, delta_softplus=True,
                                       return_final_state=True, seq_idx=seq)
    base = scan_triton.SEQ_CONFIG if ON_CUDA else scan_triton.SEQ_INTERPRET_CONFIG
    for cfg in (base._replace(target_programs=1), base._replace(target_programs=10**6)):
        out, last = selective_scan_fused(**x, delta_softplus=True, return_final_state=True, seq_idx=seq,
                                         seq_config=cfg)
        bound = 1e-5 if dtype == torch.float32 else 1.5 * rel_error(rounded(ref, dtype), ref)
        assert rel_error(out.float(), ref.float()) <= max(bound, 1e-5)
        assert rel_error(last, ref_last) < 1e-5


@interpreted
def test_scan_seq_idx_one_sequence_changes_nothing():
    """seq_idx with one value per row gives exactly the result without it (no reset anywhere)."""
    x = {k: v.detach() for k, v in _inputs(LONG).items()}
    plain = selective_scan_fused(**x, delta_softplus=True)
    same = selective_scan_fused(**x, delta_softplus=True,
                                seq_idx=torch.full((BATCH, LONG), 7, dtype=torch.int64, device=DEVICE))
    assert torch.equal(plain, same)


def _grads_with_segments(x, softplus, seq_idx, segments, dout, dlast):
    """Every gradient of one loss through the scan with the backward cut into ``segments``."""
    base = scan_triton.BWD_CONFIG if ON_CUDA else scan_triton.INTERPRET_CONFIG
    out, last = selective_scan_fused(**x, delta_softplus=softplus, return_final_state=True, seq_idx=seq_idx,
                                     bwd_config=base._replace(segments=segments))
    return torch.autograd.grad((out.float() * dout).sum() + (last * dlast).sum(), list(x.values()))


# (segments, length, B/C form, optional inputs and initial state, packed-sequence cuts). Under the interpreter
# chunks are 16 long. L = 70 is 5 chunks, the last partial; S = 2 gives segments of 3 + 2 chunks and the carry
# pass 3 parts of a chunk a segment (the last one empty); cuts inside a segment (23) and on a part boundary
# (64), so that a carry crosses parts and segments in row 0. L = 37 is 3 chunks, S = 3 one each; cuts on a
# segment boundary (16) and inside one (20). L = 20 is 2 chunks, fewer than S. On the GPU (chunks of 256) the
# lengths and cuts are the same in chunks.
SEG_CASES = [(2, 1200 if ON_CUDA else 70, "var", True, (23, 64)),
             (3, 763 if ON_CUDA else LONG, "const", False, (16, 20)),
             (3, 300 if ON_CUDA else 20, "grouped", True, None)]


@interpreted
@pytest.mark.parametrize("segments, length, form, optional, cuts", SEG_CASES, ids=["s2", "s3-plain", "s3-short"])
def test_scan_backward_segments_match_one_segment(segments, length, form, optional, cuts):
    """The segment-parallel backward gives one segment's gradients and the reference's, every one of them,
    with packed sequences restarting inside and at segment boundaries, with and without z, D, delta_bias and
    the initial state (fresh outputs are NaN-poisoned, so an unwritten partial fails)."""
    if ON_CUDA and cuts is not None:
        cuts = tuple(c * 256 // 16 for c in cuts)  # the same places relative to the GPU's chunks of 256
    softplus = optional
    x = _inputs(length, form, optional=optional, initial=optional, softplus=softplus)
    seq_idx = None if cuts is None else packed_seq_idx(BATCH, length, cuts)
    ref_out, ref_last, ref_leaves = _reference(x, softplus, seq_idx)
    dout, dlast = torch.randn_like(ref_out), torch.randn_like(ref_last)
    one = _grads_with_segments(x, softplus, seq_idx, 1, dout, dlast)
    many = _grads_with_segments(x, softplus, seq_idx, segments, dout, dlast)
    ref = torch.autograd.grad((ref_out * dout).sum() + (ref_last * dlast).sum(), list(ref_leaves.values()))
    for name, g1, gs, r in zip(x, one, many, ref, strict=True):
        assert torch.isfinite(gs).all(), f"d{name} has non-finite entries"
        assert rel_error(gs, g1) < 1e-5, f"d{name}: {segments} segments vs one: {rel_error(gs, g1):.2e}"
        assert rel_error(gs, r) < 1e-4, f"d{name}: relative error {rel_error(gs, r):.2e}"


@interpreted
def test_scan_backward_segments_from_environment(monkeypatch):
    """SEQSSM_SCAN_BWD_SEGMENTS sets the default configs' segments; a bad value is a clear InputError."""
    try:
        for raw, want in (("", 1), ("4", 4)):
            monkeypatch.setenv(scan_triton.SEGMENTS_ENV, raw)
            scan_triton.env_segments.cache_clear()
            assert scan_triton._default_configs(torch.device(DEVICE))[0].segments == want
        for raw in ("0", "two", "-1"):
            monkeypatch.setenv(scan_triton.SEGMENTS_ENV, raw)
            scan_triton.env_segments.cache_clear()
            with pytest.raises(InputError, match=scan_triton.SEGMENTS_ENV):
                scan_triton.env_segments()
    finally:
        monkeypatch.delenv(scan_triton.SEGMENTS_ENV, raising=False)
        scan_triton.env_segments.cache_clear()
