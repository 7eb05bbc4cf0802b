"""Which kernels one CUDA-graph decode step launches, and how long each takes (torch.profiler over replays).

The decode target (half mamba_ssm's latency at batch 1) depends on whether the step is bound by kernel time,
by the number of kernels, or by gaps between them; this prints all three for the d_model 768 x 24 model.

    python benchmarks/profile_decode.py [--batch 1] [--k 1] [--replays 50]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import time

import torch
import triton

from seqssm.config import MambaConfig
from seqssm.models import MambaLMHeadModel
from seqssm.pipelines.decoding import Decoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--n-layer", type=int, default=24)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--k", type=int, default=1, help="steps per graph replay")
    ap.add_argument("--replays", type=int, default=50)
    args = ap.parse_args()
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"torch {torch.__version__}, triton {triton.__version__}; d_model {args.d_model} x {args.n_layer}, "
          f"bf16, batch {args.batch}, K = {args.k}")
    torch.manual_seed(0)
    model = MambaLMHeadModel(MambaConfig(d_model=args.d_model, n_layer=args.n_layer, vocab_size=16),
                             device=device, dtype=torch.bfloat16).eval()
    decoder = Decoder(model, args.batch, cuda_graph=True, steps_per_replay=args.k)
    prompts = torch.randint(5, 9, (args.batch, 64), device=device)
    decoder.decode(prompts, 4 * args.k)  # compile and capture
    graph = decoder.graph
    for _ in range(10):
        graph.replay()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.replays):
        graph.replay()
    torch.cuda.synchronize()
    wall_us = (time.perf_counter() - t0) / args.replays / args.k * 1e6
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(args.replays):
            graph.replay()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name = collections.defaultdict(list)
    for e in kernels:
        by_name[e.name].append(e.device_time)
    steps = args.replays * args.k
    busy = sum(sum(v) for v in by_name.values()) / steps
    starts = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    span = (starts[-1][1] - starts[0][0]) / steps if starts else 0.0
    print(f"per step: wall {wall_us:.1f} us, kernels {len(kernels) / steps:.1f}, GPU busy {busy:.1f} us, "
          f"first-to-last kernel span {span:.1f} us (gaps {span - busy:.1f} us)")
    print("| kernel | per step | us each (mean) | us per step |\n| --- | ---: | ---: | ---: |")
    for name, times in sorted(by_name.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {name[:90]} | {len(times) / steps:.1f} | {sum(times) / len(times):.2f} | "
              f"{sum(times) / steps:.1f} |")


if __name__ == "__main__":
    main()
