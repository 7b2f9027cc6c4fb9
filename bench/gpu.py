"""diffrun against raw diffusers on a GPU, full-size SD 1.5 and SDXL side by side: steps/s, images/s, memory.

One prepared script for one call on a CUDA machine: it builds the models (bench/fullsize.py, random
weights, nothing downloaded), runs every row, writes gpu.json and gpu.md under --out (default $OUT)
after each row, and prints the table. Same prompt, seeds, sizes and steps in every row of a model.

    python bench/gpu.py                       # the default rows, about 4 minutes on one H200
    python bench/gpu.py --heavy --compile --no-default   # a second call: the heavier rows only
    python bench/gpu.py --tests               # ...then tests/cuda through pytest (cuda-tests.txt)
    python bench/gpu.py --cpu-smoke           # every code path on CPU: shrunk models, 64x64, 2 steps

Rows (SD 1.5 at 512x512 x 20 steps, SDXL at 1024x1024 x 12; in-process rows are warm, after one call):
  raw diffusers         DiffusionPipeline.from_pretrained(...).to(cuda), pipe(...) in a loop (the baseline)
  diffrun library       pipelines.load_model + pipelines.run, as generate and batch call them
  diffrun generate      a fresh process per run (cold: imports, load, first call); inference from --json
  diffrun batch         a fresh process, 16 jobs, --batch-size 1 and 4 (SD 1.5)
  --dtype fp16 / bf16   (auto's pick is the library row); --offload model
  img2img batch         16 jobs: inputs preloaded (floor) vs batch with data: URIs vs batch from a
                        loopback server with --latency per input (the prefetch should hide it)
  --heavy               --offload sequential; 2048x2048 with and without --vae-tiling (SD 1.5)
  --compile             --compile on SD 1.5: first call and steady steps/s

The process rows run diffrun's own entry code (`diffrun.cli.app.main`, what the `diffrun` console script
calls) in a fresh interpreter, which then writes torch.cuda.max_memory_allocated() for the peak column.
Rows start only while --budget seconds have not passed; a failing row is recorded and the rest go on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")) if p not in sys.path]

import gpu_report  # noqa: E402

PROMPT = "a lighthouse on a cliff at dawn, oil painting"
WARM_SEED = 1000
PROBE = ("import json, os, sys\n"
         "from diffrun.cli.app import main\n"
         "code = main(sys.argv[2:])\n"
         "torch = sys.modules.get('torch')\n"
         "peak = torch.cuda.max_memory_allocated() if torch and torch.cuda.is_initialized() else None\n"
         "open(sys.argv[1], 'w').write(json.dumps({'peak': peak}))\n"
         "sys.stdout.flush(); sys.stderr.flush(); os._exit(code)\n")
"""`python -c PROBE PEAKFILE ARGS...`: `diffrun ARGS...` as the console script runs it, plus the peak."""


@dataclass
class Settings:
    smoke: bool
    device: str
    scale: str
    size: dict[str, int]
    steps: dict[str, int]
    repeats: dict[str, int]
    jobs: int
    big_size: int
    heavy_steps: int
    latency: float
    save_dtype: str = "fp16"

    @classmethod
    def make(cls, smoke: bool, args: argparse.Namespace) -> Settings:
        if smoke:
            return cls(True, "cpu", "tiny", {"sd15": 64, "sdxl": 64}, {"sd15": 2, "sdxl": 2}, {"sd15": 1, "sdxl": 1},
                       jobs=args.jobs or 4, big_size=128, heavy_steps=2, latency=args.latency)
        return cls(False, "cuda", "full", {"sd15": 512, "sdxl": 1024}, {"sd15": 20, "sdxl": 12},
                   {"sd15": 3, "sdxl": 2}, jobs=args.jobs or 16, big_size=2048, heavy_steps=4, latency=args.latency)


@dataclass
class Bench:
    s: Settings
    work: Path
    report: gpu_report.Report
    budget: float
    start: float = field(default_factory=time.perf_counter)
    models: dict[str, Path] = field(default_factory=dict)
    raw_images: dict[tuple[str, int], Any] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", file=sys.stderr, flush=True)

    def model(self, kind: str) -> Path:
        """The model folder, built on first use (or reused from --work)."""
        if kind not in self.models:
            import fullsize

            folder = self.work / f"{kind}-{self.s.scale}"
            started = time.perf_counter()
            reused = (folder / "model_index.json").is_file()
            if not reused:
                self.say(f"building {kind} ({self.s.scale}) in {folder}")
                fullsize.save_model(folder, kind, self.s.scale, self.s.save_dtype, seed=0, device=self.s.device)
            params = sum(fullsize.count_parameters(kind, self.s.scale).values())
            self.report.builds.append({"model": kind, "scale": self.s.scale, "dtype": self.s.save_dtype,
                                       "parameters": params, "bytes": _folder_bytes(folder), "reused": reused,
                                       "seconds": round(time.perf_counter() - started, 2)})
            self.models[kind] = folder
        return self.models[kind]


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors"))


# -- measuring ------------------------------------------------------------------------------------


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_bytes() -> int | None:
    import torch

    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    sync()
    started = time.perf_counter()
    value = fn(*args)
    sync()
    return time.perf_counter() - started, value


def pixels(image: Any) -> Any:
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.int16)


def image_check(images: list[Any]) -> dict[str, Any]:
    """Black or flat output (a NaN decodes to black) is recorded: random weights still give varied pixels."""
    arrays = [pixels(i) for i in images]
    return {"mean": round(float(sum(a.mean() for a in arrays) / len(arrays)), 2),
            "std": round(float(min(a.std() for a in arrays)), 2)}


def measures(kind: str, row: str, how: str, *, images: int, steps: int, size: int, seconds: float,
             **extra: Any) -> dict[str, Any]:
    return {"model": kind, "row": row, "how": how, "images": images, "steps": steps, "size": size,
            "inference_s": round(seconds, 4), "images_per_s": round(images / seconds, 4) if seconds else None,
            "steps_per_s": round(images * steps / seconds, 3) if seconds else None, **extra}


def compare_raw(b: Bench, kind: str, seeds: list[int], images: list[Any]) -> str:
    """How far these images are from raw diffusers' for the same seeds (same dtype, size and steps)."""
    diffs = [int(abs(pixels(img) - b.raw_images[(kind, seed)]).max())
             for seed, img in zip(seeds, images, strict=True) if (kind, seed) in b.raw_images]
    if not diffs:
        return ""
    return "same pixels as raw" if max(diffs) == 0 else f"max |Δ| vs raw {max(diffs)}/255"


