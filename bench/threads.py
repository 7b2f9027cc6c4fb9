"""Benchmark CPU threads: diffrun's default `--threads` against torch's own choice and against 1.

Two CPU workloads on a tiny model, each timed under every thread count, interleaved (A B C, B C A,
...) so a busy machine slows them alike; medians of the rounds:

  generate   one text-to-image job (the pipeline call alone, model loaded once)
  batch      image-to-image jobs whose inputs come from a loopback server, with the prefetch pool's
             loader threads fetching and decoding beside inference (the batch engine, as `batch` runs)

    python bench/threads.py [--rounds 5] [--steps 4] [--size 64] [--jobs 8] [--latency 0.05]

torch's own choice is read before anything sets it, with OMP_NUM_THREADS removed from this process
(torch obeys it); pass --threads-list to time other counts as well.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.pop("OMP_NUM_THREADS", None)  # torch's own default is what we compare against
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

import torch  # noqa: E402

TORCH_DEFAULT = torch.get_num_threads()  # before diffrun or anything else changes it

from batch import make_png  # noqa: E402
from loopback import LoopbackServer  # noqa: E402

from diffrun import pipelines  # noqa: E402
from diffrun.engine.batch import BatchConfig, BatchRunner  # noqa: E402
from diffrun.jobs import Job  # noqa: E402
from diffrun.loaders import FetchPolicy  # noqa: E402
from diffrun.pipelines.runtime import default_threads, usable_cpus  # noqa: E402


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64, help="output size (generate and batch)")
    parser.add_argument("--jobs", type=int, default=8, help="batch jobs per timing")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server takes per input")
    parser.add_argument("--input-size", type=int, default=512, help="batch input PNG size (decoding costs CPU)")
    parser.add_argument("--threads-list", type=int, nargs="*", default=[], help="more thread counts to time")
    args = parser.parse_args()

    chosen = default_threads(TORCH_DEFAULT)
    counts = {f"torch's own ({TORCH_DEFAULT})": TORCH_DEFAULT, "1": 1, f"diffrun default ({chosen})": chosen}
    counts.update({str(n): n for n in args.threads_list})

    work = Path(tempfile.mkdtemp(prefix="diffrun-bench-threads-"))
    model_dir = pipelines.make_tiny_model(work / "tiny", "sd", seed=0)
    options = pipelines.ModelOptions(model=str(model_dir), device="cpu", threads=TORCH_DEFAULT)
    model = pipelines.load_model(options)
    request = pipelines.Request("a red fox", None, {}, {"num_inference_steps": args.steps, "width": args.size,
                                                        "height": args.size}, seed=0)
    policy = FetchPolicy(timeout=10, retries=0)
    times: dict[str, dict[str, list[float]]] = {"generate": {}, "batch": {}}

    with LoopbackServer() as server:
        urls = [server.add(f"/in{i}.png", make_png(args.input_size, i), content_type="image/png")
                for i in range(args.jobs)]
        server.latency = args.latency
        jobs = [Job(id=f"j{i}", prompt=f"job {i}", image=[url], seeds=[i], steps=args.steps, strength=0.75,
                    width=args.size, height=args.size) for i, url in enumerate(urls)]

        def batch_run(tag: str) -> None:
            out = work / f"out-{tag}"
            config = BatchConfig(model=options, policy=policy, output_dir=out, results=out / "results.jsonl",
                                 prefetch=4, force=True)
            runner = BatchRunner(jobs, config)
            runner.model = model  # loaded once, above: model loading is not what is timed
            summary = runner.run()
            assert summary.ok == len(jobs), summary

        pipelines.run(model, [request])  # warm-up: first calls allocate
        batch_run("warm")
        names = list(counts)
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                torch.set_num_threads(counts[name])
                times["generate"].setdefault(name, []).append(timed(lambda: pipelines.run(model, [request])))
                times["batch"].setdefault(name, []).append(timed(lambda tag=f"r{r}": batch_run(tag)))

    baseline = names[0]
    print(f"{usable_cpus()} usable CPUs, torch's own choice {TORCH_DEFAULT} threads, diffrun's default {chosen}; "
          f"medians of {args.rounds} interleaved rounds")
    print(f"  generate: one {args.size}x{args.size} text-to-image call, {args.steps} steps")
    for name in names:
        med = statistics.median(times["generate"][name])
        print(f"    {name:<24} {med:7.3f} s   {statistics.median(times['generate'][baseline]) / med:5.2f}x")
    print(f"  batch: {args.jobs} image-to-image jobs, {args.input_size}px PNG inputs over loopback "
          f"({args.latency * 1000:.0f} ms each), prefetch 4")
    for name in names:
        med = statistics.median(times["batch"][name])
        print(f"    {name:<24} {med:7.3f} s   {statistics.median(times['batch'][baseline]) / med:5.2f}x")
    print("  (x: speed against torch's own choice; higher is faster)")


if __name__ == "__main__":
    main()
