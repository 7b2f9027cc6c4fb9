"""What a batch does to the disk before any job: check it can write where it will, hold the results log,
and clear the temp files killed runs left in its output folders.

All of it happens before the model loads, so a read-only or missing folder fails in a second (exit 2)
and a second runner on the same log is refused (exit 75) instead of both computing every job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from diffrun.engine.lock import LogLock
from diffrun.engine.results import ResultsLog
from diffrun.jobs import Job
from diffrun.outputs.atomic import check_writable, clean_stale_temps

if TYPE_CHECKING:
    from diffrun.engine.batch import BatchConfig


def output_folders(jobs: list[Job], output_dir: Path) -> list[Path]:
    """The folders the jobs write into: the output folder and each row's own output's fixed folder."""
    folders = {Path(output_dir)}
    for job in jobs:
        if job.output and job.output != "-":
            fixed = job.output.split("{", 1)[0]
            folders.add(Path(os.path.dirname(fixed) or "."))
    return sorted(folders)


@contextmanager
def claim(config: BatchConfig, jobs: list[Job]) -> Iterator[None]:
    """Check --results, -o and --save-inputs, hold the results log, clean leftovers; release on exit."""
    started = time.time()
    log = Path(config.results)
    check_writable(config.output_dir, "output folder")
    ResultsLog(log).check()
    check_writable(log.parent, "results log folder")
    if config.save_inputs is not None:
        check_writable(config.save_inputs, "--save-inputs folder")
    with LogLock(log):
        for folder in output_folders(jobs, config.output_dir):
            clean_stale_temps(folder, older_than=started)
        yield
