"""Resume and ownership (engine/resume.py): fingerprints notice changed jobs, `--force` replaces only a
job's own files, targets stay inside the output folder. The runner runs in process with a fake pipeline
(real output planning, real results log)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from diffrun.engine.results import read_records
from diffrun.engine.resume import fingerprint, own_output, resume_plan, run_settings
from diffrun.jobs import Job
from diffrun.pipelines import ModelOptions


def fake_runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **config):
    """A BatchConfig whose model, pipeline call and writer are fakes; outputs hold the job's prompt."""
    from diffrun import pipelines
    from diffrun.engine import jobrun
    from diffrun.engine.batch import BatchConfig
    from diffrun.loaders import FetchPolicy

    def write(job, model, inputs, results, targets, **kw):
        for target in targets:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(f"made by {job.id}: {job.prompt}")
        return list(targets)

    monkeypatch.setattr(pipelines, "load_model", lambda *a, **k: types.SimpleNamespace(load_seconds=0.0))
    monkeypatch.setattr(pipelines, "plan_task", lambda model, request: "text2image")
    monkeypatch.setattr(pipelines, "batch_key", lambda request: "k")
    monkeypatch.setattr(pipelines, "run", lambda model, requests, on_step=None: [object() for _ in requests])
    monkeypatch.setattr(jobrun, "write_job_outputs", write)
    monkeypatch.setattr(jobrun, "load_job_inputs", lambda job, policy, save_dir=None: jobrun.JobInputs())
    out = tmp_path / "out"
    return BatchConfig(model=ModelOptions(model="fake"), policy=FetchPolicy(), output_dir=out,
                       results=out / "results.jsonl", **config)


def run(jobs, config):
    from diffrun.engine.batch import run_batch

    summary = run_batch(jobs, config)
    return summary, {r["id"]: r for r in read_records(config.results)[-len(jobs):]}


def test_fingerprint_covers_what_changes_the_files_and_not_the_id() -> None:
    settings = run_settings(ModelOptions(model="m"), output_dir="/o")
    base = Job(id="a", prompt="fox", seeds=[1], steps=20)
    same = fingerprint(base, settings)
    assert fingerprint(Job(id="other", prompt="fox", seeds=[1], steps=20), settings) == same
    for changed in (Job(id="a", prompt="cat", seeds=[1], steps=20), Job(id="a", prompt="fox", seeds=[2], steps=20),
                    Job(id="a", prompt="fox", seeds=[1], steps=21),
                    Job(id="a", prompt="fox", seeds=[1], steps=20, params={"eta": 0.5}),
                    Job(id="a", prompt="fox", seeds=[1], steps=20, image=["x.png"])):
        assert fingerprint(changed, settings) != same
    for other in (run_settings(ModelOptions(model="m2"), output_dir="/o"),
                  run_settings(ModelOptions(model="m", scheduler="EulerDiscreteScheduler"), output_dir="/o"),
                  run_settings(ModelOptions(model="m", dtype="fp16"), output_dir="/o"),
                  run_settings(ModelOptions(model="m"), output_dir="/o", quality=80)):
        assert fingerprint(base, other) != same
    # Speed-only switches do not make a job "changed".
    assert fingerprint(base, run_settings(ModelOptions(model="m", offload="model", compile=True),
                                          output_dir="/o")) == same


def test_resume_plan_redoes_changed_jobs_and_trusts_lines_without_a_fingerprint(tmp_path: Path) -> None:
    done = tmp_path / "a.png"
    done.write_bytes(b"x")
    log = tmp_path / "results.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "status": "ok", "outputs": [str(done)], "fingerprint": "old"},
        {"id": "b", "status": "failed", "fingerprint": "old"},
        {"id": "c", "status": "ok", "outputs": [str(done)]},  # an older diffrun: no fingerprint
        {"id": "d", "status": "ok", "outputs": [str(done)], "fingerprint": "same"},
    ]))
    jobs = [Job(id=i) for i in "abcd"]
    plan = resume_plan(jobs, log, retry_failed=False, force=False, prints=dict.fromkeys("abcd", "same"))
    assert [j.id for j in plan.run] == ["a", "b"] and plan.changed == ["a", "b"]  # failed too: the row was fixed
    assert [j.id for j, _ in plan.skip] == ["c", "d"]
    plan = resume_plan(jobs, log, retry_failed=False, force=False)  # no fingerprints given: as before
    assert [j.id for j in plan.run] == [] and plan.changed == []