# -- in-process rows ------------------------------------------------------------------------------


def raw_row(b: Bench, kind: str) -> dict[str, Any]:
    """Raw diffusers: from_pretrained, .to(device), pipe(...) in a warm loop."""
    import torch
    from diffusers import DiffusionPipeline

    from diffrun.pipelines import runtime
    from diffrun.pipelines.loading import dtype_kwarg

    s = b.s
    dtype = runtime.resolve_dtype("auto", s.device)  # what diffrun's --dtype auto picks, for a fair pairing
    folder = b.model(kind)
    load_s, pipe = timed(lambda: DiffusionPipeline.from_pretrained(
        str(folder), **{dtype_kwarg(): runtime.torch_dtype(dtype)}).to(s.device))
    pipe.set_progress_bar_config(disable=True)

    def call(seed: int) -> Any:
        return pipe(prompt=PROMPT, num_inference_steps=s.steps[kind], width=s.size[kind], height=s.size[kind],
                    generator=torch.Generator("cpu").manual_seed(seed)).images[0]

    first_s, _ = timed(call, WARM_SEED)
    reset_peak()
    seeds = list(range(s.repeats[kind]))
    seconds, images = timed(lambda: [call(seed) for seed in seeds])
    for seed, image in zip(seeds, images, strict=True):
        b.raw_images[(kind, seed)] = pixels(image)
    row = measures(kind, "raw diffusers", "in-process", images=len(seeds), steps=s.steps[kind], size=s.size[kind],
                   seconds=seconds, dtype=dtype, load_s=round(load_s, 3), first_call_s=round(first_s, 3),
                   peak_bytes=peak_bytes(), check=image_check(images))
    return row


