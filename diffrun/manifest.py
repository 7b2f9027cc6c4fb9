"""Batch manifests: JSON Lines or CSV rows -> validated Jobs, every problem reported at once.

A row has the fields of `generate`'s options; the command line's options are every row's defaults.
Relative input paths in a row resolve against the manifest's folder; a relative `output` resolves
against the output folder (`-o`), and every output must land inside that folder (after templates,
`~`, `..` and symlinked folders) unless `allow_outside_output`.

Reading never loses a row or crashes on one: an unterminated CSV quote, a cell of any size, JSON
nested too deeply, repeated JSON keys, a NUL in `output`, invalid UTF-8 (a UTF-8 BOM is dropped) are
each a problem with its line number, all reported together before any work.

Ids: a row without `id` gets `row-<12 hex>`, the sha256 of the row's own fields (canonical JSON),
so inserting or reordering rows does not change the ids of the others (resume relies on that);
identical rows get `-2`, `-3`, ... in order. Seeds: a row without `seed` gets every default seed
(`--seed`, 0 when not given) plus the row's index (0-based, data rows only), so a rerun of the
same manifest uses the same seeds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from diffrun.errors import InputError, ManifestError, UsageError
from diffrun.jobs import DEFAULT_MAX_IMAGES, Job, job_problems
from diffrun.loaders.sources import classify
from diffrun.manifest_rows import MAX_DEPTH, decode_manifest, detect_format, read_rows
from diffrun.manifest_rows import RowProblem as _Bad
from diffrun.manifest_rows import json_value as _json
from diffrun.manifest_rows import type_name as _type
from diffrun.outputs.names import fill_placeholders, path_inside

__all__ = ["FIELDS", "MAX_DEPTH", "Manifest", "content_id", "decode_manifest", "detect_format", "load_manifest",
           "parse_manifest", "read_rows", "resolve_ref", "row_job"]

FIELDS = (
    "id", "prompt", "negative_prompt", "image", "mask", "inputs", "params", "seed", "steps", "guidance",
    "strength", "width", "height", "frames", "fps", "num_images", "output",
)
_INTS = ("steps", "width", "height", "frames", "fps", "num_images")
_FLOATS = ("guidance", "strength")
_STRINGS = ("prompt", "negative_prompt")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_PROBLEMS_SHOWN = 50


@dataclass
class Manifest:
    jobs: list[Job]
    lines: list[int]
    """The manifest line of each job (1-based), for messages."""
    source: str
    format: str


def _cell_json(value: Any, opener: str) -> Any:
    """A CSV cell that holds JSON (a list or an object) is parsed; anything else is returned as is."""
    if isinstance(value, str) and value.strip().startswith(opener):
        return _json(value)
    return value


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise _Bad(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{name} must be an integer, got {_type(value)}")
    if value < minimum:
        raise _Bad(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(value: Any, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _Bad(f"{name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{name} must be a number, got {_type(value)}")
    if not math.isfinite(value):
        raise _Bad(f"{name} must be a finite number, got {value}")
    if name == "strength" and not 0.0 <= value <= 1.0:
        raise _Bad(f"strength must be between 0 and 1, got {value}")
    return float(value)


def _refs(value: Any, name: str, csv_row: bool) -> list[str]:
    value = _cell_json(value, "[") if csv_row else value
    if isinstance(value, str):
        value = [v.strip() for v in value.split("|")] if csv_row else [value]
    if not isinstance(value, list) or not value:
        raise _Bad(f"{name} must be a reference or a non-empty list of references")
    for ref in value:
        if not isinstance(ref, str) or not ref.strip():
            raise _Bad(f"{name} must hold reference strings, got {_type(ref)}")
        if ref.strip() == "-":
            raise _Bad(f"{name}: '-' (stdin) cannot be an input of a manifest row")
    return [ref.strip() for ref in value]


def _object(value: Any, name: str) -> dict[str, Any]:
    value = _cell_json(value, "{")
    if not isinstance(value, dict):
        raise _Bad(f"{name} must be a JSON object, got {_type(value)}")
    return value


def _seeds(value: Any, csv_row: bool) -> list[int]:
    value = _cell_json(value, "[") if csv_row else value
    if isinstance(value, str) and "|" in value:
        value = value.split("|")
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Bad("seed must be an integer or a non-empty list of integers")
    return [_int(v, "seed", 0) for v in values]


def resolve_ref(ref: str, base: Path) -> str:
    """A relative local path resolved against `base`; URLs, data: URIs and absolute paths unchanged."""
    try:
        if classify(ref) != "path":  # the loader's own rule, so `a:b.png` is the manifest folder's file
            return ref
    except InputError:  # ftp://, s3://: left for the loader to refuse with its own message
        return ref
    path = Path(os.path.expanduser(ref))
    return ref if path.is_absolute() else str(base / path)


def _resolve_output(output: str, out_dir: Path, allow_outside: bool) -> str:
    """A row's output resolved against the output folder; _Bad when it would land outside it."""
    if output == "-":
        raise _Bad("output: '-' (stdout) cannot be used in a batch")
    if any(ord(c) < 32 or c == "\x7f" for c in output):
        raise _Bad("output must not contain control characters (NUL, newline, ...)")
    try:
        path = os.path.expanduser(output)
        filled = os.path.expanduser(fill_placeholders(output))  # checks the template: a bad one is the row's problem
        if not os.path.isabs(path):
            # out_dir is a plain folder: braces in its name (a{b}) stay literal in the row's template
            folder = str(out_dir).replace("{", "{{").replace("}", "}}")
            path, filled = os.path.join(folder, path), os.path.join(str(out_dir), filled)
        if not allow_outside and not path_inside(filled, out_dir):
            raise _Bad(f"output {output!r} lands outside the output folder {out_dir} "
                       "(pass --allow-outside-output to allow it)")
    except UsageError as e:
        raise _Bad(f"output: {e.message}") from None
    except (OSError, RuntimeError) as e:  # RuntimeError: `~` with no home folder
        raise _Bad(f"output {output!r}: {e}") from None
    return path


