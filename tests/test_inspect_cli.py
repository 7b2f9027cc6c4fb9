"""`diffrun inspect` as a user sees it: the real console script, its stdout, stderr and exit code."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import badimages
import images
from clirun import SAMPLE, diffrun


def _stderr_lines(proc) -> list[str]:
    return proc.stderr.decode().splitlines()


def test_report_on_stdout_hints_on_stderr(tmp_path: Path) -> None:
    """The table is a result (stdout, whole lines off a terminal); each failure is one error line with its hint."""
    deep = tmp_path / ("a-folder-with-a-long-name-" * 4) / "sample.png"  # the path alone is past 100 columns
    deep.parent.mkdir()
    deep.write_bytes(SAMPLE.read_bytes())
    ppm = tmp_path / "photo.ppm"
    ppm.write_bytes(badimages.encode(badimages.RGB, "PPM"))
    claim = tmp_path / "claim.png"
    claim.write_bytes(images.png_header_claiming(14000, 14000))
    proc = diffrun("inspect", str(deep), "nope.png", str(ppm), str(claim), cwd=tmp_path)
    assert proc.returncode == 3
    out = proc.stdout.decode()
    assert str(deep) in out and "PNG" in out and "128x128" in out
    assert "failed" in out and "not_found" in out
    errors = [line for line in _stderr_lines(proc) if line.startswith("error:")]
    hints = [line for line in _stderr_lines(proc) if line.startswith("  hint:")]
    assert errors == [
        "error: nope.png: not found",
        f"error: {ppm}: unsupported image format: PPM",
        f"error: {claim}: too many pixels: 14000×14000 = 196.0 MP > 89.5 MP (--max-pixels)",
    ]
    assert hints == ["  hint: check the path, or quote URLs",
                     "  hint: supported formats: JPEG, PNG, WebP, GIF, BMP, TIFF" + (", AVIF" if "AVIF" in hints[1]
                                                                                     else ""),
                     "  hint: raise --max-pixels if the image is trusted"]
    assert len(_stderr_lines(proc)) == 6  # nothing else on stderr: each failure once, no table
    # --json: stdout is JSON lines only, with a stable code, the hint, and the bytes that were refused
    proc = diffrun("inspect", "--json", str(deep), "nope.png", str(ppm), cwd=tmp_path)
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [(r["ok"], r["code"]) for r in rows] == [(True, None), (False, "not_found"), (False, "unsupported_format")]
    assert rows[1]["hint"] == "check the path, or quote URLs" and rows[1]["bytes"] is None
    assert rows[2]["bytes"] == ppm.stat().st_size
    assert rows[2]["sha256"] == hashlib.sha256(ppm.read_bytes()).hexdigest()
    assert rows[2]["hint"].startswith("supported formats:")


def test_libtiff_messages_stay_with_their_input(tmp_path: Path) -> None:
    """libtiff writes from C to fd 2: none of it reaches stderr raw, what matters is in the input's line."""
    files = {"fax.tif": badimages.damaged_fax_tiff(), "webp.tif": badimages.webp_tiff(),
             "tag.tif": badimages.bad_tag_tiff(), "good.tif": images.encode(images.two_colour(), "TIFF",
                                                                             compression="tiff_lzw")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    proc = diffrun("inspect", *files, "--workers", "4", cwd=tmp_path)
    assert proc.returncode == 3
    lines = _stderr_lines(proc)
    assert all(line.startswith(("error: ", "  hint: ")) for line in lines), lines
    errors = [line for line in lines if line.startswith("error:")]
    assert re.fullmatch(r"error: fax\.tif: truncated or corrupt image data \(libtiff: Fax4Decode: .*\)",
                        errors[0]), errors
    assert errors[1:] == [
        "error: webp.tif: unsupported TIFF compression: WEBP",
        "error: tag.tif: truncated or corrupt image data (libtiff: TIFFFetchNormalTag: Incorrect count for "
        '"RowsPerStrip")',
    ]
    assert "good.tif" in proc.stdout.decode() and "tempfile.tif" not in proc.stdout.decode() + proc.stderr.decode()
    proc = diffrun("inspect", "good.tif", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stderr == b""


def test_max_pixels_above_pillows_own_limit(tmp_path: Path) -> None:
    """--max-pixels can be raised past Pillow's decompression-bomb limit (2 x 89.5 MP)."""
    claim = tmp_path / "claim.png"
    claim.write_bytes(images.png_header_claiming(14000, 14000))  # 196 MP, but only a few bytes of pixels
    proc = diffrun("inspect", "--max-pixels", "300000000", "--json", str(claim))
    [row] = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    # past the cap, the decoder itself finds that the pixel data is missing
    assert row["code"] == "truncated", row
    assert "too many pixels" not in row["error"] and "178956970" not in proc.stderr.decode()
