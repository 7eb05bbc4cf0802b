"""Compile the Triton scan kernels (and the fused decode-step kernels) for sm_90a on a machine without a GPU and
print ptxas's resource report.

Registers, spills and shared memory decide most launch-shape questions before any GPU time is spent
(benchmarks/NOTES-scan.md). The PTX, TTGIR and SASS of each variant are written to --out for reading.

    python benchmarks/compile_sm90.py --out /tmp/sm90 [--variant NAME ...]
"""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from seqssm.kernels.gemv import triton as gemv_triton
from seqssm.kernels.selective_scan import triton_bwd, triton_fwd, triton_update

TARGET = GPUTarget("cuda", 90, 32)
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"

# Arguments of the backward kernel in order: pointers with their element types, then 32-bit integers.
BWD_POINTERS = {
    "u_ptr": "*bf16", "dt_ptr": "*bf16", "A_ptr": "*fp32", "B_ptr": "*bf16", "C_ptr": "*bf16", "D_ptr": "*fp32",
    "z_ptr": "*bf16", "bias_ptr": "*fp32", "hc_ptr": "*fp32", "dout_ptr": "*bf16", "dhT_ptr": "*fp32",
    "du_ptr": "*bf16", "ddt_ptr": "*bf16", "dz_ptr": "*bf16", "dA_ptr": "*fp32", "dB_ptr": "*fp32",
    "dC_ptr": "*fp32", "dD_ptr": "*fp32", "dbias_ptr": "*fp32", "dh0_ptr": "*fp32", "carry_ptr": "*fp32",
    "seq_ptr": "*i32",
}
# The shape of record: z, D, delta_bias, softplus, per-position B and C, no final-state gradient.
BWD_FLAGS = dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, HAS_DHT=False, SOFTPLUS=True, B_VAR=True, C_VAR=True,
                 HAS_SEQ=False, N_PAD=16, STAGES=1)


def bwd_ints(length: int = 65536, dim: int = 1536, n_state: int = 16, block_t: int = 512) -> dict[str, int]:
    """The backward's integer arguments for B = 1, contiguous [B, D, L] tensors, B/C as [B, N, L]."""
    rows = dict(b=dim * length, d=length, l=1)
    ints = dict(dim=dim, length=length, n_state=n_state, b_cpg=dim, c_cpg=dim, n_chunks=length // block_t,
                s_A_d=n_state, s_A_n=1, s_q_b=length)
    for x in ("u", "dt", "z", "g"):
        ints.update({f"s_{x}_{k}": v for k, v in rows.items()})
    for x in ("B", "C"):
        ints.update({f"s_{x}_b": n_state * length, f"s_{x}_g": 0, f"s_{x}_n": length, f"s_{x}_l": 1})
    return ints


def compile_variant(fn, pointers: dict[str, str], ints: dict[str, int], constexprs: dict, num_warps: int,
                    out: Path, name: str) -> str:
    """Compile fn for sm_90a as a launch with these arguments would (ints equal to 1 become constants, pointers
    and multiples of 16 carry the divisibility hint); write its IR to out/name.*; return ptxas's report."""
    consts, sig, attrs = dict(constexprs), {}, {}
    dynamic = set(getattr(fn, "do_not_specialize", ()) or ())
    dynamic = {fn.arg_names[a] if isinstance(a, int) else a for a in dynamic}
    for i, arg in enumerate(fn.arg_names):
        if arg in constexprs:
            sig[arg] = "constexpr"
        elif arg in pointers:  # pointers, and scalars of another type ("fp32")
            sig[arg] = pointers[arg]
            if pointers[arg].startswith("*"):
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif ints[arg] == 1 and arg not in dynamic:
            consts[arg], sig[arg] = 1, "constexpr"
        else:
            sig[arg] = "i32"
            if ints[arg] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    kernel = triton.compile(src, target=TARGET, options={"num_warps": num_warps})
    out.mkdir(parents=True, exist_ok=True)
    for ext in ("ttgir", "ptx"):
        (out / f"{name}.{ext}").write_text(kernel.asm[ext])
    ptx = out / f"{name}.ptx"
    cubin = out / f"{name}.cubin"
    res = subprocess.run([str(BIN / "ptxas"), "-v", "--gpu-name", "sm_90a", str(ptx), "-o", str(cubin)],
                         capture_output=True, text=True, check=True)
    sass = subprocess.run([str(BIN / "nvdisasm"), "-c", str(cubin)], capture_output=True, text=True, check=True)
    (out / f"{name}.sass").write_text(sass.stdout)
    return " ".join(re.findall(r"Used \d+ registers|\d+ bytes spill (?:stores|loads)|\d+ bytes smem", res.stderr))


