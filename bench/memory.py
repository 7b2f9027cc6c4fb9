"""Benchmark: peak memory of decoding big, small-on-disk inputs, this tree against another, side by side.

The files are the kinds that used to peak at gigabytes: a float32 TIFF, a 16-bit PNG and an RGBA
PNG of 9000x9900 (89.1 MP, just under the default --max-pixels) that are only kilobytes on disk,
plus an RGB JPEG, and the three deep/transparent ones loaded at once by three workers (as
`inspect --workers 3` does). Each load runs in a fresh child process: after a warm-up load of a
tiny file of the same kind, the kernel's peak-RSS mark is reset (/proc/self/clear_refs, Linux) and
the peak above the RSS before the load is reported. The bound shown is 2 x width x height x 4 bytes
(Pillow holds RGB at 4 bytes a pixel: the decoded image and the output).

    python bench/memory.py --before ../main          # a checkout of the code to compare with
    python bench/memory.py --size 3000x2000          # smaller, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import json, sys
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
from diffrun.loaders import load_input, load_many
load_input(sys.argv[1])
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
results = list(load_many(sys.argv[2:], workers=3))
assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
print(json.dumps({"peak": status("VmHWM") - before}))
"""


def _save(image: Image.Image, path: Path, **params) -> Path:
    image.save(path, **params)
    return path


def make_files(folder: Path, width: int, height: int) -> dict[str, tuple[Path, Path]]:
    """name -> (big file, tiny warm-up file of the same kind)."""
    def steps(w: int, h: int) -> np.ndarray:  # blocky, so every kind compresses to a small file
        return np.tile((np.arange(w) // max(1, w // 16)).astype(np.float32) / 16, (h, 1))

    files = {}
    for name, make in (
        ("float32 TIFF", lambda w, h, p: _save(Image.fromarray(steps(w, h)), p, compression="tiff_adobe_deflate")),
        ("16-bit PNG", lambda w, h, p: _save(Image.fromarray((steps(w, h) * 65535).astype(np.uint16)), p)),
        ("RGBA PNG", lambda w, h, p: _save(Image.merge("RGBA", [Image.fromarray((steps(w, h) * 255).astype(
            np.uint8))] * 4), p)),
        ("RGB JPEG", lambda w, h, p: _save(Image.fromarray((steps(w, h) * 255).astype(np.uint8)).convert("RGB"), p,
                                           quality=90)),
    ):
        ext = {"float32 TIFF": "tif", "RGB JPEG": "jpg"}.get(name, "png")
        slug = name.split()[0].lower().replace("-", "")
        files[name] = (make(width, height, folder / f"{slug}.{ext}"), make(8, 8, folder / f"{slug}-tiny.{ext}"))
    return files


def peak(tree: Path, warm: Path, paths: list[Path]) -> int:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(warm), *map(str, paths)], capture_output=True,
                          env=env, cwd=warm.parent, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{tree}: {proc.stderr.decode()[-2000:]}")
    return int(json.loads(proc.stdout)["peak"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="another diffrun checkout to run side by side (e.g. main)")
    parser.add_argument("--size", default="9000x9900", help="WIDTHxHEIGHT of the big files (default 9000x9900)")
    args = parser.parse_args(argv)
    if not Path("/proc/self/clear_refs").exists():
        raise SystemExit("needs Linux: /proc/self/clear_refs resets the peak-RSS mark")
    width, height = (int(v) for v in args.size.lower().split("x"))
    trees = [("before", args.before.resolve())] if args.before else []
    trees.append(("this tree", ROOT))
    bound = 2 * width * height * 4
    with tempfile.TemporaryDirectory(prefix="diffrun-bench-") as tmp:
        files = make_files(Path(tmp), width, height)
        rows = [(f"{name} ({files[name][0].stat().st_size / 1e3:,.0f} kB)", files[name][1], [files[name][0]])
                for name in files]
        deep = [name for name in files if name != "RGB JPEG"]
        rows.append(("the three above, 3 workers", files[deep[0]][1], [files[name][0] for name in deep]))
        print(f"{width}x{height} ({width * height / 1e6:.1f} MP); bound 2 x w x h x 4 = {bound / 1e6:,.0f} MB; "
              f"Python {sys.version.split()[0]}\n")
        print("| input | " + " | ".join(f"peak MB, {label}" for label, _ in trees) + " | vs bound |")
        print("|---|" + "---:|" * (len(trees) + 1))
        for label, warm, paths in rows:
            peaks = [peak(tree, warm, paths) for _, tree in trees]
            cells = " | ".join(f"{p / 1e6:,.0f}" for p in peaks)
            print(f"| {label} | {cells} | {peaks[-1] / bound:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
