"""Running a command's jobs on a server: find it ready, then send (generate's one job)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from diffrun.client import RemoteOptions
from diffrun.client.job import prepare_inputs, run_job
from diffrun.client.remote import wait_ready
from diffrun.client.transport import Server, connect
from diffrun.errors import UsageError
from diffrun.jobs import Job
from diffrun.loaders import FetchPolicy


def ready_server(remote: RemoteOptions, runtime: Any, *, on_status, say, check) -> tuple[Server, dict]:
    """The server to send to, ready (model loaded), and its /health body; loading told to `on_status`."""
    def status(text: str) -> None:
        check()
        on_status(text[:80])

    if remote.warm:
        from diffrun.client import warm
        from diffrun.pipelines.reference import check_model_ref

        check_model_ref(runtime.model, runtime.revision)  # as a cold run: a wrong -m is exit 4 before any spawn
        server, record, paths = warm.find_or_start(runtime, keep_alive=remote.keep_alive, say=say)
        return server, warm.wait_ready(server, record, paths, remote.server_timeout, status, check)
    server = connect(remote.server or "", remote.api_key)
    return server, wait_ready(server, remote.server_timeout, status)


def check_served(server: Server, body: dict, runtime: Any, asked: bool) -> str:
    """The model the server serves; UsageError when the user `asked` for another one with -m."""
    served = str(body.get("model") or "")
    if asked and runtime is not None and served and served != runtime.model:
        raise UsageError(f"--server {server.shown} serves {served}, not {runtime.model}",
                         hint="leave out -m with --server, or point --server at a server for this model")
    return served


def run_generate(job: Job, runtime: Any, policy: FetchPolicy, remote: RemoteOptions, *, model_given: str | None,
                 save_inputs: Path | None, overwrite: bool, quality: int | None, sidecar: bool, bar: Any,
                 say, check) -> dict[str, Any]:
    """generate's job on a server: the same files and summary as a local run."""
    prepared = prepare_inputs(job, policy, save_inputs)  # first, as a local run: a bad input is exit 3 at once
    check()
    task_id = bar.add_task("connecting", total=None)
    start = time.perf_counter()
    server, body = ready_server(remote, runtime, on_status=lambda text: bar.update(task_id, description=text),
                                say=say, check=check)
    waited = time.perf_counter() - start
    try:
        served = check_served(server, body, runtime, bool(model_given))
        model = served or (runtime.model if runtime is not None else "model")
        summary = run_job(job, server, policy, prepared, model=model, overwrite=overwrite,
                          quality=quality, sidecar=sidecar, bar=bar, task_id=task_id, check=check)
        summary["timings"]["model_load"] = round(waited, 4)  # waiting for the server to be ready
        summary["timings"]["total"] = round(summary["timings"]["total"] + waited + prepared.seconds, 4)
        return summary
    finally:
        server.close()


def run_batch(jobs: list[Job], config: Any, remote: RemoteOptions, runtime: Any, *, concurrency: int | None,
              say, should_stop, on_result, on_status) -> Any:
    """batch's jobs on a server: the local engine's Summary, results log and resume (client/batch.py)."""
    from dataclasses import replace

    from diffrun.client.batch import RemoteBatchRunner
    from diffrun.errors import Interrupted
    from diffrun.pipelines.models import ModelOptions

    def check() -> None:
        if should_stop():
            raise Interrupted("interrupted before the server was ready", hint="run the same command again")

    start = time.perf_counter()
    server, body = ready_server(remote, runtime, on_status=on_status, say=say, check=check)
    waited = time.perf_counter() - start
    on_status("")
    try:
        served = check_served(server, body, runtime, bool(remote.server))
        config = replace(config, model=runtime or ModelOptions(model=served or "model"))
        max_batch = body.get("max_batch")
        default = max_batch if isinstance(max_batch, int) and not isinstance(max_batch, bool) and max_batch > 0 else 1
        runner = RemoteBatchRunner(jobs, config, server, concurrency=concurrency or min(default, 64),
                                   model=served or config.model.model, should_stop=should_stop,
                                   on_result=on_result, on_status=on_status)
        summary = runner.run()
        summary.seconds["model_load"] = waited  # waiting for the server to be ready
        summary.seconds["total"] += waited
        return summary
    finally:
        server.close()
