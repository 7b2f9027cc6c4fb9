"""The local batch engine: one model load, inputs prefetched ahead of inference, micro-batches,
one results line per job, resume, graceful stop.

Decisions worth knowing:
- Inputs load before the model; the model loads when the first job's inputs arrive, so a batch whose
  inputs all fail never loads it.
- The main thread never waits for the network while it has work: a micro-batch runs as soon as it is
  full, or as soon as the next job's inputs are not ready yet.
- A micro-batch that fails is run again one job at a time, so one bad job fails alone.
- A stop request (first Ctrl-C / SIGTERM) abandons the micro-batch being computed at its next step:
  nothing of it is written and it gets no line; a rerun does it.
- Resume (engine/resume.py): a job whose last ok/failed line is `ok` with every output present is
  skipped; one recorded `failed` is skipped too unless `retry_failed`; `force` redoes all; a job whose
  fingerprint changed is always redone. Only a job's own files are replaced (`overwrite` replaces
  any). A skipped job gets a `skipped` line; a job skipped for an earlier failure still counts as
  failed (exit 1).
- Every target must land inside `output_dir` (after templates and symlinked folders) unless
  `allow_outside_output`.
- Jobs are taken as their inputs finish loading, not in manifest order, so a slow input holds one
  prefetch slot, not the batch; the results log is in completion order.
- Before any job (engine/storage.py): the log and folders are checked writable, the log is locked
  against a second runner, stale temp files are cleared. A full disk (DiskError, from a write or
  the log) stops the batch: the job that hit it gets no line (a rerun does it), nor do later writes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffrun.engine import jobrun, storage
from diffrun.engine.prefetch import Prefetcher
from diffrun.engine.results import FAILED, OK, SKIPPED, ResultsLog, now_iso, read_records, settled
from diffrun.engine.resume import fingerprints, own_output, resume_plan, run_settings
from diffrun.errors import DiffrunError, DiskError, OutOfMemoryError, OutputExistsError, UsageError
from diffrun.jobs import Job
from diffrun.loaders import FetchPolicy

if TYPE_CHECKING:
    from diffrun.pipelines import LoadedModel, ModelOptions, Request

OnResult = Callable[[dict[str, Any]], None]
WRITE_AHEAD = 4
"""Jobs whose outputs may wait for the writer thread (bounds the images held in memory)."""


@dataclass
class BatchConfig:
    model: ModelOptions
    policy: FetchPolicy
    output_dir: Path
    """Where jobs without their own `output` write `{id}.png` (or `.mp4`)."""
    results: Path
    prefetch: int = 4
    batch_size: int = 1
    overwrite: bool = False
    quality: int | None = None
    sidecar: bool = False
    fps: int | None = None
    save_inputs: Path | None = None
    retry_failed: bool = False
    force: bool = False
    fail_fast: bool = False
    allow_outside_output: bool = False
    """Let a job's `output` name files outside `output_dir`."""
    strict: bool = False
    """A failed output check (blank, NaN/Inf, NSFW) fails the job, with error code output_check."""


@dataclass
class Summary:
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failed_earlier: list[str] = field(default_factory=list)
    """Jobs skipped because an earlier run recorded them failed (they still make the exit code 1), in
    manifest order (the summary names them)."""
    not_run: int = 0
    changed: int = 0
    """Jobs run again because their settings changed since their last results line."""
    images: int = 0
    interrupted: bool = False
    model_loaded: bool = False
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("fetching", "waiting", "model_load", "inference", "writing", "total"), 0.0))

    @property
    def skipped_failed(self) -> int:
        return len(self.failed_earlier)

    @property
    def all_ok(self) -> bool:
        return self.failed == 0 and self.skipped_failed == 0

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "not_run": self.not_run, "changed": self.changed, "images": self.images,
                "interrupted": self.interrupted,
                "seconds": {k: round(v, 4) for k, v in self.seconds.items()}}


class _Abandon(BaseException):
    """Raised from the step callback to drop the running micro-batch (not an Exception: run() lets it by)."""


@dataclass
class _Ready:
    job: Job
    inputs: jobrun.JobInputs
    requests: list[Request]
    targets: list[str]
    overwrite: bool = False