def loop_sizes(sass: str) -> list[int]:
    """Instructions in each loop of a SASS listing (a backward branch to an earlier label), innermost-first as
    they appear: the state loop's size per state is the number NOTES-scan.md compares."""
    ins, labels, sizes = [], {}, []
    for line in sass.splitlines():
        label = re.match(r"\s*\.L_x_(\d+):", line)
        if label:
            labels[label.group(1)] = len(ins)
        elif re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+\S", line):
            ins.append(line)
            branch = re.search(r"BRA\s+`\(\.L_x_(\d+)\)", line)
            if branch and labels.get(branch.group(1), len(ins)) < len(ins) - 1:
                sizes.append(len(ins) - labels[branch.group(1)])
    return sizes


def backward_variants() -> dict[str, tuple[object, dict, int]]:
    """name -> (kernel, constexprs, num_warps) for the backward launch shapes worth comparing."""
    variants = {}
    for block_t, warps in ((256, 1), (512, 2), (128, 1)):
        flags = dict(BWD_FLAGS, BLOCK_D=1, BLOCK_T=block_t, UNROLL_N=1,
                     **triton_bwd.pair_bwd_flags(1, block_t, warps, 2))
        variants[f"bwd_{block_t}_{warps}w"] = (triton_bwd._selective_scan_pair_bwd_kernel, flags, warps)
    return variants


SEQ_POINTERS = dict(BWD_POINTERS, hend_ptr="*fp32", dsum_ptr="*fp32", cut_ptr="*i32", h0_ptr="*fp32",
                    out_ptr="*bf16", hT_ptr="*fp32", hc_ptr="*fp32")


