"""Storage, concurrency and stdout problems as a user meets them: the real console script, a tiny model.

Read-only folders are a read-only tmpfs when this runs as root (chmod does not stop root), else
chmod 0555; the full disk is a small tmpfs (root only: skipped elsewhere; test_integrity.py injects
ENOSPC in process everywhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from clirun import cli_env, diffrun
from images import data_uri, png
from PIL import Image

pytestmark = pytest.mark.slow
FAST = ("--device", "cpu", "--steps", "2", "-W", "32", "-H", "32")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def popen(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "diffrun", *args], env=cli_env(), **kw)


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """A folder no one, root included, can create files in."""
    folder = tmp_path / "ro"
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    with tmpfs(folder, "ro,size=64k") as mounted:
        yield mounted


class HeldServer:
    """Serves one PNG at /held.png, but only once `release` is set (an input that takes as long as we like)."""

    def __init__(self, body: bytes) -> None:
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.release.wait(300)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/held.png"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def wait_for(check, proc: subprocess.Popen, what: str, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"ended before {what}: {proc.communicate()[1].decode()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no {what} within {limit} s")
        time.sleep(0.05)


def test_unwritable_output_results_or_save_inputs_fail_before_the_model_loads(tmp_path: Path,
                                                                              read_only: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", [{"id": "a", "prompt": "x"}])
    # A folder that passes the model-reference check but cannot load (exit 4): exit 2 proves the check came first.
    no_model = tmp_path / "no-model"
    no_model.mkdir()
    (no_model / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    no_model = str(no_model)
    for extra, named in (
        (("-o", str(read_only / "out")), "output folder"),
        (("-o", str(tmp_path / "out"), "--results", str(read_only / "results.jsonl")), "results log"),
        (("-o", str(tmp_path / "out2"), "--save-inputs", str(read_only / "inputs")), "--save-inputs folder"),
    ):
        proc = diffrun("batch", str(manifest), "-m", no_model, "--device", "cpu", *extra)
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        assert err.count("error:") == 1 and named in err and str(read_only) in err and "Traceback" not in err
    assert not (tmp_path / "out" / "a.png").exists()


def test_a_full_disk_stops_the_batch_with_exit_74_and_a_rerun_finishes(tiny_sd: Path, tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(8)])
    with tmpfs(tmp_path / "disk", "size=96k") as disk:
        out = disk / "out"
        args = ("batch", str(manifest), "-m", str(tiny_sd), *FAST, "-o", str(out))
        filler = disk / "filler"
        stat = os.statvfs(disk)
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 7 * 4096))  # room for a few jobs only
        first = diffrun(*args)
        err = first.stderr.decode()
        assert first.returncode == 74, err[-3000:]
        assert err.count("error:") == 1 and "error: disk full: cannot write" in err and "Traceback" not in err
        log = lines(out / "results.jsonl")
        assert 1 <= len(log) < 8 and {r["status"] for r in log} == {"ok"}  # nothing logged "failed"
        for record in log:
            with Image.open(record["outputs"][0]) as img:
                img.load()  # every logged output is a whole image
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp file, no lock file

        filler.unlink()
        second = diffrun(*args)
        assert second.returncode == 0, second.stderr.decode()[-3000:]
        ran = [r["id"] for r in lines(out / "results.jsonl") if r["status"] == "ok"]
        assert sorted(ran) == [f"j{i}" for i in range(8)]  # every job exactly once


def test_a_slow_input_does_not_stall_the_batch_and_a_second_runner_is_refused(tiny_sd: Path,
                                                                               tmp_path: Path) -> None:
    held = HeldServer(png((32, 32), (10, 200, 10)))
    try:
        rows = [{"id": "slow", "prompt": "s", "image": held.url}]
        rows += [{"id": f"r{i}", "prompt": f"p{i}", "image": data_uri(png((32, 32), (40 * i, 0, 0)))}
                 for i in range(3)]
        manifest = write_jsonl(tmp_path / "jobs.jsonl", rows)
        out = tmp_path / "out"
        log_path = out / "results.jsonl"
        args = ("batch", str(manifest), "-m", str(tiny_sd), *FAST, "--strength", "0.5", "-o", str(out),
                "--timeout", "300", "--deadline", "0", "--retries", "0", "-q")
        first = popen(*args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # While the first input is held, the three others run and are logged.
        wait_for(lambda: log_path.exists() and len(lines(log_path)) >= 3, first, "three result lines")
        assert sorted(r["id"] for r in lines(log_path)) == ["r0", "r1", "r2"]

        second = diffrun(*args)  # the same command, while the first still runs
        err = second.stderr.decode()
        assert second.returncode == 75, err[-3000:]
        assert err.count("error:") == 1 and f"pid {first.pid}" in err and str(log_path) in err

        held.release.set()
        _, first_err = first.communicate(timeout=240)
        assert first.returncode == 0, first_err.decode()[-3000:]
        log = lines(log_path)
        assert [r["id"] for r in log][-1] == "slow" and [r["status"] for r in log] == ["ok"] * 4
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the lock file is gone
    finally:
        held.close()


def test_a_closed_stdout_stops_batch_inspect_and_generate_with_141(tiny_sd: Path, tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(6)])
    out = tmp_path / "out"
    args = ("batch", str(manifest), "-m", str(tiny_sd), *FAST, "-o", str(out))
    runs = {
        "batch": ("batch", *args[1:], "--json"),
        "inspect": ("inspect", "--json", *[data_uri(png((4, 4)))] * 3),
        "generate": ("generate", "-m", str(tiny_sd), *FAST, "-p", "x", "-o", "-"),
    }
    for name, argv in runs.items():
        proc = popen(*argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdout.close()  # as `| head -n 0`: the reader is gone before anything is written
        err = proc.stderr.read().decode()
        proc.wait(timeout=240)
        assert proc.returncode == 141, f"{name}: {err[-3000:]}"
        assert "error" not in err.lower() and "Traceback" not in err, f"{name}: {err[-3000:]}"

    first = lines(out / "results.jsonl")
    assert 1 <= len(first) < 6 and {r["status"] for r in first} == {"ok"}  # what ran is logged
    rerun = diffrun(*args, "-q")
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    ran = [r["id"] for r in lines(out / "results.jsonl") if r["status"] == "ok"]
    assert sorted(ran) == [f"j{i}" for i in range(6)]  # the rest was left for the resume, none twice
