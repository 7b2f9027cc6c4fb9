"""One inference worker behind a bounded queue: inputs load in a thread pool while the pipeline runs,
consecutive compatible requests run as one micro-batch (pipelines.batch_key), each with its own seeds."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffrun import pipelines
from diffrun.engine import jobrun
from diffrun.errors import DiffrunError, QueueFullError, UnavailableError
from diffrun.jobs import Job
from diffrun.loaders.policy import FetchPolicy


class Cancelled(Exception):
    """Raised from a step callback to stop a micro-batch whose every client has gone (pipelines.run re-raises it)."""


@dataclass
class Work:
    """One request in the scheduler: its job, where its events go, and its result."""

    job: Job
    policy: FetchPolicy
    id: str = ""
    kind: str = "image"
    """"image" (the images routes: a video task is refused unless `allow_video`) or "video"."""
    allow_video: bool = False
    on_event: Callable[[dict], None] | None = None
    future: Future = field(default_factory=Future)
    """Result: (model, inputs, outputs, timings, batch size)."""
    cancelled: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    inputs: Future | None = None
    batch_size: int | None = None
    """The client's hint: at most this many requests in the micro-batch this one runs in."""

    def emit(self, event: dict) -> None:
        if self.on_event is not None:
            self.on_event(event)


