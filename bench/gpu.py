"""diffrun against raw diffusers on a GPU, full-size SD 1.5 and SDXL side by side: steps/s, images/s, memory.

One prepared script for one call on a CUDA machine: it builds the models (bench/fullsize.py, random
weights, nothing downloaded), runs every row, writes gpu.json and gpu.md under --out (default $OUT)
after each row, and prints the table. Same prompt, seeds, sizes and steps in every row of a model.

    python bench/gpu.py                       # the default rows: planned for under 5 minutes on one H200
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
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [p for p in (str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")) if p not in sys.path]

import gpu_report  # noqa: E402
import gpu_rows  # noqa: E402


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
                   {"sd15": 5, "sdxl": 3}, jobs=args.jobs or 16, big_size=2048, heavy_steps=4, latency=args.latency)


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


# -- the plan -------------------------------------------------------------------------------------


def plan(b: Bench, args: argparse.Namespace) -> list[tuple[str, Any]]:
    """(label, callable returning a row or rows), in the order they run: the most wanted first."""
    s, kinds = b.s, args.models
    lib, steps = gpu_rows.library_row, s.heavy_steps
    todo: list[tuple[str, Any]] = []
    if not args.no_default:
        # The first question (does diffrun cost anything?) first, so a cut budget loses the least wanted rows.
        for kind in kinds:
            todo += [(f"{kind} raw diffusers", partial(gpu_rows.raw_row, b, kind)),
                     (f"{kind} diffrun library", partial(lib, b, kind, "diffrun library, --dtype auto")),
                     (f"{kind} diffrun generate", partial(gpu_rows.generate_row, b, kind))]
        if "sd15" in kinds:
            todo += [(f"sd15 batch --batch-size {n}", partial(gpu_rows.batch_row, b, "sd15", n)) for n in (1, 4)]
            todo.append(("sd15 img2img: preloaded vs data: URIs vs URLs", partial(gpu_rows.img2img_rows, b, "sd15")))
            todo += [(f"sd15 --dtype {d}", partial(lib, b, "sd15", f"diffrun library, --dtype {d}", dtype=d))
                     for d in _dtypes(s)]
        todo += [(f"{kind} --offload model", partial(lib, b, kind, "diffrun library, --offload model",
                                                     offload="model")) for kind in kinds]
    if args.no_default and (args.heavy or args.compile) and "sd15" in kinds:  # their baseline
        todo.append(("sd15 diffrun library", partial(lib, b, "sd15", "diffrun library, --dtype auto")))
    if args.heavy and "sd15" in kinds:
        todo += [("sd15 --offload sequential", partial(lib, b, "sd15", "diffrun library, --offload sequential",
                                                       offload="sequential", repeats=1)),
                 (f"sd15 {s.big_size}² no tiling", partial(lib, b, "sd15", f"{s.big_size}², no --vae-tiling",
                                                           size=s.big_size, steps=steps, repeats=1)),
                 (f"sd15 {s.big_size}² --vae-tiling", partial(lib, b, "sd15", f"{s.big_size}², --vae-tiling",
                                                              vae_tiling=True, size=s.big_size, steps=steps,
                                                              repeats=1))]
    if args.compile and "sd15" in kinds:
        todo.append(("sd15 --compile", partial(lib, b, "sd15", "diffrun library, --compile", compile_=True)))
    return todo


def _dtypes(s: Settings) -> tuple[str, ...]:
    """The explicit --dtype rows: fp16 and bf16 less auto's pick (that is the library row); fp16 on CPU."""
    from diffrun.pipelines import runtime

    if s.smoke:
        return ("fp16",)
    return tuple(d for d in ("fp16", "bf16") if d != runtime.resolve_dtype("auto", s.device))


def run_tests(b: Bench) -> dict[str, Any]:
    """tests/cuda through pytest (skipped without CUDA), on this run's models; the log goes to cuda-tests.txt."""
    env = gpu_rows.child_env(b)
    for kind, folder in b.models.items():
        if not b.s.smoke:  # the full-size folders; without them the tests build the tiny-scale ones
            env[f"DIFFRUN_CUDA_{kind.upper()}"] = str(folder)
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
    parser.add_argument("--out", type=Path, default=None,
                        help="where gpu.json and gpu.md go [default: $OUT, else ./bench-gpu-out]")
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
            gpu_rows.free_memory()
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
