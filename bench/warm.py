"""Benchmark: five consecutive one-liners, cold, with `--warm`, and with `diffusers-cli run`.

Whole processes, in one run, on the tiny model (bench/generate.py's image-to-image copy, the bundled
sample image, CPU fp32, one torch thread): five `diffrun generate` runs, then five `diffrun generate
--warm` runs (the first starts the warm server in a private XDG_RUNTIME_DIR; the rest reuse it), then
five `diffusers-cli run`. Medians of runs 2 to 5.

Goals (from the issue): each warm one-liner after the first at most 0.5 s plus its inference time
(as the server reports it), and at most 0.15x the cold one.

    python bench/warm.py [--runs 5] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import SAMPLE, diffrun_job, diffusers_job, make_models, print_goals, tool


def env(runtime_dir: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("DIFFRUN_")}
    out.update(HF_HUB_OFFLINE="1", DIFFUSERS_CLI_RUN_ID="bench", OMP_NUM_THREADS="1", XDG_RUNTIME_DIR=str(runtime_dir))
    return out


def run(cmd: list[str], environment: dict[str, str], output: Path) -> tuple[float, dict]:
    """Wall seconds of one whole process, and its --json summary when it printed one."""
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=environment, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not output.is_file():
        raise SystemExit(f"error: {Path(cmd[0]).name} failed (exit {proc.returncode}):\n"
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    try:
        summary = json.loads(proc.stdout.decode().splitlines()[-1])
    except (ValueError, IndexError):
        summary = {}
    return seconds, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="consecutive one-liners per way (default 5)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="diffrun-bench-warm-") as tmp:
        work = Path(tmp)
        (work / "run").mkdir(mode=0o700)
        environment = env(work / "run")
        _, model = make_models(work)
        out = work / "out.png"
        cold_cmd = [*diffrun_job(model, out, args.steps), "--threads", "1"]
        warm_cmd = [*cold_cmd, "--warm", "--json"]
        cold = [run(cold_cmd, environment, out)[0] for _ in range(args.runs)]
        warm, inference = [], []
        try:
            for _ in range(args.runs):
                seconds, summary = run(warm_cmd, environment, out)
                warm.append(seconds)
                inference.append(float(summary.get("timings", {}).get("inference", 0.0)))
        finally:
            subprocess.run([tool("diffrun"), "stop", "--all"], env=environment, check=False)
        theirs = [run(diffusers_job(model, out, args.steps), environment, out)[0] for _ in range(args.runs)]

    def median(values: list[float]) -> float:
        return statistics.median(values[1:] or values)

    print(f"tiny sd model, image-to-image on {SAMPLE.name}, {args.steps} steps, CPU fp32, 1 thread; "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; median of runs 2-{args.runs}\n")
    print("| one-liner | run 1 s | median s (runs 2-) | vs cold |")
    print("|---|---:|---:|---:|")
    for name, times in (("`diffrun generate` (cold)", cold), ("`diffrun generate --warm`", warm),
                        ("`diffusers-cli run`", theirs)):
        print(f"| {name} | {times[0]:.2f} | {median(times):.3f} | {median(times) / median(cold):.2f}x |")
    overhead = median([w - i for w, i in zip(warm, inference, strict=True)])
    ratio = median(warm) / median(cold)
    print(f"\nwarm overhead beyond inference (median of runs 2-): {overhead:.3f} s; "
          f"inference {median(inference):.3f} s")
    goals = [("each warm one-liner after the first at most 0.5 s plus its inference", overhead <= 0.5),
             ("warm at most 0.15x cold", ratio <= 0.15)]
    print_goals(goals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
