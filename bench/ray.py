"""Benchmark `diffrun batch --engine ray` against the local engine: what Ray adds per job on one machine.

The batch benchmark's manifest (bench/batch.py): image-to-image jobs on a tiny model, every input
served from a loopback server with a fixed latency. One process, one call:

    python bench/ray.py [--jobs 32] [--more-jobs 128] [--latency 0.2] [--steps 4] [--size 64]
                         [--workers 1 2] [--threads 1]

Each engine runs the jobs, then 4 times as many (fresh output folders), model loads excluded. The
slope between the two runs is the cost per job; what is left is the fixed cost of a run
(for Ray: starting the actors, planning the dataset). Engines:
  local engine       run_batch (prefetch 4, batch size 1)
  ray, N workers     the Ray engine with N inference actors, on a local Ray started once by this
                     script (its start-up, paid by every run without --ray-address, is shown apart)
Torch gets the same threads in every inference process (--threads, default 1): on 2 cores, two
threads fighting the loopback server and the loaders make the local engine 10x slower, which
would measure thread contention, not Ray.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `python bench/ray.py` puts bench/ first on the path, where this file would shadow the ray package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from loopback import LoopbackServer  # noqa: E402

from diffrun import pipelines  # noqa: E402
from diffrun.engine.batch import BatchConfig, run_batch  # noqa: E402
from diffrun.engine.ray_engine import RayOptions, connect, run_ray_batch  # noqa: E402
from diffrun.jobs import Job  # noqa: E402
from diffrun.loaders import FetchPolicy  # noqa: E402


def bench_batch():
    """bench/batch.py, whose workload this benchmark repeats (loaded by path: bench/ is not on the path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_batch", ROOT / "bench" / "batch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = bench_batch()
    shared.workload_arguments(parser)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--more-jobs", type=int, default=0, help="the second, longer run (default: 4 x --jobs)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads per inference process, the same for both engines")
    args = parser.parse_args()
    # The same threads everywhere: Ray's workers inherit OMP_NUM_THREADS (else Ray sets it from their CPUs).
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)

    import ray

    work = Path(tempfile.mkdtemp(prefix="diffrun-bench-ray-"))
    model_dir = pipelines.make_tiny_model(work / "tiny", "sd", seed=0)
    policy = FetchPolicy(timeout=10, retries=0)
    options = pipelines.ModelOptions(model=str(model_dir), device="cpu")
    with LoopbackServer() as server:
        more = args.more_jobs or 4 * args.jobs
        urls = [server.add(f"/in{i}.png", shared.make_png(args.size, i), content_type="image/png") for i in range(more)]
        jobs = [Job(id=f"j{i}", prompt=f"job {i}", image=[url], seeds=[i], steps=args.steps, strength=0.75)
                for i, url in enumerate(urls)]
        server.latency = args.latency

        def make_config(name: str) -> BatchConfig:
            out = work / name
            return BatchConfig(model=options, policy=policy, output_dir=out, results=out / "results.jsonl",
                               prefetch=args.prefetch)

        def timed(engine: str, count: int, workers: int = 0) -> tuple[float, float]:
            """(seconds without model load, wall seconds) of one run of the first `count` jobs."""
            config = make_config(f"{engine}{workers}-{count}")
            if engine == "local":
                summary = run_batch(jobs[:count], config)
            else:
                summary = run_ray_batch(jobs[:count], config, RayOptions(workers=workers))
            assert summary.ok == count, summary
            return summary.seconds["total"] - summary.seconds["model_load"], summary.seconds["total"]

        run_batch(jobs[:2], make_config("warm"))  # first calls allocate; not timed
        rows = {"local engine": (timed("local", args.jobs), timed("local", more))}
        started = time.perf_counter()
        connect(RayOptions(workers=max(args.workers)), lambda _text: None)
        ray_start = time.perf_counter() - started
        try:
            for workers in args.workers:
                name = f"ray, {workers} worker{'s' if workers > 1 else ''}"
                rows[name] = (timed("ray", args.jobs, workers), timed("ray", more, workers))
        finally:
            ray.shutdown()

    print(f"{args.jobs} image-to-image jobs, {args.size}x{args.size} inputs, {args.steps} steps, "
          f"{args.latency * 1000:.0f} ms per input, {os.cpu_count()} CPUs, no GPU, "
          f"{args.threads} torch thread(s) per inference process; model loads excluded")
    print(f"| engine | {args.jobs} jobs | vs local | per job ({args.jobs} -> {more} jobs) | "
          f"Ray adds per job | fixed cost per run | {args.jobs} jobs, wall with model loads |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    ((local, _), _) = rows["local engine"]
    local_slope = (rows["local engine"][1][0] - local) / (more - args.jobs)
    for name, ((full, wall), (longer, _)) in rows.items():
        slope = (longer - full) / (more - args.jobs)
        fixed = full - slope * args.jobs
        added = "" if name == "local engine" else f"{(slope - local_slope) * 1000:+.0f} ms"
        print(f"| {name} | {full:.2f} s | {full / local:.2f}x | {slope * 1000:.0f} ms | {added} | {fixed:.2f} s "
              f"| {wall:.2f} s |")
    print(f"\nlocal Ray start-up (once per run without --ray-address): {ray_start:.2f} s")


if __name__ == "__main__":
    main()
