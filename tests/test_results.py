"""The results log: durable appends, tolerant reading, and what resume decides from it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from diffrun.engine.batch import plan_resume
from diffrun.engine.results import ResultsLog, is_done, read_records, settled
from diffrun.jobs import Job


def test_append_one_line_each_from_threads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "results.jsonl"
    with ResultsLog(path) as log:
        threads = [threading.Thread(target=lambda i=i: [log.append({"id": f"j{i}-{k}", "status": "ok"})
                                                          for k in range(20)]) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 80 and len({json.loads(line)["id"] for line in lines}) == 80


def test_truncated_last_line_is_ignored_and_the_next_append_starts_fresh(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "a", "status": "ok", "outputs": []}\n{"id": "b", "stat')
    assert [r["id"] for r in read_records(path)] == ["a"]
    with ResultsLog(path) as log:
        log.append({"id": "c", "status": "failed"})
    assert [r["id"] for r in read_records(path)] == ["a", "c"]
    assert path.read_text().endswith('"status":"failed"}\n')
    assert read_records(tmp_path / "missing.jsonl") == []


def test_settled_ignores_skipped_lines_and_later_lines_win(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    out.write_bytes(b"x")
    records = [
        {"id": "a", "status": "failed"},
        {"id": "a", "status": "ok", "outputs": [str(out)]},
        {"id": "a", "status": "skipped", "previous": "ok"},
        {"id": "b", "status": "ok", "outputs": [str(tmp_path / "gone.png")]},
        {"id": "c", "status": "failed"},
    ]
    state = settled(records)
    assert state["a"]["status"] == "ok" and is_done(state["a"])
    assert not is_done(state["b"])  # output deleted since: run again
    assert not is_done(state["c"]) and not is_done(None)


def test_plan_resume(tmp_path: Path) -> None:
    out = tmp_path / "a.png"
    out.write_bytes(b"x")
    log = tmp_path / "results.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "status": "ok", "outputs": [str(out)]},
        {"id": "b", "status": "failed"},
        {"id": "c", "status": "ok", "outputs": [str(tmp_path / "gone.png")]},
        {"id": "d", "status": "skipped"},
    ]) + "\n")
    jobs = [Job(id=i) for i in "abcde"]

    def ids(plan):
        run, skip = plan
        return [j.id for j in run], [j.id for j, _ in skip]

    assert ids(plan_resume(jobs, log, retry_failed=False, force=False)) == (["c", "d", "e"], ["a", "b"])
    assert ids(plan_resume(jobs, log, retry_failed=True, force=False)) == (["b", "c", "d", "e"], ["a"])
    assert ids(plan_resume(jobs, log, retry_failed=False, force=True)) == (list("abcde"), [])
