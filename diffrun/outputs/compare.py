"""Compare generated images with goldens: max and mean absolute difference, PSNR and SSIM, in numpy.

The tolerance is made for generated images across torch versions and CPUs: a minimum PSNR in dB
(default 40: differences of a level or two on a few pixels pass, a shifted scheduler does not), or
a maximum absolute difference in 0-255 levels. Used by `diffrun compare` and `generate --expect`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffrun.errors import InputError, UsageError
from diffrun.outputs.tolerance import Tolerance

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_MAX_PIXELS = 100_000_000


@dataclass
class Comparison:
    """One pair: `status` is same (identical), within (tolerance), differ, missing or size."""

    name: str
    a: str | None
    b: str | None
    status: str
    max_diff: int | None = None
    mean_diff: float | None = None
    psnr: float | None = None
    """None when identical (infinite) or not compared."""
    ssim: float | None = None
    message: str = ""
    heat: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status in ("same", "within")

    def row(self) -> dict[str, Any]:
        """The --json row (PSNR null for identical images: JSON has no infinity)."""
        row = {"name": self.name, "a": self.a, "b": self.b, "status": self.status, "ok": self.ok,
               "max_diff": self.max_diff, "mean_diff": None if self.mean_diff is None else round(self.mean_diff, 6),
               "psnr": None if self.psnr is None else round(self.psnr, 4),
               "ssim": None if self.ssim is None else round(self.ssim, 6)}
        if self.message:
            row["message"] = self.message
        return row


def load_pixels(path: str | Path) -> np.ndarray:
    """HxWxC uint8 (RGB, or RGBA when the image has alpha); InputError (exit 3) when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    shown = str(path)[:200]
    try:
        with Image.open(path) as image:
            if image.width * image.height > _MAX_PIXELS:
                raise InputError(shown, f"{image.width}x{image.height} is over {_MAX_PIXELS} pixels", code="too_large")
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    except FileNotFoundError:
        raise InputError(shown, "no such file", code="not_found") from None
    except IsADirectoryError:
        raise InputError(shown, "is a folder, not an image", code="not_a_file") from None
    except UnidentifiedImageError:
        raise InputError(shown, "not an image diffrun can read", code="unsupported_format") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(shown, f"cannot decode: {exc}", code="decode") from None


def _box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Mean over every size x size window (valid positions only), per channel, by summed-area table."""
    s = np.pad(x, ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)
    total = s[size:, size:] - s[:-size, size:] - s[size:, :-size] + s[:-size, :-size]
    return total / (size * size)


def ssim(a: np.ndarray, b: np.ndarray, size: int = 7) -> float:
    """Mean SSIM over 7x7 uniform windows and channels (Wang et al. 2004, as skimage's default), levels 0-255."""
    size = min(size, a.shape[0], a.shape[1])
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n = size * size
    unbias = n / (n - 1) if n > 1 else 1.0
    mx, my = _box_mean(x, size), _box_mean(y, size)
    vx = (_box_mean(x * x, size) - mx * mx) * unbias
    vy = (_box_mean(y * y, size) - my * my) * unbias
    cxy = (_box_mean(x * y, size) - mx * my) * unbias
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(index.mean())


def heat_map(a: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """A faded grey copy of `a` with the differing pixels in red, brighter where they differ more."""
    grey = a[..., :3].astype(np.float32).mean(axis=2) * 0.3 + 255 * 0.35
    level = diff.max(axis=2).astype(np.float32)
    strength = np.where(level > 0, 0.35 + 0.65 * level / max(float(level.max()), 1.0), 0.0)
    out = np.stack([grey * (1 - strength) + 255 * strength, grey * (1 - strength), grey * (1 - strength)], axis=2)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def compare_arrays(a: np.ndarray, b: np.ndarray, tolerance: Tolerance, *, name: str = "", path_a: str | None = None,
                   path_b: str | None = None, want_heat: bool = False) -> Comparison:
    """Compare two HxWxC uint8 arrays; RGB against RGBA compares RGB plus an opaque alpha."""
    if a.shape[2] != b.shape[2]:
        a, b = (np.dstack([x, np.full(x.shape[:2], 255, np.uint8)]) if x.shape[2] == 3 else x for x in (a, b))
    if a.shape != b.shape:
        return Comparison(name, path_a, path_b, "size",
                          message=f"sizes differ: {a.shape[1]}x{a.shape[0]} and {b.shape[1]}x{b.shape[0]}")
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.uint8)
    max_diff = int(diff.max()) if diff.size else 0
    mse = float(np.mean(diff.astype(np.float64) ** 2)) if diff.size else 0.0
    psnr = None if mse == 0 else 10 * math.log10(255.0**2 / mse)
    if max_diff == 0:
        status = "same"
    elif tolerance.max_diff is not None:
        status = "within" if max_diff <= tolerance.max_diff else "differ"
    else:
        status = "within" if psnr is not None and psnr >= tolerance.min_psnr else "differ"
    mean = float(diff.mean()) if diff.size else 0.0
    return Comparison(name, path_a, path_b, status, max_diff=max_diff, mean_diff=mean, psnr=psnr,
                      ssim=1.0 if max_diff == 0 else ssim(a, b),  # for equal arrays every window's index is exactly 1
                      heat=heat_map(a, diff) if want_heat else None)


def compare_files(a: str | Path, b: str | Path, tolerance: Tolerance, *, name: str | None = None,
                  want_heat: bool = False) -> Comparison:
    """Compare two image files (InputError, exit 3, when one cannot be loaded); unnamed, the pair is
    called by its file name, or `A vs B` when the names differ."""
    if name is None:
        name = Path(b).name if Path(a).name == Path(b).name else f"{Path(a).name} vs {Path(b).name}"
    return compare_arrays(load_pixels(a), load_pixels(b), tolerance, name=name, path_a=str(a),
                          path_b=str(b), want_heat=want_heat)


def _images(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir())
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES}


