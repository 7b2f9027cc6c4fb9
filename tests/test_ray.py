"""`diffrun batch --engine ray`: the real console script joining one local Ray started by this module.

Ray start-up is costly, so the module starts ONE small CPU-only Ray (in this process) and every run
joins it with `--ray-address`; the checks share as few subprocesses as they can.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from clirun import cli_env, diffrun
from images import png
from PIL import Image

pytestmark = pytest.mark.slow
FAST = ("--device", "cpu", "--steps", "2", "--strength", "0.5", "--retries", "0", "--timeout", "5")


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """The address of a local Ray (3 CPUs, no GPU, no dashboard) for the whole module."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'diffrun[ray]'); CI installs it")
    pytest.importorskip("ray.data", reason="ray[data] is not installed (pip install 'diffrun[ray]')")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_ray_matches_local_logs_failure_and_resumes(tiny_sd: Path, tmp_path: Path, server, ray_address: str) -> None:
    (tmp_path / "m").mkdir()
    for i, color in enumerate(((200, 0, 0), (0, 200, 0))):
        (tmp_path / "m" / f"in{i}.png").write_bytes(png((32, 32), color))
    server.add("/remote.png", png((32, 32), (0, 0, 200)), content_type="image/png")
    manifest = tmp_path / "m" / "jobs.jsonl"
    rows = [
        {"id": "a", "prompt": "first", "image": "in0.png"},
        {"id": "b", "prompt": "second", "image": "in1.png", "seed": 42},
        {"id": "gone", "prompt": "third", "image": server.url("/missing.png")},
        {"prompt": "fourth", "image": server.url("/remote.png")},
        {"id": "c", "prompt": "fifth", "image": "in0.png", "num_images": 2},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = ("batch", str(manifest), "-m", str(tiny_sd), *FAST)
    ray_args = (*common, "-o", str(tmp_path / "ray"), "--engine", "ray", "--ray-address", ray_address,
                "--workers", "2", "--json")

    local = diffrun(*common, "-o", str(tmp_path / "local"), "-q")
    assert local.returncode == 1, local.stderr.decode()[-3000:]
    first = diffrun(*ray_args)
    assert first.returncode == 1, first.stderr.decode()[-3000:]

    log = lines(tmp_path / "ray" / "results.jsonl")
    assert [json.loads(line) for line in first.stdout.decode().splitlines()] == log  # stdout: results only
    by_id, expected = {r["id"]: r for r in log}, {r["id"]: r for r in lines(tmp_path / "local" / "results.jsonl")}
    assert sorted(by_id) == sorted(expected) and len(log) == len(rows)
    gone = by_id.pop("gone")
    assert gone["status"] == "failed" and "404" in gone["error"]["message"]
    assert gone["error"]["category"] == "input" and gone["error"]["code"] == "http_status"
    assert gone["error"] == expected["gone"]["error"] and gone["outputs"] == []
    for job_id, record in by_id.items():
        want = expected[job_id]
        assert record["status"] == want["status"] == "ok", record
        assert (record["seeds"], record["inputs"]) == (want["seeds"], want["inputs"])
        assert [Path(p).name for p in record["outputs"]] == [Path(p).name for p in want["outputs"]]
        for got, ref in zip(record["outputs"], want["outputs"], strict=True):
            assert Path(got).parent == tmp_path / "ray"
            diff = np.abs(pixels(got) - pixels(ref))
            assert diff.max() <= 3, f"{job_id}: Ray output differs from the local engine's by {diff.max()}"
    assert len(by_id["c"]["outputs"]) == 2 and by_id["b"]["seed"] == 42
    assert "jobs failed" in first.stderr.decode()  # the same summary table
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.png")}
    fetched = server.count("/remote.png")

    # The same command again: everything settled is skipped (nothing fetched or written); the failure counts.
    second = diffrun(*ray_args)
    assert second.returncode == 1, second.stderr.decode()[-3000:]
    again = lines(tmp_path / "ray" / "results.jsonl")[len(rows):]
    assert sorted(r["id"] for r in again) == sorted(expected) and {r["status"] for r in again} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "ray").glob("*.png")} == mtimes
    assert server.count("/remote.png") == fetched

    # --retry-failed reruns only the failed job, which now works.
    server.add("/missing.png", png((32, 32), (9, 9, 9)), content_type="image/png")
    third = diffrun(*ray_args, "--retry-failed")
    assert third.returncode == 0, third.stderr.decode()[-3000:]
    newest = lines(tmp_path / "ray" / "results.jsonl")[2 * len(rows):]
    assert [(r["id"], r["status"]) for r in newest if r["status"] != "skipped"] == [("gone", "ok")]
    assert (tmp_path / "ray" / "gone.png").is_file()


def test_ray_model_that_cannot_load_exits_4(tmp_path: Path, ray_address: str) -> None:
    manifest = tmp_path / "jobs.csv"
    manifest.write_text(f"id,image\nx,{tmp_path / 'in.png'}\n")
    (tmp_path / "in.png").write_bytes(png((16, 16)))
    proc = diffrun("batch", str(manifest), "-m", str(tmp_path / "no-such-model"), *FAST, "-o", str(tmp_path / "o"),
                   "--engine", "ray", "--ray-address", ray_address)
    assert proc.returncode == 4, proc.stderr.decode()[-3000:]
    assert "no-such-model" in proc.stderr.decode()
    log = tmp_path / "o" / "results.jsonl"
    assert not log.exists() or all(r["status"] != "ok" for r in lines(log))


_NO_RAY = """
import sys
import diffrun, diffrun.engine.batch, diffrun.engine.ray_engine
from diffrun.cli.app import main

def run(argv):
    try:
        return main(argv)
    except SystemExit as e:
        return e.code

for argv in (["--help"], ["batch", "--help"]):
    assert run(argv) in (0, None), argv
assert "ray" not in sys.modules, "importing diffrun or --help imported ray"
assert run(sys.argv[1:-2] + ["--workers", "2"]) == 2  # a Ray option without --engine ray
sys.modules["ray"] = None  # from here on, as if ray were not installed
sys.exit(run(sys.argv[1:]))
"""


def test_without_ray_exit_2_with_install_hint_and_no_import(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text('{"prompt": "x"}\n')
    proc = subprocess.run([sys.executable, "-c", _NO_RAY, "batch", str(manifest), "-m", "whatever", "--engine", "ray"],
                          capture_output=True, env=cli_env(), cwd=tmp_path, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err[-3000:]
    assert "pip install 'diffrun[ray]'" in err and "Traceback" not in err
    assert "--workers is an option of the Ray engine" in err
    assert "--engine" in proc.stdout.decode()  # the batch help listed the option
    assert not (tmp_path / "diffrun-batch").exists()