class Scheduler:
    """Queue + one worker thread; `submit` is non-blocking, results arrive on each Work's future."""

    def __init__(self, runtime: pipelines.ModelOptions, *, max_queue: int = 64, max_batch: int = 4,
                 load_workers: int = 4, save_dir: Path | None = None,
                 on_progress: Callable[[str], None] | None = None) -> None:
        self.runtime = runtime
        self.max_queue = max_queue
        self.max_batch = max(1, max_batch)
        self.save_dir = save_dir
        self.model: pipelines.LoadedModel | None = None
        self.load_error: DiffrunError | BaseException | None = None
        self.loading = "starting"
        self.loaded = threading.Event()
        self.draining = False
        self.stopped = False
        self.in_flight = 0
        self.served = 0
        self.last_activity = time.monotonic()
        self.inference_seconds = 0.0
        self.dropped = 0
        """Requests whose client went away before they started (never run)."""
        self.batches = 0
        self.input_bytes = 0
        """Bytes of every input loaded: uploads, data: URIs and fetched URLs."""
        self._on_progress = on_progress
        self._queue: collections.deque[Work] = collections.deque()
        self._cond = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=max(1, load_workers), thread_name_prefix="diffrun-serve-load")
        self._thread = threading.Thread(target=self._main, name="diffrun-serve-worker", daemon=True)

    # -- life cycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _load(self) -> None:
        def progress(text: str) -> None:
            self.loading = text
            if self._on_progress:
                self._on_progress(text)

        try:
            self.model = pipelines.load_model(self.runtime, on_progress=progress)
            self.last_activity = time.monotonic()  # --keep-alive counts from ready
        except BaseException as exc:  # reported by the runner, which exits 4 (or 70 for a bug)
            self.load_error = exc
        finally:
            self.loaded.set()

    def touch(self) -> None:
        """A request arrived or ended: --keep-alive's idle time starts again."""
        self.last_activity = time.monotonic()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, work: Work) -> None:
        """Queue `work` and start loading its inputs; QueueFullError / UnavailableError when it cannot be."""
        with self._cond:
            if self.draining or self.stopped:
                raise UnavailableError("the server is stopping", hint="retry against another server")
            if self.model is None:
                raise UnavailableError("the model is still loading", hint="wait for /health to answer 200")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"the queue is full ({self.max_queue} requests)", hint="retry later")
            self._queue.append(work)
            self.last_activity = time.monotonic()
            work.emit({"event": "queued", "position": len(self._queue) - 1})  # before its inputs start loading
            work.inputs = self._pool.submit(self._load_inputs, work)
            work.inputs.add_done_callback(self._notify)
            self._cond.notify_all()

    def cancel(self, work: Work) -> None:
        """The client has gone: a queued request leaves the queue now (its inputs may still be loading),
        a running one stops at its next step when its whole micro-batch is gone."""
        work.cancelled.set()
        with self._cond:
            if work not in self._queue:
                return
            self._queue.remove(work)
            self.dropped += 1
            self._cond.notify_all()
        _fail(work, Cancelled())

    def _load_inputs(self, work: Work) -> jobrun.JobInputs:
        if work.cancelled.is_set():
            raise Cancelled
        work.emit({"event": "status", "text": "loading inputs"})
        inputs = jobrun.load_job_inputs(work.job, work.policy, self.save_dir)
        with self._cond:
            self.input_bytes += sum(len(item.data) for items in inputs.images.values() for item in items)
        return inputs

    def drain(self, timeout: float) -> None:
        """Stop taking requests; what is queued runs for up to `timeout` seconds, the rest answers 503."""
        with self._cond:
            self.draining = True
            self._cond.notify_all()
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            with self._cond:
                if not self._queue and self.in_flight == 0:
                    break
            time.sleep(0.05)
        self.stop("the server stopped before this request ran")

    def stop(self, reason: str) -> None:
        with self._cond:
            self.stopped = True
            left = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for work in left:
            work.cancelled.set()
            _fail(work, UnavailableError(reason, hint="retry against another server"))
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- the worker --------------------------------------------------------------------------------
    def _main(self) -> None:
        self._load()
        if self.model is None:
            return
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _ready(self) -> Work | None:
        """The earliest queued request whose inputs have loaded (or failed); caller holds the lock."""
        return next((w for w in self._queue if w.inputs is not None and w.inputs.done()), None)

    def _take(self) -> Work | None:
        """The next request to run: the earliest whose inputs are loaded, so one slow URL holds back
        nobody behind it (as batch's prefetch hands out jobs in the order they finish loading)."""
        with self._cond:
            while not self.stopped:
                work = self._ready()
                if work is not None:
                    self._queue.remove(work)
                    self.in_flight += 1
                    return work
                self._cond.wait(0.5)
            return None

    def _notify(self, _future: Future) -> None:
        with self._cond:
            self._cond.notify_all()

    def _next_batch(self) -> list[tuple[Work, Any, Any]] | None:
        """The next request and the queued ones right behind it that fit in its micro-batch."""
        while True:
            work = self._take()
            if work is None:
                return None
            prepared = self._prepare(work)
            if prepared is not None:
                break
            self._finished(work)
        batch = [prepared]
        key = pipelines.batch_key(prepared[2][0])
        limit = min(self.max_batch, work.batch_size or self.max_batch)
        while len(batch) < limit and len(prepared[2]) == 1:
            with self._cond:
                nxt = self._ready()  # a request still loading its inputs is not waited for
                if nxt is None or nxt.kind != work.kind:
                    break
                self._queue.remove(nxt)
                self.in_flight += 1
            candidate = self._prepare(nxt)
            if candidate is None:
                self._finished(nxt)
                continue
            hint = nxt.batch_size or self.max_batch
            if len(candidate[2]) != 1 or pipelines.batch_key(candidate[2][0]) != key or len(batch) >= hint:
                with self._cond:  # not this batch's kind: back to the head of the queue, it runs next
                    self._queue.appendleft(nxt)
                    self.in_flight -= 1
                break
            batch.append(candidate)
            limit = min(limit, hint)
        return batch

    def _prepare(self, work: Work) -> tuple[Work, Any, Any] | None:
        """Its inputs and pipeline requests, checked against the model; None when it failed or was cancelled."""
        assert self.model is not None and work.inputs is not None
        if work.cancelled.is_set():  # the client went away before it started
            self.dropped += 1
            _fail(work, Cancelled())
            return None
        try:
            inputs = work.inputs.result()
            requests = jobrun.job_requests(work.job, inputs)
            task = pipelines.plan_task(self.model, requests[0])
            if task.endswith("video") and work.kind == "image" and not work.allow_video:
                from diffrun.errors import TaskError

                raise TaskError(f"the model's task here is {task}: use /v1/videos", code="unsupported_task")
            if work.kind == "video" and not task.endswith("video"):
                from diffrun.errors import TaskError

                raise TaskError(f"the model's task here is {task}, not a video: use /v1/images/generations",
                                code="unsupported_task")
        except BaseException as exc:  # delivered to the request; a bug there is its 500, not the worker's end
            _fail(work, exc)
            return None
        return work, inputs, requests

    def _run(self, batch: list[tuple[Work, Any, Any]]) -> None:
        assert self.model is not None
        works = [w for w, _, _ in batch]
        requests = [r for _, _, reqs in batch for r in reqs]
        for work in works:
            work.emit({"event": "status", "text": "running"})

        def on_step(step: int, total: int) -> None:
            if all(w.cancelled.is_set() for w in works) or self.stopped:
                raise Cancelled
            for w in works:
                w.emit({"event": "step", "step": step, "total": total})

        start = time.perf_counter()
        self.batches += 1
        try:
            if len(requests) == 1 or len(batch) > 1:
                outputs = pipelines.run(self.model, requests, on_step=on_step)
            else:  # one job with several seeds: one call per seed, as generate does
                outputs = [o for r in requests for o in pipelines.run(self.model, [r], on_step=on_step)]
        except BaseException as exc:  # each request of the batch gets the error
            if isinstance(exc, Cancelled) and self.stopped:
                exc = UnavailableError("the server stopped while this request ran")
            for work in works:
                _fail(work, exc)
            for work in works:
                self._finished(work)
            return
        seconds = time.perf_counter() - start
        self.inference_seconds += seconds
        at = 0
        for work, inputs, reqs in batch:
            mine = outputs[at:at + len(reqs)]
            at += len(reqs)
            timings = {"queue": round(start - work.queued_at, 4), "inputs": round(inputs.seconds, 4),
                       "inference": round(seconds, 4)}
            if not work.future.done():
                work.future.set_result((self.model, inputs, mine, timings, len(batch)))
            self._finished(work)

    def _finished(self, work: Work) -> None:
        with self._cond:
            self.in_flight -= 1
            self.served += 1
            self.last_activity = time.monotonic()


def _fail(work: Work, exc: BaseException) -> None:
    if not work.future.done():
        work.future.set_exception(exc)
