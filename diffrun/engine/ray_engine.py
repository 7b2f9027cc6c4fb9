"""The Ray engine: `diffrun batch --engine ray`, the same jobs and results past one machine.

The driver (this process) does what the local engine does before and after running jobs, with the
local engine's own code: resume selection, `skipped` lines, the results log, the summary and the exit
code. Between, Ray Data runs the jobs still to do: inputs load and decode in CPU tasks
(`jobrun.load_job_inputs`), then an actor pool runs them through the pipeline, each actor loading
the model once (one GPU per actor when the cluster has GPUs) and writing the outputs itself, so the
output folder must be one every node can write (a shared filesystem; on one machine it is).

Ray is an optional extra and is imported only inside these functions.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from diffrun.engine.batch import BatchConfig, BatchRunner, OnResult, Summary
from diffrun.engine.results import FAILED, OK
from diffrun.errors import UsageError
from diffrun.jobs import Job

INSTALL_HINT = "pip install 'diffrun[ray]'"
_FORWARD_ENV = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "TORCH_HOME", "DIFFRUN_")
"""Environment variables handed to Ray's workers (offline mode, caches), which may run on other nodes."""
_LOADER_CPUS = 0.25
"""CPUs reserved per input-loading task: they mostly wait on the network or the disk."""


@dataclass
class RayOptions:
    address: str | None = None
    """None: $RAY_ADDRESS if set, else a local Ray for this run; "auto": the cluster running here; or HOST:PORT."""
    workers: int | None = None
    """Inference actors (None: one per GPU of the cluster, or 1 without GPUs)."""
    gpus_per_worker: float | None = None
    """GPUs per actor (None: 1 when the cluster has GPUs, else 0)."""
    blocks: int = 1000
    """At most this many input-loading tasks (one per job below that)."""


def require_ray() -> None:
    """UsageError (exit 2) with the install command when Ray (with Ray Data) is not installed."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"--engine ray needs Ray with Ray Data, which is not installed ({exc})",
                         hint=INSTALL_HINT) from None


def _worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARD_ENV)}


def connect(options: RayOptions, on_status: Callable[[str], None]) -> bool:
    """ray.init as `options` say, Ray's logs kept off stdout; True if this call started Ray (and owns it)."""
    import ray

    if ray.is_initialized():
        return False
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    address = options.address or os.environ.get("RAY_ADDRESS") or None  # `ray job submit` sets RAY_ADDRESS
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address and not os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        # A cluster started elsewhere does not share this shell's environment; a submitted Ray job has its own.
        common["runtime_env"] = {"env_vars": _worker_env()}
    try:
        if address:
            on_status(f"joining Ray at {address}")
            try:
                ray.init(address=address, **common)
            except ConnectionError as exc:
                raise UsageError(f"--ray-address {address}: cannot connect to Ray: {exc}",
                                 hint="start one with `ray start --head`, or leave --ray-address out") from None
        else:
            on_status("starting a local Ray")
            workers = options.workers or 1
            # One CPU more than the machine has (or than the workers take), so loading tasks always fit.
            cpus = max(os.cpu_count() or 1, workers) + 1
            ray.init(num_cpus=cpus, include_dashboard=False, ignore_reinit_error=True, **common)
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig, handler in handlers.items():  # ray.init installs its own; the CLI's graceful stop wins
                signal.signal(sig, handler)
    return True


def plan_workers(options: RayOptions, resources: dict[str, float]) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for a cluster with `resources` (ray.cluster_resources())."""
    gpus = float(resources.get("GPU", 0))
    per_gpu = options.gpus_per_worker if options.gpus_per_worker is not None else (1.0 if gpus else 0.0)
    workers = options.workers or (max(1, int(gpus // per_gpu)) if per_gpu else 1)
    if per_gpu:
        return workers, per_gpu, 1.0
    # CPU inference: share the CPUs between the actors, keeping one for loading (Ray sets their threads).
    cpus = float(resources.get("CPU", 1))
    return workers, 0.0, float(max(1, int((cpus - 1) // workers)))


class RayBatchRunner(BatchRunner):
    """The local engine's runner with `_run` done by Ray: resume, skipped lines, log and summary are shared."""

    def __init__(self, jobs: list[Job], config: BatchConfig, options: RayOptions, **hooks: Any) -> None:
        super().__init__(jobs, config, **hooks)
        self.options = options

    def run(self) -> Summary:
        require_ray()
        import ray

        owned = connect(self.options, self.on_status)
        try:
            return super().run()
        finally:
            if owned:
                ray.shutdown()

    def _run(self, todo: list[Job]) -> None:
        if not todo:
            return
        import ray

        from diffrun.engine import ray_workers as rw

        workers, gpus, cpus = plan_workers(self.options, ray.cluster_resources())
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # warnings (e.g. resources) stay on stderr
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"
        flag = ray.remote(num_cpus=0)(rw.StopFlag).remote()
        config = replace(self.config, save_inputs=None)
        save_dir = str(self.config.save_inputs.resolve()) if self.config.save_inputs else None
        rows = [{"job": rw.job_to_json(job)} for job in todo]
        dataset = (
            ray.data.from_items(rows, override_num_blocks=min(len(rows), max(self.options.blocks, 1)))
            .map(rw.load_row, fn_kwargs={"policy": self.config.policy, "save_dir": save_dir, "flag": flag},
                 num_cpus=_LOADER_CPUS)
            .map_batches(rw.InferenceActor, fn_constructor_kwargs={"config": config, "flag": flag},
                         compute=ray.data.ActorPoolStrategy(size=workers), num_gpus=gpus, num_cpus=cpus,
                         batch_size=self.config.batch_size)
        )
        self.on_status(f"running on {workers} Ray worker{'s' * (workers > 1)}")
        done = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(flag, done), name="diffrun-ray-stop", daemon=True)
        watcher.start()
        try:
            for row in dataset.iter_rows():
                if row["fatal"]:
                    flag.set.remote()
                    raise rw.CarriedError(json.loads(row["fatal"]))
                self._take(json.loads(row["record"]), float(row["model_load"]))
        finally:
            done.set()

    def _watch(self, flag: Any, done: threading.Event) -> None:
        """Tell the workers to stop (Ctrl-C, --fail-fast) without waiting for the next result."""
        while not done.wait(0.1):
            if self._stopping():
                flag.set.remote()
                return

    def _take(self, record: dict[str, Any], model_load: float) -> None:
        """Count one record from a worker and log it, as the local engine's runner does for its own."""
        seconds = self.summary.seconds
        if model_load:
            self.summary.model_loaded = True
            seconds["model_load"] = max(seconds["model_load"], model_load)
        timings = record.get("timings") or {}
        seconds["fetching"] += timings.get("fetch", 0.0)
        seconds["inference"] += timings.get("inference", 0.0)
        seconds["writing"] += timings.get("write", 0.0)
        if record["status"] == OK:
            self.summary.ok += 1
            self.summary.images += len(record["outputs"])
        elif record["status"] == FAILED:
            self.summary.failed += 1
            if self.config.fail_fast:
                self._failed_fast = True
        self._emit(record)


def run_ray_batch(jobs: list[Job], config: BatchConfig, options: RayOptions | None = None, *,
                  should_stop: Callable[[], bool] | None = None, on_result: OnResult | None = None,
                  on_status: Callable[[str], None] | None = None) -> Summary:
    """`run_batch` on Ray: same jobs, same results log, same Summary."""
    return RayBatchRunner(jobs, config, options or RayOptions(), should_stop=should_stop, on_result=on_result,
                          on_status=on_status).run()