def library_row(b: Bench, kind: str, row: str, *, dtype: str = "auto", offload: str = "none",
                vae_tiling: bool = False, compile_: bool = False, size: int | None = None, steps: int | None = None,
                repeats: int | None = None) -> dict[str, Any]:
    """diffrun's library: pipelines.load_model with these options, then pipelines.run per image, warm."""
    from diffrun import pipelines
    from diffrun.engine import jobrun
    from diffrun.jobs import Job

    s = b.s
    size, steps = size or s.size[kind], steps or s.steps[kind]
    notes = []
    if s.smoke and offload != "none":
        notes.append(f"cpu smoke: --offload {offload} not applied (CUDA only)")
        offload = "none"
    if s.smoke and compile_:
        notes.append("cpu smoke: --compile not applied")
        compile_ = False
    options = pipelines.ModelOptions(model=str(b.model(kind)), device=s.device, dtype=dtype, offload=offload,
                                     vae_tiling=vae_tiling, compile=compile_)
    load_s, model = timed(pipelines.load_model, options)

    def call(seed: int) -> Any:
        job = Job(prompt=PROMPT, seeds=[seed], steps=steps, width=size, height=size)
        return pipelines.run(model, jobrun.job_requests(job, jobrun.JobInputs()))[0].images[0]

    first_s, _ = timed(call, WARM_SEED)
    reset_peak()
    seeds = list(range(repeats or s.repeats[kind]))
    seconds, images = timed(lambda: [call(seed) for seed in seeds])
    if (size, steps) == (s.size[kind], s.steps[kind]) and offload == "none" and not compile_:
        notes.append(compare_raw(b, kind, seeds, images))
    result = measures(kind, row, "in-process", images=len(seeds), steps=steps, size=size, seconds=seconds,
                      dtype=model.dtype, load_s=round(load_s, 3), first_call_s=round(first_s, 3),
                      peak_bytes=peak_bytes(), check=image_check(images), note="; ".join(n for n in notes if n))
    return result


def img2img_rows(b: Bench, kind: str = "sd15") -> list[dict[str, Any]]:
    """The same image-to-image jobs three ways: inputs preloaded (floor), batch from data: URIs (in
    memory, no network), batch from a loopback server that waits --latency before each answer."""
    import base64

    from loopback import LoopbackServer

    from diffrun import pipelines
    from diffrun.engine import jobrun
    from diffrun.engine.batch import BatchConfig, BatchRunner
    from diffrun.jobs import Job
    from diffrun.loaders import FetchPolicy

    s = b.s
    size, steps, strength = s.size[kind], s.steps[kind], 0.75
    effective = int(steps * strength)
    pngs = [gpu_report.noise_png(size, i) for i in range(s.jobs)]
    policy = FetchPolicy(timeout=30, retries=0)
    model = pipelines.load_model(pipelines.ModelOptions(model=str(b.model(kind)), device=s.device))
    rows = []

    def jobs_for(refs: list[str], tag: str) -> list[Job]:
        return [Job(id=f"{tag}{i:02d}", prompt=PROMPT, image=[ref], seeds=[i], steps=steps, strength=strength)
                for i, ref in enumerate(refs)]

    def batch(jobs: list[Job], name: str) -> dict[str, Any]:
        out = b.work / f"img2img-{name}"
        shutil.rmtree(out, ignore_errors=True)
        config = BatchConfig(model=model.options, policy=policy, output_dir=out, results=out / "results.jsonl",
                             prefetch=4, batch_size=1, overwrite=True)
        runner = BatchRunner(jobs, config)
        runner.model = model  # loaded once for all three rows; its load is not what is compared here
        reset_peak()
        seconds, summary = timed(runner.run)
        if summary.ok != len(jobs):
            raise RuntimeError(f"{summary.failed} of {len(jobs)} jobs failed (see {out}/results.jsonl)")
        return measures(kind, f"img2img batch, {name}", "in-process", images=len(jobs), steps=effective, size=size,
                        seconds=seconds, dtype=model.dtype, peak_bytes=peak_bytes(),
                        waiting_s=round(summary.seconds["waiting"], 3))

    with LoopbackServer() as server:
        urls = [server.add(f"/in{i}.png", png, content_type="image/png") for i, png in enumerate(pngs)]
        data = ["data:image/png;base64," + base64.b64encode(png).decode() for png in pngs]
        jobs = jobs_for(data, "m")
        loaded = [jobrun.load_job_inputs(job, policy) for job in jobs]
        pipelines.run(model, jobrun.job_requests(jobs[0], loaded[0]))  # warm-up
        reset_peak()
        seconds, _ = timed(lambda: [pipelines.run(model, jobrun.job_requests(j, i)) for j, i in zip(
            jobs, loaded, strict=True)])
        rows.append(measures(kind, "img2img, inputs preloaded (floor)", "in-process", images=len(jobs),
                             steps=effective, size=size, seconds=seconds, dtype=model.dtype,
                             peak_bytes=peak_bytes(), note="no outputs written"))
        rows.append(batch(jobs, "data: URIs (in memory)"))
        server.latency = s.latency
        rows.append(batch(jobs_for(urls, "u"), f"URLs, {s.latency * 1000:.0f} ms latency"))
    for row in rows[1:]:
        row["note"] = (f"{row['images_per_s'] / rows[0]['images_per_s']:.2f}× the floor's images/s; "
                       f"waited {row['waiting_s']:.2f} s for inputs")
    return rows


