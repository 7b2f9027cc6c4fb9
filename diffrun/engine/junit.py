"""`batch --junit FILE`: a JUnit XML report from the run's results records, one test case per job.

The shape is the one GitHub Actions' test reporters, GitLab's `artifacts:reports:junit` and Jenkins'
junit step read (Ant's junit schema): <testsuites> around one <testsuite>, a <testcase> per job
with name = job id, classname = the suite, time = the job's seconds. A failed job is a <failure>
(type = its error code, message = its one-line message); a job skipped as already done is
<skipped>; a job skipped because it failed in an earlier run is a <failure> with that run's error,
so the report, like the exit code, still says it is broken.
"""

from __future__ import annotations

import re
import socket
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diffrun.engine.results import FAILED, OK, SKIPPED

_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
"""Characters XML 1.0 cannot hold at all (escaping does not help): dropped."""


def _text(value: Any, limit: int = 4000) -> str:
    text = _NOT_XML.sub("", str(value if value is not None else ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def job_seconds(record: dict[str, Any]) -> float:
    """A job's time: the sum of its recorded timings (fetch, inference, ...); 0 for a skipped job."""
    timings = record.get("timings") or {}
    return sum(v for v in timings.values() if isinstance(v, (int, float)) and not isinstance(v, bool))


def _failure(case: ET.Element, error: dict[str, Any] | None, prefix: str = "",
             checks: list[dict[str, Any]] | None = None) -> None:
    error = error if isinstance(error, dict) else {}
    message = prefix + _text(error.get("message") or "failed")
    failure = ET.SubElement(case, "failure", message=_text(message, 1000), type=_text(error.get("code") or "failed"))
    body = [message]
    if error.get("hint"):
        body.append(f"hint: {_text(error['hint'])}")
    for check in checks or []:
        if isinstance(check, dict) and not check.get("ok", True):
            body.append(f"check {_text(check.get('check'))}: {_text(check.get('message'))}")
    failure.text = "\n".join(body)


def junit_tree(records: Iterable[dict[str, Any]], *, suite: str = "diffrun.batch",
               earlier: dict[str, dict[str, Any]] | None = None, timestamp: datetime | None = None,
               hostname: str | None = None) -> ET.ElementTree:
    """The report for this run's `records` (ok/failed/skipped lines); `earlier` maps a job id to its
    last ok/failed record in the log, for the error of a job skipped because it failed before."""
    earlier = earlier or {}
    stamp = (timestamp or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S")
    cases: list[ET.Element] = []
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    total = 0.0
    for record in records:
        status = record.get("status")
        if status not in (OK, FAILED, SKIPPED):
            continue
        seconds = job_seconds(record)
        total += seconds
        case = ET.Element("testcase", name=_text(record.get("id"), 1000), classname=_text(suite),
                          time=f"{seconds:.3f}")
        counts["tests"] += 1
        if status == FAILED:
            counts["failures"] += 1
            _failure(case, record.get("error"), checks=record.get("checks"))
        elif status == SKIPPED and record.get("previous") == FAILED:
            counts["failures"] += 1
            previous = earlier.get(str(record.get("id"))) or {}
            _failure(case, previous.get("error"), prefix="failed in an earlier run (skipped): ",
                     checks=previous.get("checks"))
        elif status == SKIPPED:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message="already done in an earlier run")
        if record.get("outputs") and status == OK:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(_text(p) for p in record["outputs"])
        cases.append(case)
    common = {"tests": str(counts["tests"]), "failures": str(counts["failures"]), "errors": "0",
              "skipped": str(counts["skipped"]), "time": f"{total:.3f}"}
    root = ET.Element("testsuites", name=_text(suite), **common)
    testsuite = ET.SubElement(root, "testsuite", name=_text(suite), **common, timestamp=stamp,
                              hostname=_text(hostname or socket.gethostname() or "localhost"))
    testsuite.extend(cases)
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: Path, records: Iterable[dict[str, Any]], **kw: Any) -> str:
    """Write the report atomically, replacing an earlier one (a report describes the latest run)."""
    from diffrun.outputs.atomic import atomic_write

    tree = junit_tree(records, **kw)
    return atomic_write(path, lambda f: tree.write(f, encoding="utf-8", xml_declaration=True), overwrite=True)
