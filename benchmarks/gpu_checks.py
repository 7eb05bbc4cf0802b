"""Correctness of the Triton kernels at large sizes on a CUDA GPU (no timing here: see bench_scan.py).

1. The kernel test files at their CUDA sizes (pytest in a child process).
2. L = 2^20 and 2^21 with batch 2, bf16, z + delta_bias + softplus, per-position B/C:
   - channels at both ends of the tensor against the chunked PyTorch scan in fp32 (outputs, final state,
     du, ddelta, dz, dA, dD, d(delta_bias), d(initial_state));
   - the whole batch against batch element 1 scanned alone, so that every element whose flat offset passes
     2^31 is compared with a run whose offsets all fit in 32 bits (outputs, all gradients, dB and dC).
Prints one line per check and a table last; writes the log to --out.

    python benchmarks/gpu_checks.py --out $OUT
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from seqssm.kernels.selective_scan.triton import selective_scan_fused
from seqssm.kernels.selective_scan.triton_fwd import SEQ_CONFIG

ROWS: list[tuple[str, str, str]] = []


def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
    """‖x − ref‖ / ‖ref‖ in float64, a slice of 2^26 elements at a time (a whole float64 copy would not fit)."""
    x, ref = x.reshape(-1), ref.reshape(-1)
    diff = norm = 0.0
    for i in range(0, x.numel(), 2**26):
        a, b = x[i:i + 2**26].double(), ref[i:i + 2**26].double()
        diff += (a - b).square().sum().item()
        norm += b.square().sum().item()
    return (diff / max(norm, 1e-60)) ** 0.5


def record(check: str, value: str, ok: bool) -> None:
    ROWS.append((check, value, "ok" if ok else "FAIL"))
    print(f"{check:<58} {value:<28} {'ok' if ok else 'FAIL'}", flush=True)


def run_tests(out: Path, names: list[str]) -> None:
    root = Path(__file__).resolve().parents[1]
    for name in names:
        t0 = time.time()
        cmd = [sys.executable, "-c", "import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))",
               str(root / name), "-q", "-p", "no:cacheprovider"]
        proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True)
        (out / (Path(name).stem + ".log")).write_text(proc.stdout + proc.stderr)
        last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
        record(f"pytest {name} (CUDA sizes)", f"{last[:20]} {time.time() - t0:.0f}s", proc.returncode == 0)


def inputs(batch: int, dim: int, length: int, nstate: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(*shape, dtype=torch.bfloat16, scale=1.0, shift=0.0):
        x = torch.empty(*shape, device="cuda", dtype=dtype)
        return x.normal_(shift, scale, generator=g)

    return {
        "u": randn(batch, dim, length),
        "delta": randn(batch, dim, length, scale=0.5, shift=-1.0),
        "A": -torch.empty(dim, nstate, device="cuda").uniform_(0.5, 4.0, generator=g),
        "B": randn(batch, nstate, length),
        "C": randn(batch, nstate, length),
        "D": randn(dim, dtype=torch.float32),
        "z": randn(batch, dim, length),
        "delta_bias": randn(dim, dtype=torch.float32, scale=0.5),
        "initial_state": randn(batch, dim, nstate, dtype=torch.float32),
    }


def fwd_bwd(fn, x: dict[str, torch.Tensor], dout: torch.Tensor, dlast: torch.Tensor, **kw):
    """out, final state and gradients {name: grad} of sum(out * dout) + sum(final * dlast)."""
    leaves = {k: v.detach().requires_grad_() for k, v in x.items()}
    out, last = fn(**leaves, delta_softplus=True, return_final_state=True, **kw)
    ((out.float() * dout.float()).sum() + (last * dlast).sum()).backward()
    return out.detach(), last.detach(), {k: v.grad for k, v in leaves.items()}


def channel_slice(x: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """The inputs of a subset of channels (B and C are shared by all channels)."""
    sub = {}
    for k, v in x.items():
        if k in ("u", "delta", "z", "initial_state"):
            sub[k] = v[:, idx].contiguous()
        elif k in ("A", "D", "delta_bias"):
            sub[k] = v[idx].contiguous()
        else:
            sub[k] = v
    return sub


def impl_args(batch: int, dim: int) -> dict:
    """Keyword arguments of the scan: 64 segments whatever the batch, so that a batch element scanned alone
    goes through the same arithmetic as inside the whole batch."""
    blocks = -(-dim // SEQ_CONFIG.block_d)
    return {"seq_config": SEQ_CONFIG._replace(target_programs=64 * batch * blocks)}


def long_check(length: int, batch: int, dim: int, nstate: int) -> None:
    tag = f"L=2^{length.bit_length() - 1} B={batch} D={dim}"
    x = inputs(batch, dim, length, nstate, seed=length)
    dout = torch.randn(batch, dim, length, device="cuda", dtype=torch.bfloat16)
    dlast = torch.randn(batch, dim, nstate, device="cuda")
    torch.cuda.synchronize()
    t0 = time.time()
    out, last, grads = fwd_bwd(selective_scan_fused, x, dout, dlast, **impl_args(batch, dim))
    torch.cuda.synchronize()
    record(f"{tag}: fused fwd+bwd ran, flat size {batch * dim * length:.2e}",
           f"{time.time() - t0:.1f}s, {torch.cuda.max_memory_allocated() / 1e9:.1f} GB", True)
    finite = all(torch.isfinite(t).all().item() for t in [out, last, *grads.values()])
    record(f"{tag}: everything finite", "", finite)

    # Channels at both ends against the fp32 chunked PyTorch scan.
    from seqssm.kernels.selective_scan import selective_scan_chunked

    idx = torch.tensor([0, 1, dim - 2, dim - 1], device="cuda")
    sub = {k: v.float() for k, v in channel_slice(x, idx).items()}
    r_out, r_last, r_grads = fwd_bwd(selective_scan_chunked, sub, dout[:, idx].float(), dlast[:, idx], chunk_size=256)
    pairs = [("out", out[:, idx], r_out), ("final_state", last[:, idx], r_last)]
    for k in ("u", "delta", "z", "initial_state"):
        pairs.append((f"d{k}", grads[k][:, idx], r_grads[k]))
    for k in ("A", "D", "delta_bias"):
        pairs.append((f"d{k}", grads[k][idx], r_grads[k]))
    for name, got, ref in pairs:
        err = rel(got, ref)
        bound = 1.5 * rel(ref.to(got.dtype), ref) if got.dtype == torch.bfloat16 else 1e-4
        record(f"{tag}: {name} vs chunked fp32, channels 0,1,D-2,D-1", f"{err:.2e} (bound {bound:.2e})",
               err <= bound)
    del sub, r_out, r_last, r_grads

    # The whole batch against batch element b alone (its own offsets fit in 32 bits). Only batch b's results
    # of the whole-batch run are kept, to make room.
    b = batch - 1
    keep = {"out": out[b:b + 1].clone(), "final_state": last[b:b + 1].clone()}
    for k in ("u", "delta", "z", "initial_state", "B", "C"):
        keep[f"d{k}"] = grads[k][b:b + 1].clone()
    del out, last, grads
    torch.cuda.empty_cache()
    one = {k: (v[b:b + 1] if v.dim() == 3 else v) for k, v in x.items()}
    o_out, o_last, o_grads = fwd_bwd(selective_scan_fused, one, dout[b:b + 1], dlast[b:b + 1],
                                     **impl_args(1, dim))
    alone = {"out": o_out, "final_state": o_last, **{f"d{k}": v for k, v in o_grads.items()}}
    pairs = [(name, got, alone[name]) for name, got in keep.items()]
    for name, got, ref in pairs:
        err = rel(got, ref)
        # Same arithmetic in the same order, except the order of the fp32 atomic adds into dB and dC.
        bound = 1e-3 if name in ("dB", "dC") else 1e-6
        record(f"{tag}: {name}[b={b}] whole batch vs alone", f"{err:.2e} (bound {bound:.0e})", err <= bound)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--tests", nargs="*", default=["tests/test_triton_scan.py", "tests/test_triton_conv1d.py"],
                        help="kernel test files to run at CUDA sizes (none: skip)")
    parser.add_argument("--dim", type=int, default=640, help="channels of the long checks")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    run_tests(args.out, args.tests)
    for length in (2**20, 2**21):
        try:
            long_check(length, batch=2, dim=args.dim, nstate=16)
        except Exception as err:  # one failed size must not hide the other's results
            record(f"L={length}: raised", repr(err)[:60], False)
        torch.cuda.empty_cache()
    lines = [f"| {c} | {v} | {s} |" for c, v, s in ROWS]
    table = "\n".join(["| check | value | result |", "| --- | --- | --- |", *lines])
    (args.out / "gpu_checks.md").write_text(table + "\n")
    print("\n" + table)
    sys.exit(0 if all(s == "ok" for _, _, s in ROWS) else 1)


if __name__ == "__main__":
    main()
