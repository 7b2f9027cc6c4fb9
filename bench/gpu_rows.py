"""bench/gpu.py's rows: each builds what it needs through the Bench, measures, and returns its row(s).

In-process rows call raw diffusers or diffrun's library; process rows run diffrun's entry code in a
fresh interpreter (see PROBE). Measuring helpers: CUDA syncs around every timed region, peaks from
torch.cuda.max_memory_allocated(), reset after each load so a peak is weights plus one row's work.
"""

from __future__ import annotations

import gc
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpu import Bench

ROOT = Path(__file__).resolve().parents[1]
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

# -- measuring ------------------------------------------------------------------------------------


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


def noise_png(size: int, index: int) -> bytes:
    """A size x size PNG of seeded colour noise over a gradient: an image-to-image input."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    base = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.full((size, size), 128.0)], -1)
    noisy = np.clip(base + rng.normal(0, 24, (size, size, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


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
    if (size, steps) == (s.size[kind], s.steps[kind]):
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
    pngs = [noise_png(size, i) for i in range(s.jobs)]
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
                          cwd=ROOT, env=child_env(b), timeout=300)
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
