"""`diffrun batch` on rows written by someone else (issue 10): the real console script.

Rows write only inside -o; rows read only regular files; a rerun redoes the jobs whose settings changed
(replacing their own outputs, never a foreign file) and says how many."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from clirun import diffrun
from images import png

FAST = ("--device", "cpu", "-W", "32", "-H", "32")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_that_write_outside_the_output_folder_are_refused_before_any_work(tmp_path: Path) -> None:
    victim = tmp_path / "victim.png"
    out = tmp_path / "out"
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"id": "ok", "prompt": "x", "output": "fine/{id}.png"},
        {"id": "up", "prompt": "x", "output": "../../../../../../../../" + str(victim).lstrip("/")},
        {"id": "abs", "prompt": "x", "output": str(victim)},
        {"id": "home", "prompt": "x", "output": "~/x.png"},
        {"id": "dots", "prompt": "x", "output": ".."},
        {"id": "tmpl", "prompt": "x", "output": str(tmp_path / "{id}.png")},
    ])
    proc = diffrun("batch", str(manifest), "-m", str(tmp_path / "no-model"), "-o", str(out), cwd=tmp_path)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    for line in range(2, 7):
        assert f"line {line}: output" in err and "outside the output folder" in err
    assert "line 1:" not in err and "--allow-outside-output" in err and "Traceback" not in err
    assert not out.exists() and not victim.exists()  # nothing ran: not even the model reference was looked at
    assert "no-model" not in err


def test_rows_read_regular_files_only_and_no_message_quotes_file_bytes(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(png((8, 8)))
    fifo = tmp_path / "hang.fifo"
    os.mkfifo(fifo)
    manifest = write_jsonl(tmp_path / "m.jsonl", [
        {"id": "env", "image": "/proc/self/environ"},
        {"id": "fifo", "image": str(fifo)},
        {"id": "good", "image": "good.png"},
    ])
    proc = diffrun("batch", str(manifest), "--dry-run", "--json", "-o", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 3, proc.stderr.decode()
    records = {r["id"]: r for r in map(json.loads, proc.stdout.decode().splitlines())}
    assert records["good"]["status"] == "ok"
    assert records["env"]["error"]["code"] == "blocked" and "/proc" in records["env"]["error"]["message"]
    assert records["fifo"]["error"]["code"] == "not_a_file"
    assert "first bytes" not in proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.slow
def test_rerun_redoes_changed_jobs_replacing_their_own_outputs_never_a_foreign_file(tiny_sd: Path,
                                                                                   tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = tmp_path / "jobs.jsonl"
    write_jsonl(manifest, [{"id": "a", "prompt": "a red fox", "seed": 1}, {"id": "b", "prompt": "an owl", "seed": 2}])
    base = ("batch", str(manifest), "-m", str(tiny_sd), *FAST, "-o", str(out))
    first = diffrun(*base, "--steps", "2")
    assert first.returncode == 0, first.stderr.decode()[-3000:]
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    foreign = out / "c.png"
    foreign.write_bytes(b"<?php system($_GET['c']); ?>")
    sha = hashlib.sha256(foreign.read_bytes()).hexdigest()

    # The row's prompt and seed and the command's --steps change; a new row points at a foreign file.
    write_jsonl(manifest, [{"id": "a", "prompt": "a blue fox", "seed": 7}, {"id": "b", "prompt": "an owl", "seed": 2},
                           {"id": "c", "prompt": "x", "seed": 3}])
    second = diffrun(*base, "--steps", "3", "--force")
    err = second.stderr.decode()
    assert second.returncode == 1, err[-3000:]
    log = {r["id"]: r for r in lines(out / "results.jsonl")[2:]}
    assert log["a"]["status"] == log["b"]["status"] == "ok" and log["a"]["seed"] == 7
    assert log["c"]["status"] == "failed" and log["c"]["error"]["code"] == "output_exists"
    assert hashlib.sha256(foreign.read_bytes()).hexdigest() == sha  # --force left the foreign file alone
    assert (out / "a.png").read_bytes() != before["a.png"] and (out / "b.png").read_bytes() != before["b.png"]
    assert "jobs changed since the last run (redone)" in err

    # Without --force: only the row that changed is redone (the old image is not kept).
    write_jsonl(manifest, [{"id": "a", "prompt": "a green fox", "seed": 8}, {"id": "b", "prompt": "an owl", "seed": 2}])
    b_before = (out / "b.png").read_bytes()
    a_before = (out / "a.png").read_bytes()
    third = diffrun(*base, "--steps", "3")
    assert third.returncode == 0, third.stderr.decode()[-3000:]
    newest = {r["id"]: r for r in lines(out / "results.jsonl")[5:]}
    assert newest["a"]["status"] == "ok" and newest["b"]["status"] == "skipped"
    assert (out / "a.png").read_bytes() != a_before and (out / "b.png").read_bytes() == b_before
    assert newest["a"]["fingerprint"] != log["a"]["fingerprint"]
