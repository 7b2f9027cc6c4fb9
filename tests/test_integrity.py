"""The batch engine's integrity, in process and fast: the results log is not followed through a link,
one runner per log, a slow input does not stall the others, a full disk stops the batch, and the
temp files a killed writer left are cleared (but never a live writer's)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_results import _fake_pipeline

from diffrun.engine import jobrun
from diffrun.engine.batch import run_batch
from diffrun.engine.lock import lock_path
from diffrun.engine.results import ResultsLog, read_records
from diffrun.errors import DiskError, Exit, LockedError, UsageError
from diffrun.jobs import Job
from diffrun.outputs.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[1]


def jobs(n: int) -> list[Job]:
    return [Job(id=f"j{i}", prompt="p", seeds=[i]) for i in range(n)]


def python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, text=True, **kw)


# -- item 6: the log is never followed through a symbolic link -----------------------------------

def test_a_planted_results_log_link_is_refused_and_its_target_untouched(monkeypatch, tmp_path: Path) -> None:
    config = _fake_pipeline(monkeypatch, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    config.results.symlink_to(victim)
    with pytest.raises(UsageError) as caught:
        run_batch(jobs(2), config)
    assert caught.value.code == "symlink" and "symbolic link" in caught.value.message
    assert victim.read_text() == "precious\n" and not list(tmp_path.glob("j*.png"))  # no job ran
    # The log's own reader and writer refuse it too (a link planted once the run has started).
    with pytest.raises(UsageError, match="symbolic link"):
        read_records(config.results)
    with pytest.raises(UsageError, match="symbolic link"), ResultsLog(config.results) as log:
        log.append({"id": "x", "status": "ok"})
    assert victim.read_text() == "precious\n"


@pytest.mark.timeout(60)
def test_a_fifo_at_the_results_log_is_refused_not_waited_on(monkeypatch, tmp_path: Path) -> None:
    config = _fake_pipeline(monkeypatch, tmp_path)
    os.mkfifo(config.results)  # opening it for reading or writing would block until a peer came
    with pytest.raises(UsageError) as caught:
        run_batch(jobs(1), config)
    assert caught.value.code == "not_a_file" and "not a regular file" in caught.value.message
    with pytest.raises(UsageError, match="not a regular file"):
        read_records(config.results)
    assert not list(tmp_path.glob("j*.png"))


# -- item 11: one runner per results log -----------------------------------------------------------

HOLD_LOCK = """
import sys
from diffrun.engine.lock import LogLock
lock = LogLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_second_runner_is_refused_naming_the_holder_and_a_killed_holder_frees_the_log(monkeypatch,
                                                                                        tmp_path: Path) -> None:
    config = _fake_pipeline(monkeypatch, tmp_path)
    holder = python(HOLD_LOCK, str(config.results), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockedError) as caught:
            run_batch(jobs(3), config)
        assert caught.value.exit == Exit.LOCKED == 75
        assert f"pid {holder.pid}" in caught.value.message and str(config.results) in caught.value.message
        assert not config.results.exists() and not list(tmp_path.glob("j*.png"))  # nothing computed
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(config.results).exists()  # a SIGKILLed holder leaves its lock file: harmless
    summary = run_batch(jobs(3), config)
    assert summary.ok == 3 and not lock_path(config.results).exists()  # taken over, then removed


# -- item 8: a slow input does not stall the batch --------------------------------------------------

def test_jobs_whose_inputs_are_ready_run_while_a_slow_one_is_still_loading(monkeypatch, tmp_path: Path) -> None:
    others_logged = threading.Event()

    def load(job, policy, save_dir=None):
        if job.id == "j0":  # as a URL trickling until the others are all done
            assert others_logged.wait(20), "the other jobs waited behind the slow one"
        return jobrun.JobInputs()

    config = _fake_pipeline(monkeypatch, tmp_path, load=load)
    seen: list[str] = []

    def on_result(record):
        seen.append(record["id"])
        if len(seen) == 3:
            others_logged.set()

    summary = run_batch(jobs(4), config, on_result=on_result)
    assert summary.ok == 4
    assert [r["id"] for r in read_records(config.results)] == ["j1", "j2", "j3", "j0"]  # completion order


# -- item 15: a full disk stops the batch, logging what was done ----------------------------------