def row_job(row: dict[str, Any], defaults: Job, base: Path, *, csv_row: bool = False, out_dir: Path | None = None,
            allow_outside: bool = False) -> tuple[Job, list[str]]:
    """The job of one row merged over `defaults`, and this row's problems (all of them).

    Inputs resolve against `base`, the output against `out_dir` (default `base`)."""
    problems: list[str] = []
    fields: dict[str, Any] = {}
    for key in row:
        if key not in FIELDS:
            hint = " (did you mean seed?)" if key == "seeds" else ""
            problems.append(f"unknown key {key!r}{hint}")
    for key, value in row.items():
        if key not in FIELDS or key == "id":
            continue
        if value is None:
            continue
        try:
            if key == "output":
                fields[key] = _output(value, out_dir or base, allow_outside)
            else:
                fields[key] = _field(key, value, base, csv_row)
        except _Bad as e:
            problems.append(str(e))
    job = replace(defaults, image=list(defaults.image), inputs=dict(defaults.inputs), params=dict(defaults.params),
                  seeds=list(defaults.seeds))
    for key, value in fields.items():
        if key == "inputs":
            job.inputs.update(value)
        elif key == "params":
            job.params.update(value)
        elif key == "seed":
            job.seeds = value
        else:
            setattr(job, key, value)
    return job, problems


def _field(key: str, value: Any, base: Path, csv_row: bool) -> Any:
    if key in _INTS:
        return _int(value, key, 1)
    if key in _FLOATS:
        return _float(value, key)
    if key in _STRINGS:
        if not isinstance(value, str):
            raise _Bad(f"{key} must be a string, got {_type(value)}")
        return value
    if key == "image":
        return [resolve_ref(r, base) for r in _refs(value, key, csv_row)]
    if key == "mask":
        refs = _refs(value, key, csv_row)
        if len(refs) != 1:
            raise _Bad("mask must be one reference")
        return resolve_ref(refs[0], base)
    if key == "inputs":
        out = {}
        for name, refs in _object(value, key).items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise _Bad(f"inputs: {name!r} is not a pipeline argument name")
            out[name] = [resolve_ref(r, base) for r in _refs(refs, f"inputs.{name}", False)]
        return out
    if key == "params":
        return _object(value, key)
    if key == "seed":
        return _seeds(value, csv_row)
    raise _Bad(f"unknown key {key!r}")  # pragma: no cover - FIELDS and this function agree