def seq_ints(length: int = 65536, dim: int = 1536, n_state: int = 16, seg_len: int = 1536) -> dict[str, int]:
    """The sequential forward's integer arguments for the shape of record (as ``bwd_ints``)."""
    ints = bwd_ints(length, dim, n_state)
    ints.update(seg_len=seg_len, n_seg=length // seg_len, s_n=1)
    ints.update({f"s_o_{k}": ints[f"s_u_{k}"] for k in "bdl"})
    return ints


def forward_variants() -> dict[str, tuple[object, dict, int]]:
    """name -> (kernel, constexprs, num_warps): the sequential forward's two scanning passes."""
    flags = dict(HAS_BIAS=True, SOFTPLUS=True, B_VAR=True, HAS_SEQ=False, N_PAD=16, EVEN_N=True, EVEN=True,
                 BF16_PTX=True)
    variants = {}
    for block_d, tt, warps in ((32, 8, 1), (64, 8, 2), (32, 4, 1)):
        shape = dict(flags, BLOCK_D=block_d, TT=tt)
        variants[f"seg_{block_d}_{tt}_{warps}w"] = (triton_fwd._segment_state_kernel, shape, warps)
        variants[f"seq_{block_d}_{tt}_{warps}w"] = (
            triton_fwd._selective_scan_fwd_kernel,
            dict(shape, HAS_D=True, HAS_Z=True, HAS_H0=False, C_VAR=True, STORE_CHUNKS=True, CHUNK=256), warps)
    return variants


GEMV_POINTERS = {"x_ptr": "*bf16", "w_ptr": "*bf16", "bias_ptr": "*bf16", "out_ptr": "*bf16", "res_ptr": "*fp32",
                 "nw_ptr": "*bf16", "res_out_ptr": "*fp32", "eps": "fp32"}
UPDATE_POINTERS = {"state_ptr": "*fp32", "x_ptr": "*bf16", "part_ptr": "*fp32", "w_ptr": "*bf16", "A_ptr": "*fp32",
                   "D_ptr": "*fp32", "z_ptr": "*bf16", "bias_ptr": "*fp32", "y_ptr": "*bf16"}


def decode_variants() -> dict[str, tuple]:
    """name -> (kernel, constexprs, num_warps, pointers, ints): the d_model 768 decode step's fused kernels at
    batch 1 (``FUSE_DECODE``): the add + norm inside in_proj's GEMV, x_proj's partials, and their sum + dt_proj +
    the state update, with the launch shapes the host code picks on the H200."""
    n, k, e, n1, rank = 3072, 768, 1536, 80, 48
    gemv = dict(HAS_BIAS=False, EVEN_K=True, BLOCK_B=1, BLOCK_K=256, HAS_RESIDUAL=True)
    in_ints = dict(rows=1, n=n, k=k, s_x_b=k, s_x_k=1, s_w_n=k, s_w_k=1, s_o_s=0, s_o_b=n, s_o_n=1, s_r_b=k, s_r_k=1)
    x_ints = dict(in_ints, n=n1, k=e, s_x_b=2 * e, s_w_n=e, s_o_s=n1, s_o_b=n1, s_r_b=0, s_r_k=0)
    update_ints = dict(dim=e, n_state=16, rank=rank, splits=2, s_h_b=e * 16, s_h_d=16, s_h_n=1, s_x_b=2 * e, s_x_d=1,
                       s_p_s=n1, s_p_b=n1, s_w_d=rank, s_w_r=1, s_A_d=16, s_A_n=1, s_z_b=2 * e, s_z_d=1, s_y_b=e,
                       s_y_d=1)
    return {
        "norm_in_proj": (gemv_triton._gemv_kernel, dict(gemv, PARTIAL=False, K_ITERS=3, BLOCK_N=4, NORM=True,
                                                         STORE_RESIDUAL=True), 4, GEMV_POINTERS, in_ints),
        "x_proj_partials": (gemv_triton._gemv_kernel, dict(gemv, PARTIAL=True, K_ITERS=3, BLOCK_N=1, NORM=False,
                                                           HAS_RESIDUAL=False, STORE_RESIDUAL=False), 1,
                            dict(GEMV_POINTERS, out_ptr="*fp32"), x_ints),
        "x_dt_update": (triton_update._x_dt_state_update_kernel,
                        dict(HAS_D=True, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, BLOCK_D=64, N_PAD=16, BLOCK_R=64),
                        4, UPDATE_POINTERS, update_ints),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sm90"))
    parser.add_argument("--variant", nargs="*", help="names to compile (default: all)")
    args = parser.parse_args()
    variants = {name: (*v, BWD_POINTERS, bwd_ints(block_t=v[1]["BLOCK_T"])) for name, v in backward_variants().items()}
    variants.update({name: (*v, SEQ_POINTERS, seq_ints()) for name, v in forward_variants().items()})
    variants.update(decode_variants())
    for name, (fn, flags, warps, pointers, ints) in variants.items():
        if args.variant and name not in args.variant:
            continue
        sass = args.out / f"{name}.sass"
        report = compile_variant(fn, pointers, ints, flags, warps, args.out, name)
        text = sass.read_text()
        ops = re.findall(r"^\s+/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9]*)", text, re.M)
        counts = {op: ops.count(op) for op in ("SHFL", "BAR", "REDG", "MUFU", "LDG", "STS", "LDS")}
        counts["all"] = len(ops)
        counts["loops"] = loop_sizes(text)
        print(f"{name:<28} {report:<60} {counts}", flush=True)


if __name__ == "__main__":
    main()