def test_disk_full_stops_the_batch_with_exit_74_and_the_done_jobs_logged(monkeypatch, tmp_path: Path) -> None:
    """ENOSPC injected in the real atomic writer (no small filesystem needed; test_batch_integrity_e2e
    fills a real tmpfs where it may mount one)."""
    config = _fake_pipeline(monkeypatch, tmp_path)
    attempts: list[str] = []

    def write(job, model, inputs, results, targets, **kw):
        attempts.append(job.id)

        def fill(f):
            if job.id == "j2" or "j2" in attempts:  # the disk is full from j2 on
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            f.write(b"png")

        return [atomic_write(t, fill) for t in targets]

    monkeypatch.setattr(jobrun, "write_job_outputs", write)
    with pytest.raises(DiskError) as caught:
        run_batch(jobs(8), config)
    assert caught.value.exit == Exit.IO == 74 and caught.value.code == "disk_full"
    assert caught.value.message.startswith("disk full: cannot write ") and "j2.png" in caught.value.message
    log = read_records(config.results)
    assert log and all(r["status"] == "ok" and Path(r["outputs"][0]).is_file() for r in log)
    assert "j2" not in {r["id"] for r in log} and len(log) < 8  # left for a rerun, nothing logged failed
    assert attempts[-1] == "j2"  # no write after the one that found the disk full
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def test_a_results_log_on_a_full_disk_is_a_disk_error(monkeypatch, tmp_path: Path) -> None:
    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with ResultsLog(tmp_path / "results.jsonl") as log:
        monkeypatch.setattr(os, "write", full)
        with pytest.raises(DiskError, match=r"disk full: cannot write results log .*results\.jsonl"):
            log.append({"id": "a", "status": "ok"})


# -- item 17: temp files a killed writer left are removed, a live writer's are not ------------------

KILLED_MID_WRITE = """
import os, sys
from diffrun.outputs.atomic import atomic_path
tmp = atomic_path(sys.argv[1]).__enter__()
open(tmp, "wb").write(b"half a png")
print(tmp, flush=True)
os.kill(os.getpid(), 9)
"""


def test_stale_temp_files_of_dead_writers_are_removed_and_no_others(monkeypatch, tmp_path: Path) -> None:
    config = _fake_pipeline(monkeypatch, tmp_path)
    killed = python(KILLED_MID_WRITE, str(tmp_path / "j0.png"), stdout=subprocess.PIPE)
    leftover = Path(killed.stdout.readline().strip())
    killed.wait()
    assert leftover.is_file() and leftover.name.startswith(f".j0.png.{killed.pid}.")
    alive = python("import sys; sys.stdin.read()", stdin=subprocess.PIPE)
    try:
        live = tmp_path / f".j1.png.{alive.pid}.abcd1234.tmp"  # a concurrent run's write in progress
        young = tmp_path / f".j2.png.{killed.pid}.abcd1234.tmp"  # changed after this run started
        foreign = [tmp_path / ".j3.png.tmp", tmp_path / f"j3.png.{killed.pid}.abcd1234.tmp"]  # not ours
        old, later = time.time() - 3600, time.time() + 3600
        for path in (live, young, *foreign):
            path.write_bytes(b"x")
            os.utime(path, (old, old))
        os.utime(leftover, (old, old))
        os.utime(young, (later, later))
        assert run_batch(jobs(2), config).ok == 2
        assert not leftover.exists()
        assert live.exists() and young.exists() and all(p.exists() for p in foreign)
    finally:
        alive.kill()
        alive.wait()


# -- the CLI's own checks (in process: no model, no subprocess) -------------------------------------

def test_the_manifest_as_results_log_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    from diffrun.cli.app import main

    manifest = tmp_path / "results.jsonl"
    manifest.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n")
    monkeypatch.chdir(tmp_path)
    assert main(["batch", "results.jsonl", "-o", ".", "-m", "none"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert "is the manifest" in err and err.count("error:") == 1
    assert manifest.read_text() == json.dumps({"id": "a", "prompt": "x"}) + "\n"
    # The same file under another name (a hard link) is the same file.
    os.link(manifest, tmp_path / "jobs.jsonl")
    assert main(["batch", "jobs.jsonl", "--results", "results.jsonl", "-m", "none"]) == Exit.USAGE


def test_one_job_is_one_job(tmp_path: Path, capsys) -> None:
    from diffrun.cli.app import main

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n")
    assert main(["batch", str(manifest), "--dry-run", "-o", str(tmp_path / "o")]) == 0
    assert "1 job: 1 would run" in capsys.readouterr().err


def test_a_full_disk_under_save_inputs_stops_the_batch(monkeypatch, tmp_path: Path) -> None:
    """Keeping an input's bytes on a full disk is the disk's failure, not that job's: the batch stops
    (exit 74) instead of recording job after job as failed inputs."""
    from diffrun.loaders.store import InputStore

    config = _fake_pipeline(monkeypatch, tmp_path, load=jobrun.load_job_inputs)  # the real loader
    config.save_inputs = tmp_path / "kept"

    def full(self, path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(InputStore, "_write_atomic", full)
    todo = [Job(id=f"j{i}", prompt="p", image=[str(_png(tmp_path, i))], seeds=[i]) for i in range(3)]
    with pytest.raises(DiskError) as caught:
        run_batch(todo, config)
    assert caught.value.exit == Exit.IO and caught.value.code == "disk_full"
    assert not [r for r in read_records(config.results) if r["status"] == "failed"]


def _png(folder: Path, i: int) -> Path:
    from PIL import Image

    path = folder / f"in{i}.png"
    Image.new("RGB", (8, 8), (i, 0, 0)).save(path)
    return path