def _output(value: Any, out_dir: Path, allow_outside: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"output must be a non-empty string, got {_type(value)}")
    return _resolve_output(value.strip(), out_dir, allow_outside)


def content_id(row: dict[str, Any]) -> str:
    """`row-` and 12 hex digits of the sha256 of the row's own fields, keys sorted, empty ones left out."""
    clean = {k: v for k, v in row.items() if v is not None and k != "id"}
    text = json.dumps(clean, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return "row-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def parse_manifest(text: str, *, defaults: Job | None = None, base: Path | None = None,
                   fmt: str | None = None, source: str = "manifest", output_dir: Path | None = None,
                   allow_outside_output: bool = False, max_images: int = DEFAULT_MAX_IMAGES) -> Manifest:
    """Every row of `text` as a Job; ManifestError listing every problem (with its line) if any.

    Inputs resolve against `base` (default: the current folder); outputs against `output_dir`
    (default: `base`), inside which they must stay unless `allow_outside_output`.
    """
    defaults = defaults or Job()
    base = base or Path.cwd()
    output_dir = Path(output_dir) if output_dir is not None else base
    fmt = fmt or detect_format(source, text)
    rows, problems = read_rows(text, fmt)
    base_seeds = list(defaults.seeds) or [0]
    jobs: list[Job] = []
    lines: list[int] = []
    seen: dict[str, int] = {}
    auto: dict[str, int] = {}
    for index, (line, row) in enumerate(rows):
        job, row_problems = row_job(row, defaults, base, csv_row=fmt == "csv", out_dir=output_dir,
                                    allow_outside=allow_outside_output)
        if "seed" not in row or row["seed"] is None:
            job.seeds = [s + index for s in base_seeds]
        if not row_problems:  # values each fine on their own: together (and with the defaults) too?
            row_problems = job_problems(job, max_images=max_images, names={"seeds": "seed"})
        problems.extend((line, p) for p in row_problems)
        raw_id = row.get("id")
        if raw_id is None or raw_id == "":
            job.id = content_id(row)
            auto[job.id] = auto.get(job.id, 0) + 1
            if auto[job.id] > 1:
                job.id = f"{job.id}-{auto[job.id]}"
        elif isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not _ID.fullmatch(str(raw_id)):
            problems.append((line, f"id must be 1-128 letters, digits, '.', '_' or '-' (first a letter or "
                                   f"digit), got {raw_id!r}"))
            continue
        else:
            job.id = str(raw_id)
        if job.id in seen:
            problems.append((line, f"duplicate id {job.id!r} (first on line {seen[job.id]})"))
        else:
            seen[job.id] = line
        jobs.append(job)
        lines.append(line)
    if not rows and not problems:
        problems.append((0, "no rows"))
    if problems:
        problems.sort(key=lambda p: p[0])
        shown = [f"  line {n}: {p}" if n else f"  {p}" for n, p in problems[:_MAX_PROBLEMS_SHOWN]]
        if len(problems) > _MAX_PROBLEMS_SHOWN:
            shown.append(f"  ... and {len(problems) - _MAX_PROBLEMS_SHOWN} more")
        noun = "problem" if len(problems) == 1 else "problems"
        raise ManifestError(f"bad manifest {source} ({len(problems)} {noun}):\n" + "\n".join(shown),
                            problems, hint="fix the lines above; nothing was run")
    return Manifest(jobs, lines, source, fmt)


def load_manifest(source: str, *, defaults: Job | None = None, fmt: str | None = None,
                  output_dir: Path | None = None, allow_outside_output: bool = False,
                  max_images: int = DEFAULT_MAX_IMAGES) -> Manifest:
    """Read `source` (a path, or `-` for stdin) and parse it; relative input paths resolve against its folder."""
    if source == "-":
        stream = getattr(sys.stdin, "buffer", None)
        data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
        base, name = Path.cwd(), "<stdin>"
    else:
        path = Path(source).expanduser()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ManifestError(f"manifest not found: {source}") from None
        except OSError as e:
            raise ManifestError(f"cannot read manifest {source}: {e.strerror or e}") from None
        base, name = path.resolve().parent, source
    return parse_manifest(decode_manifest(data, name), defaults=defaults, base=base, fmt=fmt, source=name,
                          output_dir=output_dir, allow_outside_output=allow_outside_output, max_images=max_images)
