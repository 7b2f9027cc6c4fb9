"""Manifest text -> rows: JSON Lines or CSV, each row with its line number, each problem with its line.

Nothing is lost or crashes: an unterminated CSV quote stops reading with a problem on the line where
the row began (the rest of the file is not swallowed into one cell), a cell may be as long as the
manifest, JSON nested more than MAX_DEPTH deep and a key repeated in one object are problems, and
bytes that are not UTF-8 are a problem naming their line (a UTF-8 BOM is dropped).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from diffrun.errors import ManifestError

MAX_DEPTH = 32
"""Deepest nesting of lists and objects a row may hold (a row itself is depth 1)."""


class RowProblem(Exception):
    """One problem with one row or one field of it."""


def type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


class _RepeatedKey(ValueError):
    """A JSON object that names one key twice (json would silently keep the last)."""


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return value


def json_value(text: str) -> Any:
    """json.loads, refusing repeated keys and nesting deeper than MAX_DEPTH; RowProblem says why not."""
    try:
        value = json.loads(text, object_pairs_hook=_no_repeats)
    except _RepeatedKey as e:
        raise RowProblem(f"repeated key {e.args[0]!r}") from None
    except json.JSONDecodeError as e:
        raise RowProblem(f"not valid JSON: {e.msg} (column {e.colno})") from None
    except RecursionError:
        raise RowProblem(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    if _too_deep(value):
        raise RowProblem(f"nested too deeply (more than {MAX_DEPTH} levels)")
    return value


def _too_deep(value: Any) -> bool:
    level = [value]
    for _ in range(MAX_DEPTH):
        level = [v for item in level if isinstance(item, (list, dict))
                 for v in (item.values() if isinstance(item, dict) else item)]
        if not level:
            return False
    return any(isinstance(item, (list, dict)) for item in level)


def detect_format(name: str, text: str) -> str:
    """`jsonl` or `csv`: from the file name's suffix, else from the first non-blank character."""
    suffix = Path(name).suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return "jsonl" if line.lstrip().startswith("{") else "csv"
    return "jsonl"


def read_rows(text: str, fmt: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """(line, row) pairs and (line, problem) pairs. JSONL skips blank and `#` lines; CSV has a header."""
    if fmt == "jsonl":
        return _jsonl_rows(text)
    if fmt != "csv":
        raise ValueError(f"unknown manifest format {fmt!r}")
    return _csv_rows(text)


def _jsonl_rows(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            value = json_value(line)
        except RowProblem as e:
            problems.append((number, str(e)))
            continue
        if not isinstance(value, dict):
            problems.append((number, f"expected a JSON object, got {type_name(value)}"))
            continue
        rows.append((number, value))
    return rows, problems


def _csv_rows(text: str) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[int, str]] = []
    # A cell can be as long as the manifest (a data: URI): csv's 131,072-character default would fail it.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    # strict: an unterminated quote is an error, not the rest of the file swallowed into one cell.
    reader = csv.reader(io.StringIO(text), delimiter="\t" if "\t" in text.split("\n", 1)[0] else ",", strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            reason = "unterminated quote" if "end of data" in str(e) else f"bad quoting ({e})"
            problems.append((start, f"{reason}; nothing after this line was read"))
            break
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            dupes = sorted({h for h in header if header.count(h) > 1})
            if dupes:
                problems.append((start, "repeated column: " + ", ".join(dupes)))
            continue
        if len(cells) > len(header):
            problems.append((start, f"{len(cells)} cells but the header has {len(header)} columns"))
            continue
        rows.append((start, {h: c for h, c in zip(header, cells, strict=False) if c.strip() != ""}))
    return rows, problems


def decode_manifest(data: bytes, source: str) -> str:
    """Manifest bytes as text: UTF-8, a leading BOM dropped; ManifestError naming the line of a bad byte."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        problem = f"not valid UTF-8 (column {column}); save the manifest as UTF-8"
        raise ManifestError(f"bad manifest {source} (1 problem):\n  line {line}: {problem}", [(line, problem)],
                            hint="fix the line above; nothing was run") from None


