"""Benchmark `diffrun batch`: does prefetching hide a slow network behind inference, and do micro-batches pay?

32 image-to-image jobs on a tiny model, every input served from a loopback server with 200 ms latency.

    python bench/batch.py [--jobs 32] [--latency 0.2] [--steps 4] [--size 64] [--generate-runs 4]

Reports, all in this one process and call (ratios, not absolute times, are what carry over):
  inference only      the 32 pipeline calls with inputs already in memory (the floor)
  batch               the batch engine (prefetch 4, batch size 1), model load excluded; goal <= 1.10x
  sequential          fetch one job's input, then run it, one job after another
  batch --batch-size 4
  generate x N        separate `diffrun generate` processes (model load each time), scaled to all jobs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from loopback import LoopbackServer  # noqa: E402
from PIL import Image  # noqa: E402

from diffrun import pipelines  # noqa: E402
from diffrun.engine import jobrun  # noqa: E402
from diffrun.engine.batch import BatchConfig, run_batch  # noqa: E402
from diffrun.jobs import Job  # noqa: E402
from diffrun.loaders import FetchPolicy  # noqa: E402


def make_png(size: int, i: int) -> bytes:
    import io

    image = Image.new("RGB", (size, size), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The manifest and server settings this benchmark and bench/ray.py share."""
    parser.add_argument("--jobs", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--prefetch", type=int, default=4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    workload_arguments(parser)
    parser.add_argument("--generate-runs", type=int, default=4, help="separate generate runs timed (0: skip)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="diffrun-bench-"))
    model_dir = pipelines.make_tiny_model(work / "tiny", "sd", seed=0)
    policy = FetchPolicy(timeout=10, retries=0)
    with LoopbackServer() as server:
        urls = [server.add(f"/in{i}.png", make_png(args.size, i), content_type="image/png") for i in range(args.jobs)]
        jobs = [Job(id=f"j{i}", prompt=f"job {i}", image=[url], seeds=[i], steps=args.steps, strength=0.75)
                for i, url in enumerate(urls)]
        server.latency = args.latency
        options = pipelines.ModelOptions(model=str(model_dir), device="cpu")
        model = pipelines.load_model(options)

        # Warm-up (first calls allocate), then the floor: inference alone, inputs already in memory.
        server.latency = 0.0
        loaded = [jobrun.load_job_inputs(job, policy) for job in jobs]
        server.latency = args.latency
        pipelines.run(model, jobrun.job_requests(jobs[0], loaded[0]))
        start = time.perf_counter()
        for job, inputs in zip(jobs, loaded, strict=True):
            pipelines.run(model, jobrun.job_requests(job, inputs))
        inference_only = time.perf_counter() - start

        # Sequential: fetch, then infer, one job at a time.
        start = time.perf_counter()
        for job in jobs:
            inputs = jobrun.load_job_inputs(job, policy)
            pipelines.run(model, jobrun.job_requests(job, inputs))
        sequential = time.perf_counter() - start

        def batch(size: int) -> tuple[float, float, dict]:
            out = work / f"out-b{size}"
            config = BatchConfig(model=options, policy=policy, output_dir=out, results=out / "results.jsonl",
                                 prefetch=max(args.prefetch, size), batch_size=size)
            summary = run_batch(jobs, config)
            assert summary.ok == len(jobs), summary
            seconds = summary.seconds
            return seconds["total"] - seconds["model_load"], seconds["inference"], seconds

        batch1, infer1, seconds1 = batch(1)
        batch4, infer4, _ = batch(4)

        generate = None
        if args.generate_runs:
            runs = min(args.generate_runs, args.jobs)
            start = time.perf_counter()
            for i in range(runs):
                subprocess.run([sys.executable, "-m", "diffrun", "generate", "-m", str(model_dir), "--device", "cpu",
                                "-p", f"job {i}", "-i", urls[i], "-s", str(i), "--steps", str(args.steps),
                                "--strength", "0.75", "-o", str(work / f"gen{i}.png"), "-q"],
                               check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                 **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})})
            generate = (time.perf_counter() - start) * args.jobs / runs

    import torch

    print(f"{args.jobs} image-to-image jobs, {args.size}x{args.size} inputs, {args.steps} steps, "
          f"{args.latency * 1000:.0f} ms per input, prefetch {args.prefetch}, {torch.get_num_threads()} torch threads")
    print(f"  inference only (floor)        {inference_only:7.2f} s   1.00x")
    print(f"  batch, --batch-size 1         {batch1:7.2f} s   {batch1 / inference_only:.2f}x  (goal <= 1.10x)")
    print(f"    of which inference {infer1:.2f} s, writing {seconds1['writing']:.2f} s, "
          f"waiting for inputs {seconds1['waiting']:.2f} s")
    print(f"  sequential fetch-then-infer   {sequential:7.2f} s   {sequential / inference_only:.2f}x")
    if generate is not None:
        print(f"  {args.jobs} x diffrun generate        {generate:7.2f} s   {generate / inference_only:.2f}x"
              f"  (timed {min(args.generate_runs, args.jobs)} runs, scaled)")
    print(f"  batch, --batch-size 4         {batch4:7.2f} s   inference {infer4:.2f} s vs {infer1:.2f} s: "
          f"{infer1 / infer4:.2f}x faster inference, {batch1 / batch4:.2f}x faster overall")


if __name__ == "__main__":
    main()
