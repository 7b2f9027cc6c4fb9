"""What runs inside Ray: the input-loading task, the inference actor, and the stop flag they watch.

Ray imports this module in its worker processes (diffrun must be installed on every node). Rows
travel as plain columns: the job as JSON, its loaded inputs pickled (decoded pixels, not the
original bytes), a load failure as JSON. The inference actor runs each batch of rows through the
local engine's own BatchRunner, so micro-batching, per-job failures, output planning, writing and
the result records are the local engine's code, not a copy of it.
"""

from __future__ import annotations

import json
import pickle
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from diffrun.engine import jobrun
from diffrun.engine.batch import BatchConfig, BatchRunner, error_info
from diffrun.errors import DiffrunError, Exit
from diffrun.jobs import Job
from diffrun.loaders import FetchPolicy

_CHECK_EVERY = 0.25
"""Seconds between two looks at the stop flag from one process."""


class StopFlag:
    """A tiny Ray actor: the driver sets it on Ctrl-C, --fail-fast or a fatal error; workers read it."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class FlagWatcher:
    """Reads a StopFlag actor at most every _CHECK_EVERY seconds; once set, stays set."""

    def __init__(self, flag: Any) -> None:
        self._flag = flag
        self._seen = False
        self._checked = 0.0

    def __call__(self) -> bool:
        if self._seen or self._flag is None:
            return self._seen
        now = time.monotonic()
        if now - self._checked >= _CHECK_EVERY:
            import ray

            self._checked = now
            self._seen = bool(ray.get(self._flag.is_set.remote()))
        return self._seen


class CarriedError(DiffrunError):
    """A DiffrunError (or any failure) rebuilt from its `error_info` after crossing a process boundary."""

    def __init__(self, info: dict[str, Any]) -> None:
        super().__init__(info["message"], hint=info.get("hint"))
        self.code = info["code"]
        self.category = info.get("category", info["code"])
        self.exit = Exit(info["exit"]) if info["exit"] in set(Exit) else Exit.INTERNAL


def carry(exc: BaseException) -> str:
    """`error_info` of `exc` plus its hint, as JSON (exceptions with their own __init__ do not pickle)."""
    return json.dumps({**error_info(exc), "hint": getattr(exc, "hint", None)})


def job_to_json(job: Job) -> str:
    return json.dumps(job.to_dict(), default=str)


def job_from_json(text: str) -> Job:
    return Job(**json.loads(text))


def pack_inputs(inputs: jobrun.JobInputs) -> bytes:
    """The decoded inputs, pickled without their original bytes (only their sha256 travels)."""
    slim = {name: [replace(item, data=b"", digest=item.sha256) for item in items]
            for name, items in inputs.images.items()}
    return pickle.dumps(replace(inputs, images=slim), protocol=pickle.HIGHEST_PROTOCOL)


_watchers: dict[Any, FlagWatcher] = {}


def load_row(row: dict[str, Any], *, policy: FetchPolicy, save_dir: str | None, flag: Any) -> dict[str, Any]:
    """Ray Data `map` function (a CPU task): load and decode one job's inputs, or record why not."""
    watcher = _watchers.setdefault(flag, FlagWatcher(flag))
    out = {"job": row["job"], "inputs": b"", "error": "", "skip": False}
    if watcher():
        out["skip"] = True
        return out
    job = job_from_json(row["job"])
    try:
        out["inputs"] = pack_inputs(jobrun.load_job_inputs(job, policy, Path(save_dir) if save_dir else None))
    except Exception as exc:  # recorded as this job's failure by the actor, exactly as the local engine does
        out["error"] = carry(exc)
    return out


class _RowRunner(BatchRunner):
    """The local engine's runner, fed already-loaded inputs; records are collected, not logged."""

    def __init__(self, jobs: list[Job], config: BatchConfig, loaded: dict[str, Any], **hooks: Any) -> None:
        super().__init__(jobs, config, **hooks)
        self._loaded = loaded
        self.records: list[dict[str, Any]] = []

    def _load(self, job: Job) -> jobrun.JobInputs:
        got = self._loaded[job.id]
        if isinstance(got, BaseException):
            raise got
        return got

    def _emit(self, record: dict[str, Any]) -> None:
        self.records.append(record)


class InferenceActor:
    """Ray Data actor: loads the pipeline once (on its first job with inputs) and runs rows through it."""

    def __init__(self, config: BatchConfig, flag: Any = None) -> None:
        self.config = config
        self.stop = FlagWatcher(flag)
        self.model = None
        self.claimed: set[str] = set()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        jobs: list[Job] = []
        loaded: dict[str, Any] = {}
        for text, blob, error, skip in zip(batch["job"], batch["inputs"], batch["error"], batch["skip"],
                                           strict=True):
            if skip:
                continue
            job = job_from_json(str(text))
            jobs.append(job)
            loaded[job.id] = CarriedError(json.loads(str(error))) if error else pickle.loads(bytes(blob))
        runner = _RowRunner(jobs, self.config, loaded, should_stop=self.stop)
        runner.model = self.model
        runner._claimed = self.claimed
        fatal = ""
        try:
            if jobs and not self.stop():
                runner._run(jobs)
        except DiffrunError as exc:  # the model cannot load: the driver stops the run with its exit code
            fatal = carry(exc)
        loaded_now = runner.model is not None and self.model is None
        self.model = runner.model
        records = [json.dumps(r, ensure_ascii=False, default=str) for r in runner.records]
        load_seconds = runner.summary.seconds["model_load"] if loaded_now else 0.0
        if fatal:
            records.append("")
        return {"record": records, "fatal": [""] * (len(records) - bool(fatal)) + ([fatal] if fatal else []),
                "model_load": [load_seconds] * len(records)}
