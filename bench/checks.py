"""Benchmark the output checks: their cost as a share of a tiny job's time (issue 14 asks under 1%).

One tiny text-to-image job (pipelines.run on the tiny SD model, model loaded once, CPU, 1 thread),
and, on the same decoded output, the checks alone (numpy_to_pil plus NaN/Inf, blank and NSFW
checks: pipelines/checks.convert_images) minus the PIL conversion diffusers would do anyway.
Interleaved rounds, medians:

    python bench/checks.py [--rounds 7] [--steps 4] [--size 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from diffrun import pipelines  # noqa: E402
from diffrun.pipelines.checks import convert_images, numpy_to_pil  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = pipelines.make_tiny_model(Path(tmp) / "tiny", "sd")
        model = pipelines.load_model(pipelines.ModelOptions(str(folder), device="cpu", dtype="fp32", threads=1))
        request = pipelines.Request("a red fox", None, {}, {"num_inference_steps": args.steps, "width": args.size,
                                                            "height": args.size}, 0)
        pipelines.run(model, [request])  # warm up
        decoded = np.random.default_rng(0).random((1, args.size, args.size, 3), dtype=np.float32)
        jobs, checks = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            pipelines.run(model, [request])
            jobs.append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(100):
                convert_images(decoded, nsfw=[False])
            with_checks = (time.perf_counter() - start) / 100
            start = time.perf_counter()
            for _ in range(100):
                numpy_to_pil(decoded)
            conversion = (time.perf_counter() - start) / 100
            checks.append(max(with_checks - conversion, 0.0))
    job, check = statistics.median(jobs), statistics.median(checks)
    print(f"tiny job ({args.size}x{args.size}, {args.steps} steps, 1 thread): {job * 1000:.1f} ms")
    print(f"output checks: {check * 1e6:.0f} us = {100 * check / job:.3f}% of the job")


if __name__ == "__main__":
    main()
