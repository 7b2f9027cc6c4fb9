"""engine/junit.py: the JUnit report of a batch, checked by a strict parser against the schema's rules."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

from diffrun.engine.junit import junit_tree, write_junit

# Ant's junit schema (what Jenkins, GitLab and GitHub reporters read): required and allowed attributes.
SCHEMA = {
    "testsuites": ({"tests", "failures", "errors", "time"},
                   {"name", "tests", "failures", "errors", "skipped", "time", "disabled"}),
    "testsuite": ({"name", "tests", "failures", "errors", "time", "timestamp", "hostname"},
                  {"name", "tests", "failures", "errors", "skipped", "time", "timestamp", "hostname", "id",
                   "package", "disabled"}),
    "testcase": ({"name", "classname", "time"}, {"name", "classname", "time", "assertions", "status"}),
    "failure": ({"type"}, {"type", "message"}),
    "skipped": (set(), {"message"}),
    "system-out": (set(), set()),
}
CHILDREN = {"testsuites": {"testsuite"}, "testsuite": {"testcase", "properties", "system-out", "system-err"},
            "testcase": {"failure", "error", "skipped", "system-out", "system-err"}, "failure": set(),
            "skipped": set(), "system-out": set()}


def validate(data: bytes) -> ET.Element:
    """Parse strictly and check every element's attributes and children against SCHEMA; the counts add up."""
    assert data.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ET.fromstring(data)
    assert root.tag == "testsuites"
    for element in root.iter():
        required, allowed = SCHEMA[element.tag]
        assert required <= set(element.attrib) <= allowed, (element.tag, element.attrib)
        assert {child.tag for child in element} <= CHILDREN[element.tag], element.tag
    for suite in [root, *root.findall("testsuite")]:
        cases = list(root.iter("testcase"))
        assert int(suite.get("tests")) == len(cases)
        assert int(suite.get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
        assert int(suite.get("skipped")) == sum(1 for c in cases if c.find("skipped") is not None)
        assert float(suite.get("time")) == round(sum(float(c.get("time")) for c in cases), 3)
    for case in root.iter("testcase"):
        assert float(case.get("time")) >= 0
    datetime.strptime(root.find("testsuite").get("timestamp"), "%Y-%m-%dT%H:%M:%S")
    return root


RECORDS = [
    {"id": "cat", "status": "ok", "outputs": ["/o/cat.png"], "timings": {"fetch": 0.25, "inference": 1.5}},
    {"id": "bad<&>\x01", "status": "failed", "outputs": [], "timings": {"fetch": 0.125},
     "error": {"code": "not_found", "category": "input", "exit": 3, "message": "x.png: no such file",
               "hint": "check the path"}},
    {"id": "done", "status": "skipped", "previous": "ok", "outputs": ["/o/done.png"]},
    {"id": "broken", "status": "skipped", "previous": "failed", "outputs": []},
]


def test_one_case_per_job_with_failures_and_skips(tmp_path: Path) -> None:
    earlier = {"broken": {"id": "broken", "status": "failed",
                          "error": {"code": "http_status", "message": "http://h/x: HTTP 404"}}}
    path = write_junit(tmp_path / "report.xml", RECORDS, earlier=earlier, hostname="ci",
                       timestamp=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    root = validate(Path(path).read_bytes())
    suite = root.find("testsuite")
    assert suite.get("timestamp") == "2026-01-02T03:04:05" and suite.get("hostname") == "ci"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["cat", "bad<&>", "done", "broken"]  # in order; XML-illegal \x01 dropped
    assert cases["cat"].get("time") == "1.750" and cases["cat"].find("failure") is None
    failure = cases["bad<&>"].find("failure")
    assert failure.get("type") == "not_found" and failure.get("message") == "x.png: no such file"
    assert "hint: check the path" in failure.text
    assert cases["done"].find("skipped") is not None and cases["done"].find("failure") is None
    earlier_failure = cases["broken"].find("failure")
    assert earlier_failure.get("type") == "http_status" and "earlier run" in earlier_failure.get("message")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "2", "1")


def test_report_replaces_the_last_one(tmp_path: Path) -> None:
    target = tmp_path / "report.xml"
    write_junit(target, RECORDS[:1])
    write_junit(target, RECORDS[:2])
    assert len(list(validate(target.read_bytes()).iter("testcase"))) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["report.xml"]  # no temp file left behind


def test_empty_run_is_a_valid_report() -> None:
    import io

    buffer = io.BytesIO()
    junit_tree([]).write(buffer, encoding="utf-8", xml_declaration=True)
    assert validate(buffer.getvalue()).get("tests") == "0"
