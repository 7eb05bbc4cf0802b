"""First-call compile time of each Triton kernel, with a cold and then a warm on-disk cache.

Runs the workloads a user meets first (a training step, a prefill + graph decode, an SSD forward + backward)
in a child process twice over one fresh TRITON_CACHE_DIR: the first child compiles, the second finds the
cache warm (what every command after the first on an installed machine sees). Each kernel's time is the
wall time of Triton's compile-or-load call (JITFunction._do_compile) for it, summed over specialisations.

    python benchmarks/compile_times.py
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time


def time_compiles() -> tuple[dict[str, float], dict[str, int]]:
    """From now on, sum the wall time and count the calls of Triton's compile-or-load (``JITFunction._do_compile``,
    one per new specialisation in a process) per kernel name, into the two dicts returned (filled as it runs).
    Also used by ``fsdd_step.py``."""
    from triton.runtime.jit import JITFunction

    times, counts = collections.defaultdict(float), collections.defaultdict(int)
    original = JITFunction._do_compile

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            times[self.fn.__name__] += time.perf_counter() - t0
            counts[self.fn.__name__] += 1

    JITFunction._do_compile = timed
    return times, counts


def workload() -> None:
    import torch

    times, counts = time_compiles()
    from seqssm.config import MambaConfig
    from seqssm.kernels.ssd import ssd
    from seqssm.models import MambaLMHeadModel
    from seqssm.pipelines.decoding import Decoder

    device, walls = torch.device("cuda"), {}
    model = MambaLMHeadModel(MambaConfig(d_model=128, n_layer=2, vocab_size=16), device=device)
    ids = torch.randint(5, 9, (2, 1000), device=device)
    for name, fn in (
        ("training step", lambda: _train(model, ids)),
        ("prefill + graph decode", lambda: Decoder(model.eval(), 2).decode(ids[:, :100], 16)),
        ("ssd fwd + bwd", lambda: _ssd(ssd, device)),
    ):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        walls[name] = time.perf_counter() - t0
    print(json.dumps({"walls": walls, "kernels": {k: [times[k], counts[k]] for k in times}}))


def _train(model, ids):
    import torch
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids)
    logits.float().mean().backward()


def _ssd(ssd, device):
    import torch
    x = torch.randn(1, 500, 4, 32, device=device, requires_grad=True)
    dt = torch.rand(1, 500, 4, device=device) * 0.1
    A = -torch.rand(4, device=device)
    B, C = torch.randn(2, 1, 500, 1, 16, device=device)
    ssd(x, dt, A, B, C, impl="triton").sum().backward()


def main() -> None:
    import torch
    import triton
    print(f"{torch.cuda.get_device_name()}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"torch {torch.__version__}, triton {triton.__version__}")
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TRITON_CACHE_DIR": cache}
        runs = []
        for label in ("cold", "warm"):
            print(f"{label} cache: running the workloads in a child process", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True)
            if proc.returncode:
                print(proc.stderr[-3000:])
                sys.exit(1)
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    print("| first call | cold cache s | warm cache s |\n| --- | ---: | ---: |")
    for name in cold["walls"]:
        print(f"| {name} | {cold['walls'][name]:.2f} | {warm['walls'][name]:.2f} |")
    print("\n| kernel | specialisations | compile s (cold) | load s (warm) |\n| --- | ---: | ---: | ---: |")
    for name, (sec, n) in sorted(cold["kernels"].items(), key=lambda kv: -kv[1][0]):
        print(f"| {name} | {n} | {sec:.2f} | {warm['kernels'].get(name, [0.0])[0]:.3f} |")


if __name__ == "__main__":
    workload() if "--child" in sys.argv else main()
