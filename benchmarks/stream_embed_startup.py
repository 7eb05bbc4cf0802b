"""``seqssm embed --per-position --stream`` through the real CLI entry point, with the time of every start-up stage.

Runs ``seqssm.cli.main()`` in this process on the arguments after ``--`` (exactly what the console script
does) and times, by wrapping the pipeline's own functions: the imports (torch, the CLI, the job module), the
checkpoint's JSON checks, CUDA init, the model load (with or without its probe forward), opening the FASTA
(its ``.fai`` built when missing), the weights digest, the rest of the set-up, the first chunk's launch
(Triton kernels loaded from the disk cache, or compiled), the chunk loop and what follows it. Interpreter
start-up and process exit are outside Python: pass the shell's ``date +%s.%N`` before the call as
``STARTUP_T0`` and compare the printed ``python_end_epoch`` with the shell's time after it (the device script
``benchmarks/device/stream_embed.sh`` does both). The process ends as the console script's does
(``seqssm.cli.exit_now``).

    STARTUP_T0=$(date +%s.%N) python benchmarks/stream_embed_startup.py --json t.json -- \\
        embed CKPT big.fa --out emb --per-position --stream --region chrZ

Prints a Markdown table of the stages (seconds since the interpreter started, and each stage's own time).
"""

from __future__ import annotations

import time

WALL0 = time.time()
T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


class Stages:
    """Named spans of wall time, in the order they ended."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float, float]] = []  # (name, seconds, ended at: seconds since T0)

    def add(self, name: str, seconds: float) -> None:
        self.rows.append((name, seconds, time.perf_counter() - T0))

    def wrap(self, module, attr: str, name: str, after=None):
        """Replace ``module.attr`` by a timed version (``after(result)`` runs outside the timing); returns a
        function that puts the original back."""
        original = getattr(module, attr)

        def timed(*args, **kwargs):
            t = time.perf_counter()
            result = original(*args, **kwargs)
            self.add(name, time.perf_counter() - t)
            if after is not None:
                after(result)
            return result

        setattr(module, attr, timed)
        return lambda: setattr(module, attr, original)


def run(cli_args: list[str], shell_t0: float | None = None) -> dict:
    """Run ``seqssm CLI_ARGS`` in this process with the stages timed; returns them (and the exit code)."""
    stages = Stages()
    if shell_t0 is not None:
        stages.rows.append(("interpreter start (shell to first line)", WALL0 - shell_t0, 0.0))
    t = time.perf_counter()
    import torch

    stages.add("import torch", time.perf_counter() - t)
    t = time.perf_counter()
    from seqssm import cli

    stages.add("import seqssm.cli", time.perf_counter() - t)
    t = time.perf_counter()
    import seqssm.pipelines.stream_embed as se

    stages.add("import the job module (stream_embed)", time.perf_counter() - t)
    info: dict = {"loop": None}

    def cuda_init(device) -> None:
        if device.type == "cuda":  # the context, otherwise created inside the model load
            t = time.perf_counter()
            torch.zeros(1, device=device).sum().item()
            stages.add("CUDA init (first allocation)", time.perf_counter() - t)

    first = {"done": False}
    step = se.stream_step

    def stream_step(*args, **kwargs):
        if first["done"]:
            return step(*args, **kwargs)
        t = time.perf_counter()
        out = step(*args, **kwargs)
        first["done"] = True
        stages.add("first chunk's launch (kernels loaded or compiled)", time.perf_counter() - t)
        return out

    chunk_loop = se._run

    def timed_run(*args, **kwargs):
        t = time.perf_counter()
        try:
            return chunk_loop(*args, **kwargs)
        finally:
            timings = args[-1]
            info["loop"] = {"seconds": time.perf_counter() - t, "chunks": list(timings.chunks),
                            "write_s": timings.write, "wait_s": timings.wait, "sync_s": timings.sync,
                            "chunk_size": args[0].chunk_size, "positions": args[8] - args[7]}
            stages.add("chunk loop (all chunks, last fsync)", time.perf_counter() - t)

    restore = [
        stages.wrap(se, "check_checkpoint", "checkpoint JSON checks"),
        stages.wrap(se, "resolve_device", "resolve device", after=cuda_init),
        stages.wrap(se, "load_checked", "load the model (load_checked)"),
        stages.wrap(se, "_open_source", "open the FASTA (.fai built if missing)"),
        stages.wrap(se, "_weights_digest", "sha256 of model.safetensors (the job's identity)"),
        stages.wrap(se, "stream_embed", "stream_embed, whole"),
    ]
    se.stream_step, se._run = stream_step, timed_run
    restore.append(lambda: (setattr(se, "stream_step", step), setattr(se, "_run", chunk_loop)))
    argv, sys.argv = sys.argv, ["seqssm", *cli_args]
    code = 0
    t = time.perf_counter()
    try:
        cli.main()
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        sys.argv = argv
        for undo in restore:
            undo()
    stages.add("CLI main, whole", time.perf_counter() - t)
    return {"exit_code": code, "stages": stages.rows, "loop": info["loop"],
            "torch_dynamo_imported": "torch._dynamo" in sys.modules,
            "python_seconds": time.perf_counter() - T0, "python_end_epoch": time.time()}


def table(result: dict) -> str:
    lines = ["| stage | s | ended at s |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {sec:.3f} | {at:.3f} |" for name, sec, at in result["stages"]]
    loop = result["loop"]
    if loop and loop["chunks"]:
        chunks = loop["chunks"]
        steps = sorted(b - a for a, b in zip(chunks, chunks[1:], strict=False))
        steady = steps[len(steps) // 2] if steps else float("nan")
        lines += ["", f"chunk loop: {loop['positions']:,} positions in {len(chunks)} chunks of {loop['chunk_size']:,}, "
                  f"{loop['seconds']:.2f} s = {loop['positions'] / loop['seconds'] / 1e6:.2f} M bases/s; first chunk "
                  f"written at {chunks[0]:.2f} s, median chunk {steady * 1e3:.1f} ms = "
                  f"{loop['chunk_size'] / steady / 1e6:.2f} M bases/s; blocked on writes {loop['write_s']:.2f} s, on "
                  f"the device {loop['wait_s']:.2f} s, last fsync {loop['sync_s']:.2f} s"]
    lines += [f"python: {result['python_seconds']:.2f} s from its first line to the end of main (exit code "
              f"{result['exit_code']}); torch._dynamo imported: {result['torch_dynamo_imported']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    ours, cli_args = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the stages here")
    args = parser.parse_args(ours)
    shell_t0 = float(os.environ["STARTUP_T0"]) if os.environ.get("STARTUP_T0") else None
    result = run(cli_args, shell_t0)
    print(table(result), end="", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    print(f"python_end_epoch {result['python_end_epoch']:.3f}", flush=True)
    return result


if __name__ == "__main__":
    code = main()["exit_code"]
    from seqssm import cli

    getattr(cli, "exit_now", sys.exit)(code)  # as the console script ends (no teardown; sys.exit before it)
