"""Planning output file names: defaults, folders, templates, plain names, stdout; never clobbering."""

from __future__ import annotations

import os
import re
import string
from datetime import datetime
from pathlib import Path

from diffrun.errors import UsageError
from diffrun.outputs.atomic import exists_error
from diffrun.outputs.formats import check_extension, default_extension

TEMPLATE_FIELDS = ("seed", "index", "date", "time", "model", "id")
_WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth", ".gguf")


def safe_name(text: str, fallback: str = "model") -> str:
    """`text` made safe as part of a file name: only letters, digits, '.', '_' and '-'."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return cleaned or fallback


def model_name(model: str) -> str:
    """The last path component of a model reference (hub id, folder or weights file), filename-safe."""
    last = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    for suffix in _WEIGHT_SUFFIXES:
        if last.lower().endswith(suffix):
            last = last[: -len(suffix)]
    return safe_name(last)


NUMERIC_FIELDS = ("seed", "index")
_WIDTH_SPEC = re.compile(r"^0?[1-9][0-9]?d?$")
"""The one format spec a template may use, on {seed} and {index}: a width up to 99, zero-padded (`{index:03}`)."""
_PLACEHOLDERS = {"seed": 0, "index": 0, "date": "20000101", "time": "000000", "model": "model", "id": "id"}


def template_fields(output: str) -> list[str]:
    """The replacement fields in `output` (empty for a plain name).

    Only bare fields are allowed (`{seed}`), and on {seed} and {index} a zero-padded width up to 99
    (`{index:03}`): a format spec such as `{seed:>2000000000}` would build a name of any size, and
    conversions or attribute access reach past the value. Anything else raises UsageError.
    """
    try:
        parsed = list(string.Formatter().parse(output))
    except ValueError as e:
        raise UsageError(f"bad output template {output!r}: {e}") from e
    fields = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            known = " ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
            raise UsageError(f"unknown field {{{name}}} in output template {output!r}; use {known}")
        if conversion or (spec and not (name in NUMERIC_FIELDS and _WIDTH_SPEC.match(spec))):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise UsageError(f"{shown} in output template {output!r}: only bare fields such as {{{name}}} "
                             "(and on {seed}, {index} a zero-padded width such as {index:03}) are allowed")
        fields.append(name)
    return fields


def landing_folder(output: str) -> str:
    """The real folder `output` writes into (templates filled in, `~` expanded, symlinks and `..` resolved):
    the output itself when it names a folder (trailing `/`, `.`, `..`, an existing folder), else its parent."""
    return _landing(fill_placeholders(output))


def fill_placeholders(output: str) -> str:
    """`output` with every field of a template filled with a placeholder value (as is when it has none)."""
    return output.format(**_PLACEHOLDERS) if template_fields(output) else output


def _landing(path: str) -> str:
    text = os.path.expanduser(path)
    if text.endswith(("/", os.sep)) or os.path.basename(text) in (".", "..") or os.path.isdir(text):
        return os.path.realpath(text)
    return os.path.realpath(os.path.dirname(text) or ".")


def is_inside(output: str, folder: str | Path) -> bool:
    """True when every file `output` (a path, folder or template) can name lands in `folder` or below it.

    Field values cannot leave a folder (ids and model names are made filename-safe; numbers are digits),
    so checking the template with placeholder values checks every name it makes.
    """
    return _under(landing_folder(output), folder)


def path_inside(path: str | Path, folder: str | Path) -> bool:
    """True when `path` (a name already filled in: braces in it are literal) lands in `folder`."""
    return _under(_landing(str(path)), folder)


def _under(real: str, folder: str | Path) -> bool:
    root = os.path.realpath(folder)
    try:
        return os.path.commonpath([root, real]) == root
    except ValueError:  # two Windows drives: not inside
        return False


def _with_suffix(name: str, suffix: str) -> str:
    stem, ext = os.path.splitext(name)
    return f"{stem}{suffix}{ext}"


def _pairs(seeds: list[int], per_seed: int) -> list[tuple[int, int]]:
    return [(seed, i) for seed in seeds for i in range(per_seed)]


def _default_names(folder: Path | None, pairs, kind: str, now: datetime) -> list[str]:
    """Default names in `folder`; a name already taken (on disk or in this plan) gets -1, -2, ..."""
    ext = default_extension(kind)
    stamp = now.strftime("%Y%m%d-%H%M%S")
    taken: set[str] = set()
    names = []
    for seed, i in pairs:
        base = f"diffrun-{stamp}-{seed}-{i}"
        n = 0
        while True:
            name = f"{base}{ext}" if n == 0 else f"{base}-{n}{ext}"
            path = str(folder / name) if folder is not None else name
            if path not in taken and not os.path.lexists(path):
                break
            n += 1
        taken.add(path)
        names.append(path)
    return names


def _unique(names: list[str], pairs) -> list[str]:
    """Make templated names distinct: add -{index}, then -{seed}, then the position, as needed."""
    if len(set(names)) == len(names):
        return names
    names = [_with_suffix(n, f"-{i}") for n, (_, i) in zip(names, pairs, strict=True)]
    if len(set(names)) < len(names):
        names = [_with_suffix(n, f"-{seed}") for n, (seed, _) in zip(names, pairs, strict=True)]
    if len(set(names)) < len(names):  # repeated seeds
        names = [_with_suffix(n, f"-{k}") for k, n in enumerate(names)]
    return names


def _from_template(output: str, fields: list[str], pairs, model: str, job_id: str | None, now: datetime) -> list[str]:
    if "id" in fields and job_id is None:
        raise UsageError(f"{{id}} in output template {output!r} needs a job id (batch jobs have one)")
    values = {
        "date": now.strftime("%Y%m%d"),
        "time": now.strftime("%H%M%S"),
        "model": model_name(model),
        "id": safe_name(str(job_id), "job") if job_id is not None else "",
    }
    try:
        names = [output.format(seed=seed, index=i, **values) for seed, i in pairs]
    except (ValueError, KeyError, IndexError) as e:
        raise UsageError(f"bad output template {output!r}: {e}") from e
    return _unique(names, pairs)


def _from_plain(output: str, pairs, seeds: list[int]) -> list[str]:
    if len(pairs) == 1:
        return [output]
    if len(seeds) == 1:
        return [_with_suffix(output, f"-{i}") for _, i in pairs]
    return _unique([_with_suffix(output, f"-{seed}-{i}") for seed, i in pairs], pairs)


def plan_outputs(
    output: str | None,
    *,
    seeds: list[int],
    per_seed: int,
    kind: str = "image",
    model: str = "",
    job_id: str | None = None,
    overwrite: bool = False,
    now: datetime | None = None,
    default_dir: Path | None = None,
) -> list[str]:
    """The target path of every output, seed-major, or ["-"] for stdout.

    Explicitly named targets that exist raise OutputExistsError (unless `overwrite`), all checked
    before anything is written; default names never clash with existing files.
    """
    if kind not in ("image", "video"):
        raise ValueError(f"kind must be 'image' or 'video', not {kind!r}")
    if per_seed < 0:
        raise ValueError(f"per_seed must not be negative, not {per_seed}")
    now = now or datetime.now()
    pairs = _pairs(list(seeds), per_seed)
    if output == "-":
        if len(pairs) != 1:
            raise UsageError(f"-o - takes exactly one output; got {len(pairs)}")
        return ["-"]
    if not pairs:
        return []
    if output is None or output == "":
        return _default_names(default_dir, pairs, kind, now)
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        return _default_names(Path(output), pairs, kind, now)
    fields = template_fields(output)
    if fields:
        names = _from_template(output, fields, pairs, model, job_id, now)
        for name in {os.path.splitext(n)[1].lower(): n for n in names}.values():
            check_extension(name, kind)
    else:
        output = output.format() if "{{" in output or "}}" in output else output  # escaped braces: literal
        check_extension(output, kind)
        names = _from_plain(output, pairs, list(seeds))
    if not overwrite:
        for name in names:
            if os.path.lexists(name):
                raise exists_error(name)
    return names
