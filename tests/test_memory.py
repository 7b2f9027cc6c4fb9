"""Decoded memory: each decode's peak is bounded, concurrent decodes share a budget, dry runs honour --prefetch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import badimages
import images
import numpy as np
import pytest
from clirun import diffrun
from PIL import Image

from diffrun.loaders import FetchPolicy, load_many
from diffrun.loaders.decode import normalise

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 3000, 2000

# A child process: load a tiny file of the same kind (imports, decoder set-up), then reset the
# kernel's peak-RSS mark and load the big one. The peak above the RSS before is the load's own.
_PEAK = """
import json, sys
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
from diffrun.loaders import load_input
load_input(sys.argv[2])
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
loaded = load_input(sys.argv[1])
print(json.dumps({"delta": status("VmHWM") - before, "size": loaded.image.size, "mode": loaded.image.mode}))
"""


def _peak(big: Path, small: Path) -> dict:
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", _PEAK, str(big), str(small)], capture_output=True, env=env,
                          cwd=big.parent, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


def _photo_jpeg(width: int, height: int) -> bytes:
    noise = (np.random.default_rng(1).random((height, width, 3)) * 255).astype(np.uint8)
    return images.encode(Image.fromarray(noise), "JPEG", quality=85)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
@pytest.mark.parametrize(("kind", "make", "ext"), [
    ("float32 TIFF", badimages.float_tiff, "tif"),
    ("16-bit PNG", badimages.png16, "png"),
    ("RGBA PNG", badimages.rgba_png, "png"),
])
def test_deep_and_transparent_images_peak_under_two_images(tmp_path: Path, kind: str, make, ext: str) -> None:
    """float64 scaling and alpha compositing with 3-4 full copies peaked at 3-5x this."""
    big, small = tmp_path / f"big.{ext}", tmp_path / f"small.{ext}"
    big.write_bytes(make(WIDTH, HEIGHT))
    small.write_bytes(make(8, 8))
    result = _peak(big, small)
    assert result["size"] == [WIDTH, HEIGHT] and result["mode"] == "RGB"
    assert result["delta"] < 2 * WIDTH * HEIGHT * 4, (kind, result["delta"] / 1e6)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_an_rgb_jpeg_is_decoded_without_a_copy(tmp_path: Path) -> None:
    """Issue 9 item 5: the decoded pixels are the output; no convert("RGB") copy of an RGB image."""
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    big.write_bytes(_photo_jpeg(WIDTH, HEIGHT))
    small.write_bytes(_photo_jpeg(8, 8))
    result = _peak(big, small)
    # one image, the file's bytes (read once, and once more by the decoder's buffer), a little slack
    assert result["delta"] < WIDTH * HEIGHT * 4 + 2 * big.stat().st_size + 2_000_000, result["delta"] / 1e6


def _reference_composite(image: Image.Image, background: tuple[int, int, int]) -> np.ndarray:
    rgba = image.convert("RGBA")
    ground = Image.new("RGBA", rgba.size, (*background, 255))
    return np.asarray(Image.alpha_composite(ground, rgba).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA"])
def test_compositing_in_place_matches_alpha_composite(mode: str) -> None:
    rng = np.random.default_rng(2)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 50, 4), dtype=np.uint8), "RGBA")
    source = rgba if mode == "RGBA" else rgba.convert(mode)
    before = source.tobytes()
    policy = FetchPolicy(background=(30, 60, 90))
    out = normalise(source, policy)
    assert out.mode == "RGB" and source.tobytes() == before  # the caller's image is left alone
    diff = np.abs(np.asarray(out, dtype=np.int16) - _reference_composite(source, (30, 60, 90)))
    assert diff.max() <= 1
    assert np.asarray(normalise(source, policy, mode="L")).shape == (40, 50)


def test_deep_images_scale_like_before() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 65536, (30, 70)).astype(np.uint16)
    out = np.asarray(normalise(Image.fromarray(values), FetchPolicy(), mode="L"))
    assert np.array_equal(out, np.rint(values / 257.0).astype(np.uint8))
    floats = rng.random((30, 70)).astype(np.float32) * 4 - 1
    floats[0, 0] = np.nan
    out = np.asarray(normalise(Image.fromarray(floats), FetchPolicy(), mode="L"), dtype=np.int16)
    clean = np.nan_to_num(floats.astype(np.float64))
    expected = np.rint((clean - clean.min()) * 255.0 / (clean.max() - clean.min()))
    assert np.abs(out - expected).max() <= 1
    ints = rng.integers(-5, 4000, (30, 70)).astype(np.int32)
    out = np.asarray(normalise(Image.fromarray(ints), FetchPolicy(), mode="L"), dtype=np.int16)
    assert np.array_equal(out, np.rint(np.clip(ints, 0, None) * 255.0 / 65535))


def test_concurrent_decodes_stay_within_the_budget(monkeypatch) -> None:
    from diffrun.loaders import budget

    fresh = budget.DecodeBudget()
    monkeypatch.setattr(budget, "BUDGET", fresh)
    monkeypatch.setattr("diffrun.loaders.decode.BUDGET", fresh)
    one = budget.estimate(600, 500, "RGB", "RGB")
    datas = [images.encode(Image.new("RGB", (600, 500), (i, 0, 0)), "PNG") for i in range(8)]
    results = list(load_many(datas, FetchPolicy(decode_budget=2 * one), workers=8))
    assert all(r.ok for r in results)
    assert fresh.peak <= 2 * one and fresh.in_use == 0
    # an image larger than the whole budget still loads, alone
    [big] = list(load_many([datas[0]], FetchPolicy(decode_budget=one // 10)))
    assert big.ok and fresh.in_use == 0


def test_dry_run_honours_prefetch(tmp_path: Path, server) -> None:
    """`batch --dry-run --prefetch 1` loads one input at a time (it used to force 8 at once)."""
    server.latency = 0.2  # every request takes a while, so parallel loads would overlap
    urls = [server.add(f"/{i}.png", images.png(color=(i, 0, 0)), content_type="image/png") for i in range(4)]
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("id,image\n" + "".join(f"j{i},{url}\n" for i, url in enumerate(urls)))
    proc = diffrun("batch", str(manifest), "--dry-run", "--json", "--prefetch", "1", "-o", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr.decode()
    assert [json.loads(line)["status"] for line in proc.stdout.decode().splitlines()] == ["ok"] * 4
    assert server.connections == 1  # one request at a time: the pooled connection is reused
