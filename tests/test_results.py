"""The results log: durable appends, tolerant reading, and what resume decides from it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from diffrun.engine.results import ResultsLog, is_done, read_records, settled
from diffrun.engine.resume import resume_plan
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
        return [j.id for j in plan.run], [j.id for j, _ in plan.skip]

    assert ids(resume_plan(jobs, log, retry_failed=False, force=False)) == (["c", "d", "e"], ["a", "b"])
    assert ids(resume_plan(jobs, log, retry_failed=True, force=False)) == (["b", "c", "d", "e"], ["a"])
    assert ids(resume_plan(jobs, log, retry_failed=False, force=True)) == (list("abcde"), [])


# -- the local runner with a fake pipeline (fast, in process) -------------------------------------

def _fake_pipeline(monkeypatch, tmp_path: Path, *, write=None, load=None):
    """Patch the model, the pipeline call and the writing so BatchRunner runs in milliseconds."""
    import types

    from diffrun import pipelines
    from diffrun.engine import jobrun
    from diffrun.engine.batch import BatchConfig
    from diffrun.loaders import FetchPolicy
    from diffrun.pipelines import ModelOptions

    def fake_write(job, model, inputs, results, targets, **kw):
        if write is not None:
            write(job)
        for t in targets:
            Path(t).write_bytes(b"png")
        return list(targets)

    monkeypatch.setattr(pipelines, "load_model", lambda *a, **k: types.SimpleNamespace(load_seconds=0.0))
    monkeypatch.setattr(pipelines, "plan_task", lambda model, request: "text2image")
    monkeypatch.setattr(pipelines, "batch_key", lambda request: "k")
    monkeypatch.setattr(pipelines, "run", lambda model, requests, on_step=None: [object() for _ in requests])
    monkeypatch.setattr(jobrun, "plan_job_outputs",
                        lambda job, ref, kind, overwrite: [str(tmp_path / f"{job.id}.png")])
    monkeypatch.setattr(jobrun, "write_job_outputs", fake_write)
    monkeypatch.setattr(jobrun, "load_job_inputs", load or (lambda job, policy, save_dir=None: jobrun.JobInputs()))
    return BatchConfig(model=ModelOptions(model="fake"), policy=FetchPolicy(), output_dir=tmp_path,
                       results=tmp_path / "results.jsonl")


def test_a_results_log_that_cannot_be_written_is_not_swallowed_by_the_writer_thread(monkeypatch,
                                                                                      tmp_path: Path) -> None:
    from diffrun.engine.batch import run_batch

    config = _fake_pipeline(monkeypatch, tmp_path)

    def broken(self, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ResultsLog, "append", broken)
    with pytest.raises(OSError, match="No space left"):
        run_batch([Job(id=f"j{i}", prompt="p", seeds=[i]) for i in range(3)], config)


def test_result_hooks_are_never_called_from_two_threads_at_once(monkeypatch, tmp_path: Path) -> None:
    from diffrun.engine import jobrun
    from diffrun.engine.batch import run_batch
    from diffrun.errors import InputError

    def load(job, policy, save_dir=None):
        if int(job.id[1:]) % 2:
            raise InputError(f"{job.id}: gone")
        return jobrun.JobInputs()

    config = _fake_pipeline(monkeypatch, tmp_path, load=load)
    active, overlaps, seen = [0], [0], []
    guard = threading.Lock()

    def on_result(record):
        with guard:
            active[0] += 1
            overlaps[0] += active[0] > 1
        time.sleep(0.02)
        seen.append(record["id"])
        with guard:
            active[0] -= 1

    summary = run_batch([Job(id=f"j{i}", prompt="p", seeds=[i]) for i in range(12)], config, on_result=on_result)
    assert (summary.ok, summary.failed) == (6, 6)
    assert overlaps[0] == 0
    assert seen == [r["id"] for r in read_records(config.results)]  # stdout (--json) and the log agree
