"""Benchmark: loading images over HTTP, diffrun against save-then-load, diffusers and the floor.

Serves N distinct JPEG/PNG images from the loopback test server and measures the median time per
image for each method, interleaved (every image goes through every method, order rotated); ratios
are medians of per-image ratios, so JPEG/PNG size differences cancel out:

  diffrun      diffrun.loaders.load_image(url): pooled session, in memory, checks + decode
  save+load    the same pooled session, body written to a temp file, then Image.open(path)
  diffusers    diffusers.utils.load_image(url): requests.get (a new connection each time)
  floor        pooled session.get(url).content, Image.open(BytesIO(...)).convert("RGB")

Runs three scenarios: plain loopback, every new TCP connection delayed (imitating a TLS handshake),
and big inputs (2048x2048 JPEGs, plain loopback), where any extra copy or pass over the pixels shows.

    python bench/loaders.py --n 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load: single-threaded, like the loaders

from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from loopback import LoopbackServer  # noqa: E402

from diffrun.loaders.http import fetch, session  # noqa: E402
from diffrun.loaders.policy import FetchPolicy  # noqa: E402

Loader = Callable[[str], Image.Image]


def make_images(n: int, size: int, *, jpeg_only: bool = False) -> list[tuple[bytes, str]]:
    """N distinct photo-like images, alternating JPEG (quality 90) and PNG (or all JPEG)."""
    out = []
    for i in range(n):
        noise = Image.effect_noise((size, size), 40 + i).convert("RGB")
        image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
        image = Image.blend(image, noise, 0.35)
        draw = ImageDraw.Draw(image)
        for k in range(6):
            x, y = (i * 37 + k * 71) % size, (i * 53 + k * 29) % size
            draw.ellipse((x, y, x + size // 4, y + size // 5), fill=((i * 40) % 256, (k * 60) % 256, 128))
        image = image.filter(ImageFilter.GaussianBlur(1))
        buf = BytesIO()
        if i % 2 == 0 or jpeg_only:
            image.save(buf, "JPEG", quality=90)
            out.append((buf.getvalue(), "image/jpeg"))
        else:
            image.save(buf, "PNG")
            out.append((buf.getvalue(), "image/png"))
    return out


def diffrun_loader() -> tuple[str, Loader]:
    try:
        from diffrun.loaders import load_image
    except ImportError:
        print("warning: diffrun.loaders.load_image not importable; timing fetch() + PIL instead", file=sys.stderr)
        policy = FetchPolicy()
        return "diffrun (fetch+PIL)", lambda url: Image.open(BytesIO(fetch(url, policy).data)).convert("RGB")
    return "diffrun", lambda url: load_image(url)


def save_then_load(url: str) -> Image.Image:
    resp = session().get(url, stream=True, timeout=30)
    resp.raise_for_status()
    fd, name = tempfile.mkstemp(suffix=".img")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in resp.iter_content(256 * 1024):
                fh.write(chunk)
        with Image.open(name) as image:
            return image.convert("RGB")
    finally:
        os.unlink(name)


def floor(url: str) -> Image.Image:
    resp = session().get(url, timeout=30)
    resp.raise_for_status()
    return Image.open(BytesIO(resp.content)).convert("RGB")


def measure(urls: list[str], methods: dict[str, Loader], repeat: int) -> dict[str, list[float]]:
    """Seconds per image for each method (best of `repeat`), interleaved with a rotating order."""
    names = list(methods)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: imports, first connection
        methods[name](urls[0])
    for i, url in enumerate(urls):
        best = dict.fromkeys(names, float("inf"))
        for r in range(repeat):
            shift = (i + r) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                image = methods[name](url)
                best[name] = min(best[name], time.perf_counter() - start)
                assert image.mode == "RGB" and image.size[0] > 0
        for name in names:
            times[name].append(best[name])
    return times


def ratio(times: dict[str, list[float]], name: str, base: str) -> float:
    """Median of the per-image ratios (paired: the same image, the same moment)."""
    return statistics.median(a / b for a, b in zip(times[name], times[base], strict=True))


def report(title: str, times: dict[str, list[float]], ours: str, limit_vs_diffusers: float) -> list[bool]:
    ref = "diffusers load_image"
    print(f"\n### {title}\n")
    print("| method | median ms/image | vs floor | vs diffusers load_image |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1000:.2f} | {ratio(times, name, 'floor'):.2f}x "
              f"| {ratio(times, name, ref):.2f}x |")
    goals = [
        (f"{ours} <= 1.25x floor", ratio(times, ours, "floor") <= 1.25),
        (f"{ours} <= save+load", ratio(times, ours, "save+load") <= 1.0),
        (f"{ours} <= {limit_vs_diffusers:g}x diffusers load_image", ratio(times, ours, ref) <= limit_vs_diffusers),
    ]
    print()
    for text, met in goals:
        print(f"- {text}: {'met' if met else 'NOT met'}")
    return [met for _, met in goals]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50, help="images per scenario (default 50)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--handshake-ms", type=float, default=20.0,
                        help="delay on every new connection in the second run (default 20)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="loads per image and method; the best is kept (default 3)")
    parser.add_argument("--big", type=int, default=8, help="2048x2048 JPEGs in the big-input scenario (default 8)")
    parser.add_argument("--big-size", type=int, default=2048, help="their side in pixels (default 2048)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers.utils import load_image as diffusers_load_image

    if "torch" in sys.modules:  # diffusers imports it; one thread, like every method here
        sys.modules["torch"].set_num_threads(1)

    diffrun_name, diffrun_load = diffrun_loader()
    methods: dict[str, Loader] = {
        diffrun_name: diffrun_load,
        "save+load": save_then_load,
        "diffusers load_image": diffusers_load_image,
        "floor": floor,
    }
    images = make_images(args.n, args.size)
    sizes = sorted(len(data) for data, _ in images)
    print(f"{args.n} images of {args.size}x{args.size} (JPEG/PNG alternating, median {sizes[len(sizes) // 2]} bytes), "
          f"Python {sys.version.split()[0]}")
    big = make_images(args.big, args.big_size, jpeg_only=True) if args.big > 0 else []
    scenarios = [("plain loopback", images, 0.0, 1.0),
                 (f"new connections delayed {args.handshake_ms:g} ms", images, args.handshake_ms, 0.5)]
    if big:
        scenarios.append((f"{args.big_size}x{args.big_size} JPEG, plain loopback", big, 0.0, 1.0))
    all_met = []
    with LoopbackServer() as server:
        for scenario, inputs, delay, limit in scenarios:
            server.reset()
            server.connection_delay = delay / 1000
            urls = [server.add(f"/img{i}", data, content_type=ctype) for i, (data, ctype) in enumerate(inputs)]
            times = measure(urls, methods, args.repeat)
            all_met += report(scenario, times, diffrun_name, limit)
            print(f"\n(server saw {server.connections} TCP connections for {len(server.log)} requests)")
    print(f"\nall goals met: {all(all_met)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
