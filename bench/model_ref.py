"""Benchmark: how long `diffrun generate` takes to say a model reference is wrong.

Each case runs the real console script as a whole process and fails with exit 4; the baseline is a
process that only imports torch and diffusers (what a check after the imports cannot beat). Runs are
interleaved (case, baseline, case, ...); medians of wall seconds and the ratio to the baseline.

    python bench/model_ref.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "missing path": ["-m", "./nonexistent"],
    "folder without model_index.json": ["-m", "./empty"],
    "not a checkpoint file": ["-m", "notes.txt"],
    "hub id not cached (offline)": ["-m", "nobody/not-cached"],
}


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFRUN_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", HF_HUB_CACHE=str(cache),
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], expect: int) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True)
    seconds = time.perf_counter() - start
    if proc.returncode != expect:
        raise SystemExit(f"error: {cmd} exited {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each case and of the baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "empty").mkdir()
        (work / "notes.txt").write_text("hello")
        env = _env(work / "hub-cache")
        baseline_cmd = [sys.executable, "-c", "import torch, diffusers"]
        times: dict[str, list[float]] = {name: [] for name in CASES}
        baseline: list[float] = []
        for _ in range(args.repeats):
            for name, ref in CASES.items():
                times[name].append(_timed([sys.executable, "-m", "diffrun", "generate", *ref, "-p", "x"], work, env, 4))
                baseline.append(_timed(baseline_cmd, work, env, 0))
    base = statistics.median(baseline)
    print(f"{'case':34} {'median s':>9} {'vs import torch+diffusers':>26}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:34} {median:9.2f} {median / base:25.2f}x")
    print(f"{'baseline: import torch, diffusers':34} {base:9.2f} {1:25.2f}x")


if __name__ == "__main__":
    main()
