"""`diffrun compare` and outputs/compare.py: figures, tolerance, pairing, exit codes, heat maps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from clirun import diffrun
from PIL import Image

from diffrun.errors import InputError, UsageError
from diffrun.outputs.compare import Tolerance, compare_all, compare_arrays, compare_files, pairs, ssim


def _noise(seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _save(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def test_figures_match_their_definitions() -> None:
    a = _noise()
    b = a.copy()
    b[0, 0, 0] = a[0, 0, 0] ^ 4  # one level of one pixel off by 4
    c = compare_arrays(a, b, Tolerance())
    mse = 16 / a.size
    assert c.max_diff == 4 and c.mean_diff == pytest.approx(4 / a.size)
    assert c.psnr == pytest.approx(10 * math.log10(255**2 / mse))
    assert c.status == "within" and c.ok
    same = compare_arrays(a, a.copy(), Tolerance())
    assert same.status == "same" and same.psnr is None and same.ssim == pytest.approx(1.0)
    assert json.loads(json.dumps(same.row()))["psnr"] is None  # valid JSON: no Infinity


def test_tolerance_psnr_and_max_diff() -> None:
    a = _noise()
    b = np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)  # every level up to 3 off: PSNR about 39 dB
    c = compare_arrays(a, b, Tolerance())
    assert 35 < c.psnr < 40 and c.status == "differ" and not c.ok
    assert compare_arrays(a, b, Tolerance(min_psnr=35)).status == "within"
    assert compare_arrays(a, b, Tolerance(max_diff=3)).status == "within"
    assert compare_arrays(a, b, Tolerance(max_diff=2)).status == "differ"


def test_ssim_drops_for_structure_not_for_identity() -> None:
    a = _noise()
    assert ssim(a, a) == pytest.approx(1.0)
    shifted = np.roll(a, 1, axis=1)
    assert ssim(a, shifted) < 0.2
    flat = np.full_like(a, 128)
    assert ssim(flat, flat) == pytest.approx(1.0)


def test_size_mismatch_differs_and_alpha_is_compared() -> None:
    c = compare_arrays(_noise(size=32), _noise(size=16), Tolerance())
    assert c.status == "size" and not c.ok and "32x32" in c.message
    rgb = _noise()
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    assert compare_arrays(rgb, rgba, Tolerance()).status == "same"
    rgba[0, 0, 3] = 0
    assert compare_arrays(rgb, rgba, Tolerance()).max_diff == 255


def test_folders_match_by_name_and_report_missing(tmp_path: Path) -> None:
    left, right = tmp_path / "l", tmp_path / "r"
    left.mkdir()
    right.mkdir()
    _save(left / "a.png", _noise(1))
    _save(right / "a.png", _noise(1))
    _save(left / "only-left.png", _noise(2))
    (right / "notes.txt").write_text("not an image")
    results = {c.name: c for c in compare_all(left, right, Tolerance())}
    assert set(results) == {"a.png", "only-left.png"}
    assert results["a.png"].status == "same"
    assert results["only-left.png"].status == "missing" and "first" in results["only-left.png"].message


def test_results_log_against_goldens_by_job_id(tmp_path: Path) -> None:
    goldens, out = tmp_path / "goldens", tmp_path / "out"
    goldens.mkdir()
    out.mkdir()
    _save(goldens / "cat.png", _noise(3))
    _save(goldens / "dog.png", _noise(4))
    produced = _save(out / "whatever-name.png", _noise(3))
    _save(goldens / "bird.png", _noise(5))  # its job is not in the log (it did not run): must not pass unseen
    log = {"cat": [str(produced)], "dog": []}
    found = pairs(tmp_path / "results.jsonl", goldens, log)
    assert found == [("cat.png", produced, goldens / "cat.png"), ("dog.png", None, goldens / "dog.png"),
                     ("bird.png", None, goldens / "bird.png")]
    results = {c.name: c for c in compare_all(tmp_path / "results.jsonl", goldens, Tolerance(), log_outputs=log)}
    assert results["cat.png"].status == "same"
    assert results["dog.png"].status == results["bird.png"].status == "missing"
    assert "results log" in results["dog.png"].message


def test_unreadable_image_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = _save(tmp_path / "good.png", _noise())
    with pytest.raises(InputError):
        compare_files(good, bad, Tolerance())
    with pytest.raises(InputError, match="no such file"):
        compare_files(good, tmp_path / "absent.png", Tolerance())
    with pytest.raises(UsageError):
        pairs(tmp_path, good)


def test_cli_exit_codes_json_and_heat_map(tmp_path: Path) -> None:
    """The console script, as CI uses it: 0 within, 1 differ, 2 usage, 3 unreadable; JSON rows; --diff."""
    a = _save(tmp_path / "a.png", _noise())
    near = _noise()
    near[5, 5] ^= 1
    b = _save(tmp_path / "b.png", near)
    far = _noise()
    far[:8] = 0
    c = _save(tmp_path / "c.png", far)
    within = diffrun("compare", str(a), str(b), "--json")
    assert within.returncode == 0, within.stderr.decode()
    row = json.loads(within.stdout)
    assert row["status"] == "within" and row["max_diff"] == 1 and row["psnr"] > 40
    heat = tmp_path / "heat.png"
    differ = diffrun("compare", str(a), str(c), "--diff", str(heat))
    assert differ.returncode == 1
    assert differ.stdout.decode().startswith("differ  c.png: max 255")
    with Image.open(heat) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
    assert img.size == (32, 32)
    red = (pixels[..., 0] - pixels[..., 1]) > 60
    assert red[:8].mean() > 0.9 and not red[8:].any()  # red exactly where the rows were blacked out
    assert diffrun("compare", str(a), str(b), "--tolerance", "30", "--max-diff", "2").returncode == 2
    unreadable = diffrun("compare", str(a), str(tmp_path / "missing.png"))
    assert unreadable.returncode == 3 and b"missing.png" in unreadable.stderr
    assert diffrun("compare", str(a), str(b), "--max-diff", "0").returncode == 1


def test_a_pair_of_differently_named_files_is_named_by_both(tmp_path: Path) -> None:
    fox, lighthouse = _save(tmp_path / "fox.png", _noise(1)), _save(tmp_path / "lighthouse.png", _noise(2))
    assert compare_files(fox, lighthouse, Tolerance()).name == "fox.png vs lighthouse.png"
    (tmp_path / "b").mkdir()
    same = _save(tmp_path / "b" / "fox.png", _noise(1))
    assert compare_files(fox, same, Tolerance()).name == "fox.png"
