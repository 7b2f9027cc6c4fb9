"""`diffrun batch` end to end: the real console script, a tiny model on CPU, a loopback server."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from clirun import cli_env, diffrun
from images import data_uri, png
from PIL import Image

pytestmark = pytest.mark.slow
FAST = ("--device", "cpu", "--steps", "2")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pixels(path: str) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_mixed_inputs_one_404_fails_alone_then_resume_and_retry(tiny_sd: Path, tmp_path: Path, server) -> None:
    local, remote, flaky, inline = (png((32, 32), c) for c in ((200, 0, 0), (0, 200, 0), (0, 0, 200), (9, 9, 9)))
    (tmp_path / "m" / "img").mkdir(parents=True)
    (tmp_path / "m" / "img" / "local.png").write_bytes(local)
    server.add("/remote.png", remote, content_type="image/png")
    server.add("/flaky.png", flaky, content_type="image/png", faults=[503])
    manifest = write_jsonl(tmp_path / "m" / "jobs.jsonl", [
        {"id": "file", "prompt": "a", "image": "img/local.png"},  # relative to the manifest's folder
        {"id": "url", "prompt": "b", "image": server.url("/remote.png")},
        {"id": "flaky", "prompt": "c", "image": server.url("/flaky.png"), "seed": 42},
        {"id": "gone", "prompt": "d", "image": server.url("/missing.png")},
        {"prompt": "e", "image": data_uri(inline)},
    ])
    out = tmp_path / "out"
    args = ("batch", str(manifest), "-m", str(tiny_sd), *FAST, "--strength", "0.5", "-o", str(out),
            "--retries", "1", "--timeout", "5", "--json")
    first = diffrun(*args)
    assert first.returncode == 1, first.stderr.decode()[-3000:]
    streamed = [json.loads(line) for line in first.stdout.decode().splitlines()]
    log = lines(out / "results.jsonl")
    assert streamed == log and len(log) == 5
    by_id = {r["id"]: r for r in log}
    gone = by_id.pop("gone")
    assert gone["status"] == "failed" and "404" in gone["error"]["message"]
    assert gone["error"]["category"] == "input" and gone["error"]["code"] == "http_status"
    assert gone["outputs"] == [] and not list(out.glob("gone*"))
    assert "gone" in first.stderr.decode() and "jobs failed" in first.stderr.decode()  # summary table
    sources = {"file": local, "url": remote, "flaky": flaky}
    for job_id, record in by_id.items():
        assert record["status"] == "ok", record
        assert record["outputs"] == [str(out / f"{job_id}.png")] and Path(record["outputs"][0]).is_file()
        assert {"fetch", "inference", "write"} <= set(record["timings"])
        expected = sources.get(job_id, inline)
        assert record["inputs"] == {"image": [hashlib.sha256(expected).hexdigest()]}
    assert by_id["flaky"]["seed"] == 42 and by_id["file"]["seed"] == 0 and by_id["url"]["seeds"] == [1]
    assert server.count("/flaky.png") == 2  # the 503, then the retry that worked
    with Image.open(by_id["url"]["outputs"][0]) as img:
        assert img.size == (32, 32) and json.loads(img.text["diffrun"])["seed"] == 1
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*.png")}

    # Same command again: everything settled is skipped (no fetch, no write); the failure still counts.
    second = diffrun(*args)
    assert second.returncode == 1, second.stderr.decode()[-3000:]
    again = lines(out / "results.jsonl")[5:]
    assert sorted(r["id"] for r in again) == sorted([*by_id, "gone"])
    assert {r["status"] for r in again} == {"skipped"} and server.count("/remote.png") == 1
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.png")} == mtimes

    # --retry-failed reruns only the failed job, which now works.
    server.add("/missing.png", remote, content_type="image/png")
    third = diffrun(*args, "--retry-failed")
    assert third.returncode == 0, third.stderr.decode()[-3000:]
    newest = lines(out / "results.jsonl")[10:]
    assert [(r["id"], r["status"]) for r in newest if r["status"] != "skipped"] == [("gone", "ok")]
    assert (out / "gone.png").is_file() and len(list(out.glob("*.png"))) == 5


def test_batch_size_matches_single_jobs_and_generate_stdin_csv(tiny_sd: Path, tmp_path: Path) -> None:
    csv_text = "prompt,seed\n" + "".join(f"prompt number {i},{10 + i}\n" for i in range(4))
    common = ("-", "-m", str(tiny_sd), *FAST, "-W", "32", "-H", "32", "-q")
    one = diffrun("batch", *common, "-o", str(tmp_path / "b1"), "--batch-size", "1", input=csv_text.encode())
    four = diffrun("batch", *common, "-o", str(tmp_path / "b4"), "--batch-size", "4", input=csv_text.encode())
    assert one.returncode == 0 and four.returncode == 0, (one.stderr + four.stderr).decode()[-3000:]
    log1, log4 = lines(tmp_path / "b1" / "results.jsonl"), lines(tmp_path / "b4" / "results.jsonl")
    assert sorted(r["id"] for r in log1) == sorted(r["id"] for r in log4) and len(log1) == 4
    assert {r["batch"] for r in log1} == {1} and max(r["batch"] for r in log4) > 1  # really batched
    by_id = {r["id"]: r for r in log4}  # the log is in completion order: pair the runs' lines by id
    for a in log1:
        b = by_id[a["id"]]
        assert a["seeds"] == b["seeds"]
        diff = np.abs(pixels(a["outputs"][0]) - pixels(b["outputs"][0]))
        assert diff.max() <= 3, f"{a['id']}: batched output differs from the single run by {diff.max()}"
    # The same job through `generate`: same image.
    solo = tmp_path / "gen.png"
    gen = diffrun("generate", "-m", str(tiny_sd), *FAST, "-W", "32", "-H", "32", "-p", "prompt number 2",
                  "-s", "12", "-o", str(solo))
    assert gen.returncode == 0, gen.stderr.decode()[-2000:]
    third = next(r for r in log4 if r["seeds"] == [12])
    assert np.abs(pixels(str(solo)) - pixels(third["outputs"][0])).max() <= 3


def test_sigint_mid_run_then_resume_finishes_exactly_the_rest(tiny_sd: Path, tmp_path: Path, server) -> None:
    server.add("/in.png", png((32, 32), (120, 60, 30)), content_type="image/png")
    ids = [f"job{i}" for i in range(8)]
    manifest = write_jsonl(tmp_path / "jobs.jsonl",
                           [{"id": i, "prompt": i, "image": server.url(f"/in.png?{i}")} for i in ids])
    out = tmp_path / "out"
    log_path = out / "results.jsonl"
    args = [sys.executable, "-m", "diffrun", "batch", str(manifest), "-m", str(tiny_sd), *FAST,
            "--strength", "0.5", "-o", str(out), "--prefetch", "1"]
    server.latency = 0.7  # every input takes 0.7 s: the run is still busy when the signal comes
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    deadline = time.monotonic() + 120
    while not (log_path.exists() and log_path.read_text().strip()):
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        assert time.monotonic() < deadline, "no result line within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr.decode()[-3000:]
    assert "not run" in stderr.decode() and "jobs ok" in stderr.decode()  # summary printed
    first = lines(log_path)
    done_first = [r["id"] for r in first if r["status"] == "ok"]
    assert 1 <= len(done_first) < len(ids) and len(first) == len(done_first)
    assert log_path.read_text().endswith("\n")
    assert not [p for p in out.iterdir() if p.name.startswith(".") or p.suffix not in (".png", ".jsonl")]

    server.latency = 0.0
    rerun = subprocess.run(args, capture_output=True, env=cli_env(), timeout=240)
    assert rerun.returncode == 0, rerun.stderr.decode()[-3000:]
    second = lines(log_path)[len(first):]
    ran = [r["id"] for r in second if r["status"] == "ok"]
    assert sorted(done_first + ran) == ids  # every job exactly once
    assert sorted(r["id"] for r in second if r["status"] == "skipped") == sorted(done_first)
    outputs = [p for r in lines(log_path) if r["status"] == "ok" for p in r["outputs"]]
    assert len(outputs) == len(set(outputs)) == len(ids)
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{i}.png" for i in ids)


def test_bad_manifest_and_dry_run(tiny_sd: Path, tmp_path: Path, server) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "x"}\n{"id": "a", "promt": "y"}\n{"steps": "ten"}\nnot json\n')
    proc = diffrun("batch", str(bad), "-m", str(tiny_sd), *FAST)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    lines = err.splitlines()
    assert lines[0].startswith("error: bad manifest") and err.count("error:") == 1
    for text in ("line 2: duplicate id 'a'", "line 2: unknown key 'promt'", "line 3: steps", "line 4: not valid"):
        assert any(line.strip().startswith(text) for line in lines[1:]), text  # one problem a line
    assert not (tmp_path / "diffrun-batch").exists()

    server.add("/ok.png", png((16, 16)), content_type="image/png")
    manifest = tmp_path / "ci.csv"
    manifest.write_text(f"id,image\nok,{server.url('/ok.png')}\nmissing,{server.url('/nope.png')}\n"
                        f"file,{tmp_path / 'nothere.png'}\n")
    dry = diffrun("batch", str(manifest), "--dry-run", "--json", "--retries", "0", "-o", str(tmp_path / "o"))
    assert dry.returncode == 3, dry.stderr.decode()
    records = {r["id"]: r for r in map(json.loads, dry.stdout.decode().splitlines())}
    assert records["ok"]["status"] == "ok" and records["ok"]["action"] == "run"
    assert records["ok"]["inputs"]["image"] == [hashlib.sha256(png((16, 16))).hexdigest()]
    assert records["missing"]["status"] == "failed" and "404" in records["missing"]["error"]["message"]
    assert records["file"]["status"] == "failed" and records["file"]["error"]["category"] == "input"
    assert records["file"]["error"]["code"] == "not_found"
    assert not (tmp_path / "o").exists()  # no model, no files, no log


def test_outputs_left_by_a_hard_kill_are_remade_but_foreign_files_are_not_touched(tiny_sd: Path,
                                                                                   tmp_path: Path) -> None:
    manifest = write_jsonl(tmp_path / "jobs.jsonl", [{"id": f"j{i}", "prompt": f"p{i}"} for i in range(3)])
    out = tmp_path / "out"
    args = ("batch", str(manifest), "-m", str(tiny_sd), *FAST, "-W", "32", "-H", "32", "-o", str(out))
    assert diffrun(*args).returncode == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    # As if killed after the files were written but before their lines reached the log:
    (out / "results.jsonl").unlink()
    (out / "j2.png").write_bytes(b"someone else's file")
    second = diffrun(*args)
    assert second.returncode == 1, second.stderr.decode()[-2000:]
    log = {r["id"]: r for r in lines(out / "results.jsonl")}
    assert log["j0"]["status"] == log["j1"]["status"] == "ok"
    assert log["j2"]["status"] == "failed" and log["j2"]["error"]["code"] == "output_exists"
    assert (out / "j0.png").read_bytes() == before["j0.png"]  # remade, identical
    assert (out / "j2.png").read_bytes() == b"someone else's file"
