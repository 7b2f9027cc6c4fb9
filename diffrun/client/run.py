"""Running a command's jobs on a server: find it ready, then send (generate's one job)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from diffrun.client import RemoteOptions
from diffrun.client.job import run_job
from diffrun.client.remote import wait_ready
from diffrun.client.transport import Server, connect
from diffrun.errors import UsageError
from diffrun.jobs import Job
from diffrun.loaders import FetchPolicy


def ready_server(remote: RemoteOptions, runtime: Any, *, bar: Any, task_id: Any, say, check) -> tuple[Server, dict]:
    """The server to send to, ready (model loaded), and its /health body; loading shown on `bar`."""
    def on_status(text: str) -> None:
        check()
        bar.update(task_id, description=text[:80])

    if remote.warm:
        from diffrun.client import warm
        from diffrun.pipelines.reference import check_model_ref

        check_model_ref(runtime.model, runtime.revision)  # as a cold run: a wrong -m is exit 4 before any spawn
        server, record, paths = warm.find_or_start(runtime, keep_alive=remote.keep_alive, say=say)
        return server, warm.wait_ready(server, record, paths, remote.server_timeout, on_status, check)
    server = connect(remote.server or "", remote.api_key)
    return server, wait_ready(server, remote.server_timeout, on_status)


def run_generate(job: Job, runtime: Any, policy: FetchPolicy, remote: RemoteOptions, *, model_given: str | None,
                 save_inputs: Path | None, overwrite: bool, quality: int | None, sidecar: bool, bar: Any,
                 say, check) -> dict[str, Any]:
    """generate's job on a server: the same files and summary as a local run."""
    task_id = bar.add_task("connecting", total=None)
    start = time.perf_counter()
    server, body = ready_server(remote, runtime, bar=bar, task_id=task_id, say=say, check=check)
    waited = time.perf_counter() - start
    try:
        served = str(body.get("model") or "")
        if model_given and runtime is not None and served and served != runtime.model:
            raise UsageError(f"--server {server.shown} serves {served}, not {runtime.model}",
                             hint="leave out -m with --server, or point --server at a server for this model")
        model = served or (runtime.model if runtime is not None else "model")
        summary = run_job(job, server, policy, model=model, save_inputs=save_inputs, overwrite=overwrite,
                          quality=quality, sidecar=sidecar, bar=bar, task_id=task_id, check=check)
        summary["timings"]["model_load"] = round(waited, 4)  # waiting for the server to be ready
        summary["timings"]["total"] = round(summary["timings"]["total"] + waited, 4)
        return summary
    finally:
        server.close()