def test_own_output_by_recorded_path_or_recipe_job_id(tmp_path: Path) -> None:
    from PIL import Image

    from diffrun import outputs

    job = Job(id="fox", seeds=[9])
    mine = tmp_path / "mine.png"
    outputs.write_image(Image.new("RGB", (8, 8)), str(mine), {"job_id": "fox", "seed": 1})  # other seed: its own
    theirs = tmp_path / "theirs.png"
    outputs.write_image(Image.new("RGB", (8, 8)), str(theirs), {"job_id": "wolf", "seed": 9})
    plain = tmp_path / "plain.png"
    plain.write_bytes(b"<?php system($_GET['c']); ?>")
    assert own_output(job, str(tmp_path / "missing.png"), [])
    assert own_output(job, str(mine), []) and not own_output(job, str(theirs), [])
    assert not own_output(job, str(plain), []) and own_output(job, str(plain), [str(plain)])


def test_force_replaces_a_jobs_own_files_but_never_a_foreign_one(monkeypatch, tmp_path: Path) -> None:
    config = fake_runner(monkeypatch, tmp_path)
    jobs = [Job(id="a", prompt="one", seeds=[1]), Job(id="b", prompt="two", seeds=[2])]
    summary, first = run(jobs, config)
    assert (summary.ok, summary.failed) == (2, 0)
    assert all(len(r["fingerprint"]) == 16 for r in first.values())
    foreign = config.output_dir / "c.png"
    foreign.write_bytes(b"someone else's file")
    config.force = True
    summary, second = run([*jobs, Job(id="c", prompt="three", seeds=[3])], config)
    assert (summary.ok, summary.failed) == (2, 1)
    error = second["c"]["error"]
    assert error["code"] == "output_exists" and "not this job's output" in error["message"]
    assert foreign.read_bytes() == b"someone else's file"
    config.overwrite = True  # what --overwrite is for
    summary, _ = run([Job(id="c", prompt="three", seeds=[3])], config)
    assert summary.ok == 1 and foreign.read_text() == "made by c: three"


def test_a_changed_job_is_redone_replacing_its_own_output_and_counted(monkeypatch, tmp_path: Path) -> None:
    config = fake_runner(monkeypatch, tmp_path)
    run([Job(id="a", prompt="fox", seeds=[1]), Job(id="b", prompt="owl", seeds=[2])], config)
    summary, records = run([Job(id="a", prompt="red fox", seeds=[7]), Job(id="b", prompt="owl", seeds=[2])], config)
    assert (summary.ok, summary.skipped, summary.changed) == (1, 1, 1)
    assert records["a"]["status"] == "ok" and records["b"]["status"] == "skipped"
    assert records["a"]["changed"] is True and "changed" not in records["b"]
    assert (config.output_dir / "a.png").read_text() == "made by a: red fox"
    config.model = ModelOptions(model="fake", scheduler="EulerDiscreteScheduler")  # a command-line change: all
    summary, _ = run([Job(id="a", prompt="red fox", seeds=[7]), Job(id="b", prompt="owl", seeds=[2])], config)
    assert (summary.ok, summary.changed) == (2, 2)


def test_targets_outside_the_output_folder_fail_unless_allowed(monkeypatch, tmp_path: Path) -> None:
    config = fake_runner(monkeypatch, tmp_path)
    config.output_dir.mkdir(parents=True)
    (config.output_dir / "link").symlink_to(tmp_path)  # made after validation: caught when planning
    job = Job(id="a", prompt="p", seeds=[1], output=str(config.output_dir / "link" / "{id}.png"))
    summary, records = run([job], config)
    assert summary.failed == 1 and records["a"]["error"]["code"] == "outside_output"
    assert not (tmp_path / "a.png").exists()
    config.allow_outside_output = config.retry_failed = True
    summary, _ = run([job], config)
    assert summary.ok == 1 and (tmp_path / "a.png").exists()
