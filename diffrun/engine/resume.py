"""Resume: which jobs a rerun skips, which changed since their last run, and which files are a job's own.

A job's fingerprint is the sha256 of everything known before its inputs load that changes the files
it makes: its own settings (prompts, seeds, every call argument, input references, size, output),
the model (reference, revision, variant, a cheap fingerprint of a model folder or the size of a
checkpoint file, scheduler, LoRAs, dtype, device, VAE tiling) and the output settings (folder,
quality, fps). It goes into every results line. A rerun redoes a job whose recorded fingerprint
differs (a line without one, from an older diffrun, counts as unchanged). The bytes behind an
unchanged reference are not fetched again to compare: that is what resume saves (`--force` redoes).

A file at a job's target is the job's own when its recipe carries the job's id, or when it is a path
recorded in the job's last results line; a rerun (or `--force`) replaces only those. Anything else
needs `--overwrite`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffrun.engine.results import FAILED, is_done, read_records, settled
from diffrun.errors import DiffrunError
from diffrun.jobs import Job

if TYPE_CHECKING:
    from diffrun.pipelines import ModelOptions

SPEED_ONLY = ("offload", "vae_slicing", "attention_slicing", "compile")
"""Model options that change speed or memory, not the pixels: left out of fingerprints."""


def _files(ref: str) -> str | None:
    """A cheap fingerprint of a local model folder (names and sizes) or file (size); None for a hub id."""
    from diffrun.pipelines.loading import folder_fingerprint

    path = Path(ref).expanduser()
    try:
        if path.is_dir():
            return folder_fingerprint(path)
        if path.is_file():
            return f"size:{path.stat().st_size}"
    except OSError:
        return None
    return None


def run_settings(model: ModelOptions | None, *, output_dir: Path | str | None = None, quality: int | None = None,
                 fps: int | None = None) -> dict[str, Any]:
    """The run-wide part of every job's fingerprint: model and output settings."""
    settings: dict[str, Any] = {"output_dir": str(output_dir) if output_dir is not None else None,
                                "quality": quality, "fps": fps}
    if model is not None:
        options = {k: v for k, v in vars(model).items() if k not in SPEED_ONLY}
        options["loras"] = [[ref, scale, _files(ref)] for ref, scale in model.loras]
        settings["model"] = options
        settings["model_files"] = _files(model.model)
    return settings


def fingerprint(job: Job, settings: dict[str, Any]) -> str:
    """16 hex digits of the sha256 of the job's settings (its id left out) and the run's settings."""
    own = {k: v for k, v in job.to_dict().items() if k != "id"}
    text = json.dumps({"job": own, "run": settings}, sort_keys=True, ensure_ascii=False, default=str,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprints(jobs: list[Job], settings: dict[str, Any]) -> dict[str, str]:
    return {job.id: fingerprint(job, settings) for job in jobs}


def changed(previous: dict[str, Any] | None, current: str | None) -> bool:
    """True when the job's last line records a fingerprint and it is not `current`."""
    recorded = (previous or {}).get("fingerprint")
    return current is not None and isinstance(recorded, str) and recorded != current


@dataclass
class ResumePlan:
    run: list[Job]
    skip: list[tuple[Job, dict[str, Any]]]
    """(job, its last ok/failed line) for the jobs not run again."""
    changed: list[str] = field(default_factory=list)
    """Ids of the jobs that run again because their fingerprint changed."""
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Job id -> its last ok/failed line, as the log said when the run started."""


def resume_plan(jobs: list[Job], results: Path, *, retry_failed: bool, force: bool,
                prints: dict[str, str] | None = None) -> ResumePlan:
    """Which jobs run: done ones are skipped, failed ones too unless `retry_failed`, changed ones never."""
    state = settled(read_records(results))
    prints = prints or {}
    plan = ResumePlan([], [], state=state)
    for job in jobs:
        previous = state.get(job.id)
        if changed(previous, prints.get(job.id)):
            plan.changed.append(job.id)
            plan.run.append(job)
        elif not force and (is_done(previous) or (previous and previous["status"] == FAILED and not retry_failed)):
            plan.skip.append((job, previous))
        else:
            plan.run.append(job)
    return plan


def own_output(job: Job, target: str, recorded: list[Any]) -> bool:
    """True when `target` is missing, is a path the job's last results line recorded, or is a file whose
    recipe carries the job's id (a run killed after writing but before logging left it)."""
    from diffrun import outputs

    if not os.path.lexists(target):
        return True
    if os.path.abspath(target) in {os.path.abspath(p) for p in recorded if isinstance(p, str)}:
        return True
    try:
        recipe = outputs.read_recipe(target)
    except (DiffrunError, OSError, ValueError):
        return False
    return recipe.get("job_id") == job.id