def is_log(path: str | Path) -> bool:
    """A results log (JSON Lines), compared against a folder of goldens by job id."""
    return Path(path).is_file() and Path(path).suffix.lower() in (".jsonl", ".json", ".log")


def pairs(a: str | Path, b: str | Path,
          log_outputs: dict[str, list[str]] | None = None) -> list[tuple[str, Path | None, Path | None]]:
    """(name, a, b) to compare: two files; two folders matched by file name; or a results log (.jsonl)
    against a folder of goldens matched by job id ({id}.png; a job's output k > 0: {id}-{k}.png).
    A None side is missing. UsageError (exit 2) for combinations that make no sense."""
    a, b = Path(a), Path(b)
    if a.is_dir() and b.is_dir():
        left, right = _images(a), _images(b)
        return [(name, left.get(name), right.get(name)) for name in sorted(set(left) | set(right))]
    if log_outputs is not None and b.is_dir():
        return _log_pairs(log_outputs, b)
    if a.is_dir() or b.is_dir():
        raise UsageError(f"compare: {a} and {b}: give two images, two folders, or a results log and a folder",
                         code="compare_usage")
    return [(b.name, a, b)]


def _log_pairs(log_outputs: dict[str, list[str]], goldens: Path) -> list[tuple[str, Path | None, Path | None]]:
    """Each job's outputs with their goldens, then every golden no job of the log produced (a job
    that did not run must not pass unnoticed)."""
    found = []
    for job_id, outputs in log_outputs.items():
        for k, output in enumerate(outputs or [None]):
            name = f"{job_id}.png" if k == 0 else f"{job_id}-{k}.png"
            golden = goldens / name
            found.append((name, Path(output) if output else None, golden if golden.is_file() else None))
    named = {name for name, _, _ in found}
    found.extend((name, None, path) for name, path in _images(goldens).items() if name not in named)
    return found


def compare_all(a: str | Path, b: str | Path, tolerance: Tolerance, *, want_heat: bool = False,
                log_outputs: dict[str, list[str]] | None = None) -> list[Comparison]:
    """Every pair of `pairs(a, b, log_outputs)` compared; a missing side is status `missing`."""
    results = []
    for name, left, right in pairs(a, b, log_outputs):
        if left is None or right is None:
            side = "second" if left is None else "first"
            message = f"only in the {side}"
            if log_outputs is not None:
                message = "no golden for this output" if right is None else \
                    "no output in the results log (the job failed or did not run)"
            results.append(Comparison(name, str(left) if left else None, str(right) if right else None, "missing",
                                      message=message))
            continue
        results.append(compare_files(left, right, tolerance, name=name, want_heat=want_heat))
    return results


def table_line(c: Comparison) -> str:
    """One line of the report: status, name, figures."""
    if c.status in ("missing", "size"):
        return f"{c.status:7} {c.name}: {c.message}"
    psnr = "inf" if c.psnr is None else f"{c.psnr:.2f}"
    return (f"{c.status:7} {c.name}: max {c.max_diff}, mean {c.mean_diff:.4f}, PSNR {psnr} dB, "
            f"SSIM {c.ssim:.4f}")


def json_line(c: Comparison) -> str:
    return json.dumps(c.row(), ensure_ascii=False)


def check_expected(actual: str | Path | Any, golden: str | Path, tolerance: Tolerance) -> Comparison:
    """`generate --expect`: the written file (or, for stdout, the PIL image) against the golden file.

    The golden that cannot be loaded is InputError (exit 3); the caller turns a miss into exit 6."""
    expected = load_pixels(golden)
    if isinstance(actual, (str, Path)):
        return compare_arrays(load_pixels(actual), expected, tolerance, name=Path(golden).name, path_a=str(actual),
                              path_b=str(golden))
    mode = "RGBA" if expected.shape[2] == 4 else "RGB"
    return compare_arrays(np.asarray(actual.convert(mode)), expected, tolerance, name=Path(golden).name,
                          path_a="-", path_b=str(golden))
