"""Benchmark: one tiny image-to-image job through `diffrun generate` and through `diffusers-cli run`.

Both tools run as whole processes (start-up, imports, model load, 4 steps on CPU in fp32, writing a
PNG), interleaved (diffrun, diffusers-cli, diffrun, ...), on the same tiny model and the bundled
sample image; medians of wall seconds and their ratio. The same for `--help` of each tool.

Goals (from the issue): `diffrun --help` under 0.3 s and at most 0.1x `diffusers-cli --help`;
the whole job at most 0.8x `diffusers-cli run`'s time.

Same job for both: `diffusers-cli run` loads the pipeline class named in model_index.json and
passes `--pipeline-kwargs` to its __call__ verbatim. The tiny model names StableDiffusionPipeline,
whose __call__ swallows unknown keywords (**kwargs), so an `image` there is silently dropped and
the run is text-to-image (checked below: the output is not the input's size). So both tools run
on a copy of the tiny model whose model_index.json names StableDiffusionImg2ImgPipeline (same
weights), where `diffusers-cli run` really does image-to-image; each run's output is checked.

    python bench/generate.py [--repeats 5] [--help-repeats 10] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "diffrun" / "samples" / "sample.png"
PROMPT = "a watercolor landscape"
SEED = 0


def tool(name: str) -> str:
    """The console script next to this Python (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"error: {name} not found (activate the venv that has diffrun and diffusers)")
    return found


def env() -> dict[str, str]:
    out = dict(os.environ, HF_HUB_OFFLINE="1", DIFFUSERS_CLI_RUN_ID="bench")
    out.pop("DIFFRUN_OUTPUT", None)
    return out


def diffrun_job(model: Path, output: Path, steps: int) -> list[str]:
    return [tool("diffrun"), "generate", "-m", str(model), "-i", str(SAMPLE), "-p", PROMPT, "--device", "cpu",
            "--dtype", "fp32", "--steps", str(steps), "-s", str(SEED), "-o", str(output), "--overwrite", "-q"]


def diffusers_job(model: Path, output: Path, steps: int) -> list[str]:
    kwargs = {"prompt": PROMPT, "image": str(SAMPLE), "num_inference_steps": steps}
    return [tool("diffusers-cli"), "run", "-m", str(model), "--device-map", "cpu", "--dtype", "fp32",
            "--seed", str(SEED), "--pipeline-kwargs", json.dumps(kwargs), "-o", str(output)]


def timed(cmd: list[str], output: Path | None = None) -> float:
    """Wall seconds of one whole process; exits with its stderr if it fails or writes no output."""
    if output is not None:
        output.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(), check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or (output is not None and not output.is_file()):
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"error: {Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")
    return seconds


def output_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def make_models(folder: Path) -> tuple[Path, Path]:
    """The tiny sd model as `diffrun tiny-model` writes it, and a copy that names the img2img class."""
    t2i = folder / "tiny-sd"
    subprocess.run([tool("diffrun"), "tiny-model", str(t2i), "--kind", "sd"], stdout=subprocess.DEVNULL,
                   env=env(), check=True)
    i2i = folder / "tiny-sd-img2img"
    shutil.copytree(t2i, i2i)
    index = i2i / "model_index.json"
    config = json.loads(index.read_text())
    config["_class_name"] = "StableDiffusionImg2ImgPipeline"
    index.write_text(json.dumps(config, indent=2))
    return t2i, i2i


def check_jobs(t2i: Path, i2i: Path, work: Path, steps: int) -> None:
    """Both tools succeed and really do image-to-image (output the input's size); warms file caches too."""
    want = output_size(SAMPLE)
    probe = work / "probe.png"
    timed(diffusers_job(t2i, probe, steps), probe)
    got = output_size(probe)
    if got != want:
        print(f"note: `diffusers-cli run` on the model as `diffrun tiny-model` writes it (StableDiffusionPipeline) "
              f"ignores `image` without a word: its __call__ swallows unknown keywords, and diffusers-cli has no "
              f"task option, so it did text-to-image ({got[0]}x{got[1]} output for a {want[0]}x{want[1]} input). "
              f"Both tools therefore run on a copy whose model_index.json names StableDiffusionImg2ImgPipeline.")
    for name, cmd in (("diffrun", diffrun_job), ("diffusers-cli", diffusers_job)):
        out = work / f"check-{name}.png"
        timed(cmd(i2i, out, steps), out)
        got = output_size(out)
        if got != want:
            raise SystemExit(f"error: {name} did not do image-to-image ({got} output for a {want} input)")
    print(f"checked: both tools exit 0 and write a {want[0]}x{want[1]} image-to-image output\n")


def interleave(pairs: dict[str, tuple[list[str], Path | None]], repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in pairs}
    names = list(pairs)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            cmd, output = pairs[name]
            times[name].append(timed(cmd, output))
    return times


def row(what: str, times: dict[str, list[float]]) -> tuple[str, float]:
    ours, theirs = (statistics.median(v) for v in times.values())
    ratio = ours / theirs
    spread = " / ".join(f"{min(v):.2f}-{max(v):.2f}" for v in times.values())
    return f"| {what} | {ours:.3f} | {theirs:.3f} | {ratio:.2f}x | {spread} |", ratio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the job per tool (default 5)")
    parser.add_argument("--help-repeats", type=int, default=10, help="timed --help runs per tool (default 10)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="diffrun-bench-") as tmp:
        work = Path(tmp)
        t2i, i2i = make_models(work)
        print(f"tiny sd model, {SAMPLE.name} input, {args.steps} steps, seed {SEED}, CPU fp32; "
              f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        check_jobs(t2i, i2i, work, args.steps)
        helps = interleave({"diffrun": ([tool("diffrun"), "--help"], None),
                            "diffusers-cli": ([tool("diffusers-cli"), "--help"], None)}, args.help_repeats)
        jobs = interleave({"diffrun": (diffrun_job(i2i, work / "a.png", args.steps), work / "a.png"),
                           "diffusers-cli": (diffusers_job(i2i, work / "b.png", args.steps), work / "b.png")},
                          args.repeats)

    help_row, help_ratio = row(f"`--help` (n={args.help_repeats})", helps)
    job_row, job_ratio = row(f"image-to-image job, {args.steps} steps (n={args.repeats})", jobs)
    print("| whole process | diffrun median s | diffusers-cli median s | ratio | range (diffrun / diffusers-cli) |")
    print("|---|---:|---:|---:|---|")
    print(help_row)
    print(job_row)
    help_median = statistics.median(helps["diffrun"])
    goals = [
        ("`diffrun --help` under 0.3 s", help_median < 0.3),
        ("`diffrun --help` at most 0.1x `diffusers-cli --help`", help_ratio <= 0.1),
        ("whole job at most 0.8x `diffusers-cli run`", job_ratio <= 0.8),
    ]
    print()
    print_goals(goals)
    return 0


def print_goals(goals: list[tuple[str, bool]]) -> bool:
    """One line per goal, met or not, then the verdict; whether all were met."""
    for text, met in goals:
        print(f"- {text}: {'met' if met else 'NOT met'}")
    print(f"\nall goals met: {all(met for _, met in goals)}")
    return all(met for _, met in goals)


if __name__ == "__main__":
    raise SystemExit(main())