# -- process rows ---------------------------------------------------------------------------------


def child_env(b: Bench) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIFFRUN_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    if b.s.smoke:
        env["OMP_NUM_THREADS"] = "1"
    return env


def run_diffrun(b: Bench, args: list[str], name: str) -> tuple[float, subprocess.CompletedProcess[str], int | None]:
    """`diffrun ARGS` in a fresh process: (wall seconds, the process, its peak CUDA bytes)."""
    peak_file = b.work / f"peak-{name}.json"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE, str(peak_file), *args], capture_output=True, text=True,
                          cwd=ROOT, env=child_env(b), timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"diffrun {args[0]} exited {proc.returncode}: {lines[-1] if lines else '(no stderr)'}")
    peak = json.loads(peak_file.read_text())["peak"] if peak_file.is_file() else None
    return wall, proc, peak


def common_args(b: Bench, kind: str) -> list[str]:
    s = b.s
    return ["-m", str(b.model(kind)), "--steps", str(s.steps[kind]), "--width", str(s.size[kind]),
            "--height", str(s.size[kind]), "--device", s.device, "--dtype", "auto"]


def generate_row(b: Bench, kind: str) -> dict[str, Any]:
    seeds = list(range(b.s.repeats[kind]))
    out = b.work / f"generate-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    seed_args = [a for seed in seeds for a in ("-s", str(seed))]
    wall, proc, peak = run_diffrun(b, ["generate", *common_args(b, kind), "-p", PROMPT, *seed_args,
                                       "-o", str(out / "{seed}.png"), "--json", "-q"], f"generate-{kind}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    from PIL import Image

    images = [Image.open(path) for path in summary["outputs"]]
    return measures(kind, "diffrun generate", "process", images=len(seeds), steps=b.s.steps[kind],
                    size=b.s.size[kind], seconds=summary["timings"]["inference"], dtype=summary["dtype"],
                    load_s=summary["timings"]["model_load"], process_s=round(wall, 3), peak_bytes=peak,
                    check=image_check(images),
                    note="cold: the first call is in the inference time; " + compare_raw(b, kind, seeds, images))


def batch_row(b: Bench, kind: str, batch_size: int) -> dict[str, Any]:
    out = b.work / f"batch-{kind}-{batch_size}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifest = out / "jobs.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"j{i:02d}", "prompt": f"{PROMPT}, variation {i}", "seed": i})
                                + "\n" for i in range(b.s.jobs)))
    wall, proc, peak = run_diffrun(b, ["batch", str(manifest), *common_args(b, kind), "--batch-size",
                                       str(batch_size), "-o", str(out / "images"), "--json"], f"batch-{batch_size}")
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    ok = [r for r in records if r.get("status") == "ok"]
    if len(ok) != b.s.jobs:
        raise RuntimeError(f"{b.s.jobs - len(ok)} of {b.s.jobs} batch jobs did not finish ok")
    from diffrun import outputs

    inference = sum(r["timings"]["inference"] for r in ok)
    load = re.search(r"model loading\s+([\d.]+) s", proc.stderr)
    return measures(kind, f"diffrun batch, {b.s.jobs} jobs, --batch-size {batch_size}", "process", images=len(ok),
                    steps=b.s.steps[kind], size=b.s.size[kind], seconds=inference,
                    dtype=outputs.read_recipe(ok[0]["outputs"][0]).get("dtype"),
                    load_s=float(load.group(1)) if load else None, process_s=round(wall, 3), peak_bytes=peak,
                    process_images_per_s=round(len(ok) / wall, 4), note="inference: the sum of the jobs' shares")


# -- the plan -------------------------------------------------------------------------------------