def error_info(exc: BaseException) -> dict[str, Any]:
    """A failure as results lines and --json carry it: category, code, exit, message, hint (messages
    capped, URLs in them without credentials: they may quote a server or a library)."""
    from diffrun.loaders.redact import log_message

    if isinstance(exc, MemoryError):
        exc = OutOfMemoryError("out of memory (in this process)", hint="try smaller sizes or fewer images per job")
    if isinstance(exc, DiffrunError):
        info = {"category": exc.category, "code": exc.code, "exit": int(exc.exit), "message": log_message(exc.message)}
        if exc.hint:
            info["hint"] = log_message(exc.hint)
        return info
    return {"category": "internal", "code": "internal", "exit": 70,
            "message": log_message(f"{type(exc).__name__}: {exc}")}


def _record(job: Job, status: str, **extra: Any) -> dict[str, Any]:
    return {"id": job.id, "status": status, "outputs": [], "seed": job.seeds[0] if job.seeds else None,
            "seeds": job.seeds, **extra, "time": now_iso()}


def config_settings(config: BatchConfig) -> dict[str, Any]:
    """The run-wide part of the jobs' fingerprints."""
    return run_settings(config.model, output_dir=config.output_dir, quality=config.quality, fps=config.fps)


class BatchRunner:
    """Runs a list of jobs once; `run()` returns the Summary. Not reusable.

    The Ray engine reuses it (engine/ray_engine.py, engine/ray_workers.py) by overriding three hooks:
    `_run(todo)` runs the jobs still to do, `_load(job)` gives one job's inputs, `_emit(record)`
    takes one result record. Keep their signatures (tests/test_ray.py checks the two engines agree).
    """

    def __init__(self, jobs: list[Job], config: BatchConfig, *, should_stop: Callable[[], bool] | None = None,
                 on_result: OnResult | None = None, on_status: Callable[[str], None] | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> None:
        self.jobs = jobs
        self.config = config
        self.should_stop = should_stop or (lambda: False)
        self.on_result = on_result or (lambda record: None)
        self.on_status = on_status or (lambda text: None)
        self.on_step = on_step
        self.summary = Summary(total=len(jobs))
        self.model: LoadedModel | None = None
        self._log = ResultsLog(config.results)
        self._claimed: set[str] = set()
        self._claim_lock = threading.Lock()  # the remote engine plans targets from several threads
        self._failed_fast = False
        self._lock = threading.Lock()  # summary counts: the writer thread updates them too
        self._emit_lock = threading.Lock()  # one record at a time, so the log and on_result agree
        self._writer: ThreadPoolExecutor | None = None
        self._write_error: BaseException | None = None
        self._write_slots = threading.BoundedSemaphore(WRITE_AHEAD)
        self._fingerprints: dict[str, str] = {}
        self._changed: set[str] = set()
        self._state: dict[str, dict[str, Any]] | None = None  # the log's settled lines, read when first needed

    # -- results -------------------------------------------------------------------------------
    def _emit(self, record: dict[str, Any]) -> None:
        with self._emit_lock:  # the main thread (failures) and the writer thread (results) both emit
            if record["id"] in self._fingerprints:  # the settings the line was made with (resume compares them)
                record.setdefault("fingerprint", self._fingerprints[record["id"]])
            if record["id"] in self._changed and record["status"] != SKIPPED:
                record.setdefault("changed", True)  # redone because its settings changed since its last line
            self._log.append(record)
            self.on_result(record)

    def _fail(self, job: Job, exc: BaseException, inputs: jobrun.JobInputs | None = None,
              timings: dict[str, float] | None = None, **extra: Any) -> None:
        with self._lock:
            self.summary.failed += 1
        self._emit(_record(job, FAILED, inputs=inputs.hashes() if inputs else {},
                           timings={k: round(v, 4) for k, v in (timings or {}).items()}, error=error_info(exc),
                           **extra))
        if self.config.fail_fast:
            self._failed_fast = True

    def _stopping(self) -> bool:
        return self._failed_fast or self._write_error is not None or self.should_stop()

    # -- the run -------------------------------------------------------------------------------
    def run(self) -> Summary:
        start = time.perf_counter()
        try:
            with storage.claim(self.config, self.jobs):  # exit 2 or 75 here, before any work
                try:
                    self._resume_and_run()
                finally:
                    self._log.close()
        finally:
            self.summary.seconds["total"] = time.perf_counter() - start
        done = self.summary.ok + self.summary.failed + self.summary.skipped
        self.summary.not_run = self.summary.total - done
        self.summary.interrupted = self.should_stop() and self.summary.not_run > 0
        return self.summary

    def _resume_and_run(self) -> None:
        self._fingerprints = fingerprints(self.jobs, config_settings(self.config))
        plan = resume_plan(self.jobs, self.config.results, retry_failed=self.config.retry_failed,
                           force=self.config.force, prints=self._fingerprints)
        self._state, todo, skip = plan.state, plan.run, plan.skip
        self._changed = set(plan.changed)
        self.summary.changed = len(plan.changed)
        for job, previous in skip:
            self.summary.skipped += 1
            if previous["status"] == FAILED:
                self.summary.failed_earlier.append(job.id)
            self._emit(_record(job, SKIPPED, previous=previous["status"], outputs=previous.get("outputs", []),
                               inputs=previous.get("inputs", {}), seed=previous.get("seed"),
                               seeds=previous.get("seeds", job.seeds)))
        self._run(todo)

    def _load(self, job: Job) -> jobrun.JobInputs:
        return jobrun.load_job_inputs(job, self.config.policy, self.config.save_inputs)

    def _run(self, todo: list[Job]) -> None:
        if not todo:
            return
        depth = max(self.config.prefetch, 1)
        pending: list[_Ready] = []
        prefetcher = Prefetcher(todo, self._load, depth, should_stop=self._stopping)
        try:
            for job, loaded in prefetcher:
                if self._stopping():
                    break
                if isinstance(loaded, BaseException):
                    if not isinstance(loaded, Exception) or isinstance(loaded, DiskError):  # --save-inputs full
                        raise loaded
                    self._fail(job, loaded)
                    continue
                self.summary.seconds["fetching"] += loaded.seconds
                ready = self._prepare(job, loaded)
                if ready is None:
                    continue
                if pending and (not self._fits(pending, ready)):
                    self._flush(pending)
                    pending = []
                pending.append(ready)
                if sum(len(r.requests) for r in pending) >= self.config.batch_size or not prefetcher.ready():
                    self._flush(pending)
                    pending = []
            if pending and not self._stopping():
                self._flush(pending)
        finally:
            self.summary.seconds["waiting"] = prefetcher.wait_seconds
            prefetcher.close()
            self._finish_writes()

    def _ensure_model(self) -> LoadedModel:
        if self.model is None:
            from diffrun import pipelines

            self.on_status("loading model")
            self.model = pipelines.load_model(self.config.model, on_progress=self.on_status)
            self.summary.model_loaded = True
            self.summary.seconds["model_load"] = self.model.load_seconds
            self.on_status("")
        return self.model

    def _prepare(self, job: Job, inputs: jobrun.JobInputs) -> _Ready | None:
        """Requests and output targets of a loaded job, checked against the model; None if it failed."""
        from diffrun import pipelines

        try:  # what the model's class tells before its weights load (an unknown --param) fails this job alone
            requests = jobrun.job_requests(job, inputs)
            pipelines.precheck(self.config.model, requests[0])
        except DiffrunError as exc:
            self._fail(job, exc, inputs, {"fetch": inputs.seconds})
            return None
        model = self._ensure_model()  # a model that cannot load stops the batch (exit 4)
        try:
            task = pipelines.plan_task(model, requests[0])
            kind = "video" if task.endswith("video") else "image"
            targets, overwrite = self._plan_targets(job, kind, self.config.model.model)
        except DiffrunError as exc:
            self._fail(job, exc, inputs, {"fetch": inputs.seconds})
            return None
        return _Ready(job, inputs, requests, targets, overwrite)

    def _plan_targets(self, job: Job, kind: str, model_ref: str) -> tuple[list[str], bool]:
        """The job's output paths (`{id}` + the kind's extension under the output folder when the job names
        none), refused outside it, over foreign files, or when an earlier job of this batch took them; and
        whether an existing file (the job's own) is replaced."""
        from diffrun.outputs.formats import default_extension

        plan_job = job
        if job.output is None:
            folder = str(self.config.output_dir).replace("{", "{{").replace("}", "}}")
            plan_job = replace(job, output=os.path.join(folder, "{id}") + default_extension(kind))
        targets = jobrun.plan_job_outputs(plan_job, model_ref, kind, overwrite=True)
        overwrite = self._check_targets(job, targets)
        with self._claim_lock:
            taken = [t for t in targets if t in self._claimed]
            if taken:
                raise OutputExistsError(f"{taken[0]} is also the output of an earlier job of this batch",
                                        hint="give rows distinct outputs, or use {id} in the template")
            self._claimed.update(targets)
        return targets, overwrite

    def _check_targets(self, job: Job, targets: list[str]) -> bool:
        """Refuse targets outside the output folder and files that are not the job's own; True when some
        existing file (the job's own) is to be replaced."""
        from diffrun.outputs.names import path_inside

        if not self.config.allow_outside_output:
            outside = [t for t in targets if not path_inside(t, self.config.output_dir)]
            if outside:
                raise UsageError(f"{outside[0]} is outside the output folder {self.config.output_dir}",
                                 hint="pass --allow-outside-output to allow it", code="outside_output")
        if self.config.overwrite:
            return True
        existing = [t for t in targets if os.path.lexists(t)]
        if not existing:
            return False
        if self._state is None:  # a Ray worker's runner: read the log only when a file is in the way
            self._state = settled(read_records(self.config.results))
        recorded = (self._state.get(job.id) or {}).get("outputs") or []
        foreign = [t for t in existing if not own_output(job, t, recorded)]
        if foreign:
            raise OutputExistsError(f"{foreign[0]} exists and is not this job's output",
                                    hint="pass --overwrite to replace it")
        return True

    def _fits(self, pending: list[_Ready], ready: _Ready) -> bool:
        from diffrun.pipelines import batch_key

        keys = {batch_key(r) for item in (*pending, ready) for r in item.requests}
        count = sum(len(r.requests) for r in pending) + len(ready.requests)
        return len(keys) == 1 and count <= self.config.batch_size

    def _flush(self, pending: list[_Ready]) -> None:
        """One pipeline call for `pending` (one per job when their requests cannot share a call)."""
        from diffrun import pipelines

        if self._stopping():
            return
        requests = [r for item in pending for r in item.requests]
        if len({pipelines.batch_key(r) for r in requests}) > 1:  # a job whose requests must run alone
            for item in pending:
                self._run_job_alone(item)
            return

        model = self._ensure_model()
        started = time.perf_counter()
        try:
            results = pipelines.run(model, requests, on_step=self._step_callback())
        except _Abandon:
            return
        except Exception as exc:  # any failure of a shared call is retried job by job
            self.summary.seconds["inference"] += time.perf_counter() - started
            if len(pending) > 1:
                for item in pending:
                    self._flush([item])
            else:
                self._fail(pending[0].job, exc, pending[0].inputs, {"fetch": pending[0].inputs.seconds})
            return
        seconds = time.perf_counter() - started
        self.summary.seconds["inference"] += seconds
        offset = 0
        for item in pending:
            part = results[offset: offset + len(item.requests)]
            offset += len(item.requests)
            share = seconds * len(item.requests) / len(requests)
            self._write(item, part, {"fetch": item.inputs.seconds, "inference": share}, len(pending))

    def _run_job_alone(self, item: _Ready) -> None:
        from diffrun import pipelines

        results = []
        started = time.perf_counter()
        try:
            for request in item.requests:
                if self._stopping():
                    return
                results.extend(pipelines.run(self._ensure_model(), [request], on_step=self._step_callback()))
        except _Abandon:
            return
        except Exception as exc:  # recorded as this job's failure
            self._fail(item.job, exc, item.inputs, {"fetch": item.inputs.seconds})
            return
        finally:
            self.summary.seconds["inference"] += time.perf_counter() - started
        self._write(item, results, {"fetch": item.inputs.seconds, "inference": time.perf_counter() - started}, 1)

    def _step_callback(self) -> Callable[[int, int], None]:
        def on_step(step: int, total: int) -> None:
            if self.should_stop() or isinstance(self._write_error, DiskError):  # its outputs could not be written
                raise _Abandon
            if self.on_step is not None:
                self.on_step(step, total)
        return on_step

    def _write(self, item: _Ready, results: list[Any], timings: dict[str, float], batch: int) -> None:
        """Hand the outputs to the writer thread, so encoding and saving overlap the next inference."""
        self._write_slots.acquire()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffrun-writer")
        future = self._writer.submit(self._write_now, item, results, timings, batch)
        future.add_done_callback(self._written)

    def _written(self, future: Future[None]) -> None:
        if future.exception() is not None and self._write_error is None:  # e.g. the results log cannot be written
            self._write_error = future.exception()
        self._write_slots.release()

    def _finish_writes(self) -> None:
        """Wait for every queued write: a stop never leaves a job written but unlogged; raise what the writer hit."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._write_error is not None:
            raise self._write_error

    def _write_now(self, item: _Ready, results: list[Any], timings: dict[str, float], batch: int) -> None:
        if self._write_error is not None:  # the disk filled up (or the log broke): leave it for a rerun
            return
        started = time.perf_counter()
        try:
            written = jobrun.write_job_outputs(item.job, self._ensure_model(), item.inputs, results, item.targets,
                                               quality=self.config.quality, overwrite=item.overwrite,
                                               sidecar=self.config.sidecar, fps=self.config.fps)
        except DiskError:  # not this job's fault: the batch stops (exit 74), the job gets no line
            raise
        except Exception as exc:  # a job that cannot be written fails alone
            self._fail(item.job, exc, item.inputs, timings)
            return
        timings["write"] = time.perf_counter() - started
        checks = jobrun.job_checks(item.job, results, written)
        if checks and self.config.strict:  # the files stay, to look at; the job fails (exit 6 in its line)
            self._fail(item.job, jobrun.check_failure(checks, item.job.id), item.inputs, timings, outputs=written,
                       checks=checks)
            return
        with self._lock:
            self.summary.seconds["writing"] += timings["write"]
            self.summary.ok += 1
            self.summary.images += len(written)
        self._emit(_record(item.job, OK, outputs=written, inputs=item.inputs.hashes(), batch=batch,
                           timings={k: round(v, 4) for k, v in timings.items()}, checks=checks))


def run_batch(jobs: list[Job], config: BatchConfig, **hooks: Any) -> Summary:
    """Run `jobs` (see BatchRunner for the hooks: should_stop, on_result, on_status, on_step)."""
    return BatchRunner(jobs, config, **hooks).run()


def dry_run(jobs: list[Job], policy: FetchPolicy, *, results: Path | None = None, retry_failed: bool = False,
            force: bool = False, prefetch: int = 4, should_stop: Callable[[], bool] | None = None,
            on_result: OnResult | None = None, prints: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Load every job's inputs (no model): one record per job with what a run would do and what failed.

    `prints` (job id -> fingerprint) lets it see which jobs changed since their last run (`changed`)."""
    skipped: set[str] = set()
    changed: set[str] = set()
    if results is not None:
        plan = resume_plan(jobs, results, retry_failed=retry_failed, force=force, prints=prints)
        skipped, changed = {job.id for job, _ in plan.skip}, set(plan.changed)
    records = []

    def load(job: Job) -> jobrun.JobInputs:
        return jobrun.load_job_inputs(job, policy)

    with Prefetcher(jobs, load, max(prefetch, 1), should_stop=should_stop, ordered=True) as prefetcher:
        for job, loaded in prefetcher:
            record: dict[str, Any] = {"id": job.id, "action": "skip" if job.id in skipped else "run",
                                      "changed": job.id in changed, "seeds": job.seeds, "output": job.output,
                                      "references": job.references()}
            if isinstance(loaded, Exception):
                record.update(status=FAILED, error=error_info(loaded))
            elif isinstance(loaded, BaseException):
                raise loaded
            else:
                record.update(status=OK, inputs=loaded.hashes(), seconds=round(loaded.seconds, 4))
            records.append(record)
            if on_result is not None:
                on_result(record)
    return records
