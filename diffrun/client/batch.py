"""`batch --server` / `batch --warm`: the local engine's runner (manifest, resume, results log, summary,
graceful stop) with its `_run` hook done by a server, `concurrency` jobs in flight at once.

Each job's inputs are prepared here (local files as bytes, as for `generate`), its seeds sent one request
each, and its outputs planned, checked and written here with the local engine's own rules. A stop
request (first Ctrl-C) sends nothing more and closes the connections of the jobs in flight at their next
progress event (the server cancels them): they get no line, and a rerun does them. A server that goes
away mid-batch stops the batch (exit 69); what was done is logged, so the same command resumes.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from diffrun.client.job import item_checks, parse_items, post, prepare_inputs, recipe_for, request, write_items
from diffrun.client.transport import Server
from diffrun.engine.batch import BatchConfig, BatchRunner
from diffrun.engine.jobrun import check_failure
from diffrun.engine.results import OK, now_iso
from diffrun.errors import DiffrunError, DiskError, ServerUnavailable
from diffrun.jobs import Job, images_per_seed


class _Stop(BaseException):
    """Raised from a progress event to drop a job in flight (its connection closes: the server cancels)."""


class RemoteBatchRunner(BatchRunner):
    """BatchRunner whose jobs run on `server`; `model` is the served model's reference (output names)."""

    def __init__(self, jobs: list[Job], config: BatchConfig, server: Server, *, concurrency: int, model: str,
                 **hooks: Any) -> None:
        super().__init__(jobs, config, **hooks)
        self.server = server
        self.concurrency = max(1, concurrency)
        self.model_ref = model
        self._fatal: BaseException | None = None

    def _stopping(self) -> bool:
        return self._fatal is not None or super()._stopping()

    def _run(self, todo: list[Job]) -> None:
        if not todo:
            return
        self.summary.model_loaded = True
        in_flight: set[Future[None]] = set()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="diffrun-remote") as pool:
            for job in todo:
                while len(in_flight) >= self.concurrency:
                    _, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                if self._stopping():
                    break
                in_flight.add(pool.submit(self._one, job))
            wait(in_flight)
        if self._fatal is not None:
            raise self._fatal

    def _one(self, job: Job) -> None:
        try:
            self._job(job)
        except _Stop:
            return
        except (DiskError, ServerUnavailable) as exc:  # not this job's fault: the batch stops
            if self._fatal is None:
                self._fatal = exc
        except Exception as exc:  # anything else is this job's failure, as in the local engine
            self._fail(job, exc)

    def _job(self, job: Job) -> None:
        config = self.config
        try:
            prepared = prepare_inputs(job, config.policy, config.save_inputs)
        except DiffrunError as exc:
            self._fail(job, exc)
            return
        with self._lock:
            self.summary.seconds["fetching"] += prepared.seconds
        timings = {"fetch": prepared.seconds}

        def on_event(event: dict[str, Any]) -> None:
            if self._stopping():
                raise _Stop
            if event.get("event") == "step" and self.on_step is not None:
                self.on_step(event.get("step", 0), event.get("total", 0))

        started = time.perf_counter()
        try:
            results = []
            for seed in job.seeds:
                route, body = request(job, seed, prepared, config.policy)
                if config.batch_size > 1:  # the micro-batch hint; 1 (the default) leaves it to the server
                    body["batch_size"] = config.batch_size
                results.append(parse_items(post(self.server, route, body, on_event), images_per_seed(job),
                                           self.server))
        except ServerUnavailable:
            raise
        except DiffrunError as exc:
            self._fail(job, exc, None, timings)
            return
        timings["inference"] = time.perf_counter() - started
        with self._lock:
            self.summary.seconds["inference"] += timings["inference"]
        if self._stopping():
            return
        task = str(results[0][0].recipe.get("task") or "")
        try:
            targets, overwrite = self._plan_targets(job, "video" if task.endswith("video") else "image",
                                                    self.model_ref)
            started = time.perf_counter()
            written = write_items(job, prepared, results, targets, quality=config.quality, overwrite=overwrite,
                                  sidecar=config.sidecar, fps=config.fps)
        except DiskError:
            raise
        except DiffrunError as exc:
            self._fail(job, exc, None, timings)
            return
        timings["write"] = time.perf_counter() - started
        with self._lock:
            self.summary.seconds["writing"] += timings["write"]
        checks = item_checks(job, results, written)
        if checks and config.strict:  # the files stay, to look at; the job fails (exit 6 in its line)
            self._fail(job, check_failure(checks, job.id), None, timings, outputs=written, checks=checks)
            return
        with self._lock:
            self.summary.ok += 1
            self.summary.images += len(written)
        self._emit({"id": job.id, "status": OK, "outputs": written, "seed": job.seeds[0] if job.seeds else None,
                    "seeds": job.seeds, "inputs": _hashes(recipe_for(results[0][0], job, prepared)), "batch": 1,
                    "timings": {k: round(v, 4) for k, v in timings.items()}, "checks": checks, "time": now_iso()})


def _hashes(recipe: dict[str, Any]) -> dict[str, list[str]]:
    inputs = recipe.get("inputs") if isinstance(recipe.get("inputs"), dict) else {}
    return {name: [str(item.get("sha256")) for item in items if isinstance(item, dict)]
            for name, items in inputs.items() if isinstance(items, list)}

