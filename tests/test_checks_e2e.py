"""Output checks, --strict, --expect and --junit through the real console script (tiny models, CPU)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from clirun import cli_env, diffrun
from PIL import Image

FAST = ("--device", "cpu", "--steps", "2", "-W", "32", "-H", "32")


@pytest.fixture(scope="module")
def black_sd(tiny_sd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD model with a VAE whose last convolution decodes everything to black (as an
    overflowing fp16 VAE or a safety checker's blackout would look)."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd, local_files_only=True)
    with torch.no_grad():
        pipe.vae.decoder.conv_out.weight.zero_()
        pipe.vae.decoder.conv_out.bias.fill_(-5.0)
    folder = tmp_path_factory.mktemp("models") / "black-sd"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def test_blank_output_warns_by_default_and_fails_with_strict(black_sd: Path, tmp_path: Path) -> None:
    out = tmp_path / "black.png"
    warned = diffrun("generate", "-m", str(black_sd), *FAST, "-p", "x", "-s", "1", "-o", str(out), "--json")
    assert warned.returncode == 0, warned.stderr.decode()[-1500:]
    summary = json.loads(warned.stdout)
    assert [c["check"] for c in summary["checks"]] == ["blank"] and summary["checks"][0]["output"] == str(out)
    assert b"warning:" in warned.stderr and b"output check failed: blank" in warned.stderr
    strict = diffrun("generate", "-m", str(black_sd), *FAST, "-p", "x", "-s", "1", "-o", str(tmp_path / "s.png"),
                     "--json", env=cli_env(DIFFRUN_STRICT="1"))
    assert strict.returncode == 6, strict.stderr.decode()[-1500:]
    failed = json.loads(strict.stdout)
    assert failed["status"] == "error" and failed["exit"] == 6 and failed["code"] == "output_check"
    assert strict.stderr.decode().count("error:") == 1 and "blank" in strict.stderr.decode()
    assert (tmp_path / "s.png").exists()  # kept, to look at


def test_expect_outside_the_tolerance_exits_6(tiny_sd: Path, tmp_path: Path) -> None:
    golden = tmp_path / "golden.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(golden)
    proc = diffrun("generate", "-m", str(tiny_sd), *FAST, "-p", "fox", "-s", "1", "-o", str(tmp_path / "o.png"),
                   "--expect", str(golden), "--json")
    assert proc.returncode == 6, proc.stderr.decode()[-1500:]
    summary = json.loads(proc.stdout)
    assert summary["code"] == "expect_mismatch" and summary["expect"]["status"] == "differ"
    assert summary["expect"]["psnr"] < 40 and "--expect" in proc.stderr.decode()
    again = diffrun("generate", "-m", str(tiny_sd), *FAST, "-p", "fox", "-s", "1", "-o", str(tmp_path / "o2.png"),
                    "--expect", str(tmp_path / "o.png"), "--tolerance", "45")
    assert again.returncode == 0, again.stderr.decode()[-1500:]
    missing = diffrun("generate", "-m", str(tiny_sd), *FAST, "-p", "fox", "--expect", str(tmp_path / "none.png"))
    assert missing.returncode == 3 and b"error: --expect " in missing.stderr, missing.stderr.decode()[-1500:]
    assert b"matches" in again.stderr and b"PSNR inf dB" in again.stderr
    missing = diffrun("generate", "-m", str(tiny_sd), *FAST, "-p", "fox", "--expect", str(tmp_path / "nope.png"))
    assert missing.returncode == 3 and b"nope.png" in missing.stderr and b"loading model" not in missing.stderr


def test_batch_strict_fails_jobs_and_junit_reports_them(black_sd: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text('{"id": "one", "prompt": "a"}\n{"id": "two", "prompt": "b"}\n')
    report, out = tmp_path / "reports" / "junit.xml", tmp_path / "out"
    report.parent.mkdir()
    proc = diffrun("batch", str(manifest), "-m", str(black_sd), *FAST, "-o", str(out), "--strict",
                   "--junit", str(report), "--json")
    assert proc.returncode == 1, proc.stderr.decode()[-1500:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["status"] for r in lines} == {"failed"}
    assert {r["error"]["code"] for r in lines} == {"output_check"} and all(r["checks"] for r in lines)
    root = ET.parse(report).getroot()
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"one", "two"}
    assert {c.find("failure").get("type") for c in cases.values()} == {"output_check"}
    assert root.find("testsuite").get("failures") == "2"
    assert "check blank" in cases["one"].find("failure").text


def test_checks_run_on_the_server_and_fail_a_strict_client(black_sd: Path, tmp_path: Path) -> None:
    """Under --server the checks run where the pixels are made and travel back with the result: the
    client warns by default and with --strict exits 6, as a local run does."""
    from serving import Served

    served = Served(black_sd).wait_ready()
    try:
        args = ("generate", "--server", served.url, "--device", "cpu", "--steps", "2", "-W", "32", "-H", "32",
                "-p", "x", "-s", "1")
        warned = diffrun(*args, "-o", str(tmp_path / "w.png"), "--json")
        assert warned.returncode == 0, warned.stderr.decode()[-1500:]
        assert [c["check"] for c in json.loads(warned.stdout)["checks"]] == ["blank"]
        assert b"output check failed: blank" in warned.stderr
        strict = diffrun(*args, "-o", str(tmp_path / "s.png"), "--strict")
        assert strict.returncode == 6, strict.stderr.decode()[-1500:]
        assert b"blank" in strict.stderr
    finally:
        served.stop()