def plan(b: Bench, args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(label, callable returning a row or rows), in the order they run: the most wanted first."""
    s, kinds = b.s, args.models
    rows: list[tuple[str, Any]] = []
    if not args.no_default:
        for kind in kinds:
            rows += [(f"{kind} raw diffusers", lambda k=kind: raw_row(b, k)),
                     (f"{kind} diffrun library", lambda k=kind: library_row(b, k, "diffrun library, --dtype auto")),
                     (f"{kind} diffrun generate", lambda k=kind: generate_row(b, k))]
            if kind == "sd15":
                rows += [(f"sd15 batch --batch-size {n}", lambda n=n: batch_row(b, "sd15", n)) for n in (1, 4)]
                rows += [(f"sd15 --dtype {d}", lambda d=d: library_row(b, "sd15", f"diffrun library, --dtype {d}",
                                                                       dtype=d))
                         for d in ("fp16", "bf16") if s.smoke or d != _auto_dtype(s)]
            rows.append((f"{kind} --offload model",
                         lambda k=kind: library_row(b, k, "diffrun library, --offload model", offload="model")))
            if kind == "sd15":
                rows.append(("sd15 img2img: preloaded vs data: URIs vs URLs", lambda: img2img_rows(b)))
    if args.heavy and "sd15" in kinds:
        hs = s.heavy_steps
        rows += [("sd15 --offload sequential", lambda: library_row(
                     b, "sd15", "diffrun library, --offload sequential", offload="sequential", steps=hs, repeats=1)),
                 (f"sd15 {s.big_size}² no tiling", lambda: library_row(
                     b, "sd15", f"{s.big_size}², no --vae-tiling", size=s.big_size, steps=hs, repeats=1)),
                 (f"sd15 {s.big_size}² --vae-tiling", lambda: library_row(
                     b, "sd15", f"{s.big_size}², --vae-tiling", vae_tiling=True, size=s.big_size, steps=hs, repeats=1))]
    if args.compile and "sd15" in kinds:
        rows.append(("sd15 --compile", lambda: library_row(b, "sd15", "diffrun library, --compile", compile_=True)))
    return rows


def _auto_dtype(s: Settings) -> str:
    from diffrun.pipelines import runtime

    return runtime.resolve_dtype("auto", s.device)


def run_tests(b: Bench) -> dict[str, Any]:
    """tests/cuda through pytest (skipped without CUDA), with this run's SD 1.5 folder; log in cuda-tests.txt."""
    env = child_env(b)
    if "sd15" in b.models and not b.s.smoke:
        env["DIFFRUN_CUDA_SD15"] = str(b.models["sd15"])
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda",
                           "tests/cuda"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    (b.report.out / "cuda-tests.txt").write_text(proc.stdout + proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {"exit": proc.returncode, "summary": lines[-1] if lines else "", "seconds": round(
        time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="shrunk models on CPU, 64x64, 2 steps")
    parser.add_argument("--out", type=Path, default=None, help="where gpu.json and gpu.md go [default: $OUT]")
    parser.add_argument("--work", type=Path, default=None, help="model and output folder, kept and reused "
                                                                 "[default: a temporary folder, removed]")
    parser.add_argument("--models", type=lambda t: t.split(","), default=["sd15", "sdxl"], help="sd15,sdxl")
    parser.add_argument("--heavy", action="store_true", help="add sequential offload and 2048² tiling rows")
    parser.add_argument("--compile", action="store_true", help="add the --compile row (SD 1.5)")
    parser.add_argument("--no-default", action="store_true", help="run only the rows the flags above add")
    parser.add_argument("--tests", action="store_true", help="then run tests/cuda (cuda-tests.txt)")
    parser.add_argument("--jobs", type=int, default=0, help="batch jobs [default: 16; 4 with --cpu-smoke]")
    parser.add_argument("--latency", type=float, default=0.2, help="loopback server delay per input, seconds")
    parser.add_argument("--budget", type=float, default=None,
                        help="start no row after this many seconds [default: 255; none with --cpu-smoke]")
    args = parser.parse_args(argv)
    if not set(args.models) <= {"sd15", "sdxl"}:
        parser.error("--models: sd15, sdxl or both")
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else Path("bench-gpu-out"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.cpu_smoke:
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        parser.error("torch sees no CUDA device; use --cpu-smoke to check the code paths on CPU")
    s = Settings.make(args.cpu_smoke, args)
    work = args.work or Path(tempfile.mkdtemp(prefix="diffrun-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    report = gpu_report.Report(out, gpu_report.environment(s.smoke, s.__dict__))
    b = Bench(s, work, report, args.budget if args.budget is not None else (1e9 if s.smoke else 255.0))
    try:
        for label, fn in plan(b, args):
            if b.elapsed() > b.budget:
                report.add({"row": label, "status": "not run", "note": f"time budget ({b.budget:.0f} s) spent"})
                continue
            b.say(label)
            try:
                result = fn()
            except Exception as exc:  # a failing row (OOM, a library change) must not cost the other rows
                b.say(f"  failed: {type(exc).__name__}: {exc}")
                report.add({"row": label, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]})
            else:
                for row in result if isinstance(result, list) else [result]:
                    report.add({**row, "status": "ok"})
            free_memory()
        if args.tests:
            b.say("tests/cuda")
            report.tests = run_tests(b)
        report.save()
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report.markdown())
    return 0 if all(r["status"] != "failed" for r in report.rows) and report.tests.get("exit", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
