"""Check a model reference before anything heavy is imported, and show it in messages.

A reference is a diffusers pipeline folder (with `model_index.json`), a single-file checkpoint, or a
hub id (`owner/name`). Checking one costs a stat or two; a hub id costs a look in the hub cache when
offline (huggingface_hub's cache helper, about 0.2 s to import, never torch). A hub id that is not
cached is let through when online: it may download.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from diffrun.errors import ModelError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
MAX_SHOWN = 200
MAX_INDEX_BYTES = 1 << 20
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")
_URL_USER = re.compile(r"(?i)^([a-z][a-z0-9+.-]*://)[^/?#]*@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:token|access_token|key|api_key|apikey|sig|signature|password)=)[^&#]*")
_TRUE = {"1", "ON", "YES", "TRUE"}
NOT_CACHED_HINT = "download it where the hub is reachable (hf download {ref}), or pass a local pipeline folder"


@dataclass(frozen=True)
class ModelRef:
    """A checked reference: `kind` is folder, file or hub; `ref` an absolute path, or the hub id."""

    kind: str
    ref: str


def shown(ref: object) -> str:
    """A model reference as messages show it: no URL credentials, no control characters, ~200 chars."""
    text = _SECRET_QUERY.sub(r"\1***", _URL_USER.sub(r"\1", str(ref)))
    text = _CONTROL.sub("?", text)
    if len(text) > MAX_SHOWN:
        keep = MAX_SHOWN - 3
        text = text[: keep * 2 // 3] + "..." + text[-(keep - keep * 2 // 3):]
    return text


def model_error(ref: object, reason: str, *, hint: str | None = None, code: str | None = None) -> ModelError:
    """The documented shape: `<model>: <reason>`, the model shown shortened and cleaned."""
    return ModelError(f"{shown(ref)}: {_CONTROL.sub('?', reason)}", hint=hint, code=code)


def offline() -> bool:
    """huggingface_hub's rule (HF_HUB_OFFLINE, else TRANSFORMERS_OFFLINE), read now rather than at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE


def is_hub_id(ref: str) -> bool:
    """`owner/name` as the hub spells repo ids (no `..` or `--`, each part at most 96 characters)."""
    return bool(_HUB_ID.match(ref)) and ".." not in ref and "--" not in ref and not ref.endswith((".", "-"))


def check_model_ref(model: str, revision: str | None = None) -> ModelRef:
    """The reference checked as far as it can be without loading it; ModelError (exit 4) if it cannot be."""
    if "://" in model:
        raise model_error(model, "a URL is not a model reference",
                          hint="download the checkpoint and pass its path, or pass a hub id (owner/name)",
                          code="unsupported")
    path = Path(model).expanduser()
    try:
        if path.is_dir():
            return _check_folder(model, path)
        if path.exists():
            return _check_file(model, path)
    except OSError as exc:  # permission denied, name too long, ...: the reason is the OS's
        raise model_error(model, (exc.strerror or str(exc)).lower(), code="unreadable") from exc
    except ValueError as exc:  # an embedded NUL byte: no such path can exist
        raise model_error(model, "no such file or folder", code="not_found") from exc
    if not is_hub_id(model) or model.startswith(("./", "../", "~")) or path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        raise model_error(model, "no such file or folder",
                          hint="pass a diffusers pipeline folder, a checkpoint file or a hub id (owner/name)",
                          code="not_found")
    if offline():
        _check_cached(model, revision)
    return ModelRef("hub", model)


def _check_folder(model: str, path: Path) -> ModelRef:
    index = path / "model_index.json"
    if not index.is_file():
        raise model_error(model, "not a diffusers pipeline folder (no model_index.json)",
                          hint="point at the folder that holds model_index.json, or at a checkpoint file",
                          code="not_a_model")
    with index.open("rb") as handle:  # a few hundred bytes; capped so a hostile one costs nothing
        text = handle.read(MAX_INDEX_BYTES + 1)
    try:
        config = json.loads(text) if len(text) <= MAX_INDEX_BYTES else None
    except ValueError as exc:  # bad JSON or bad UTF-8
        raise model_error(model, f"model_index.json is not valid JSON ({exc})", code="not_a_model") from exc
    if not isinstance(config, dict) or not isinstance(config.get("_class_name"), str):
        raise model_error(model, "model_index.json names no pipeline class (_class_name)", code="not_a_model")
    return ModelRef("folder", str(path.resolve()))


def _check_file(model: str, path: Path) -> ModelRef:
    if path.name == "model_index.json":
        raise model_error(model, "this is the pipeline's index, not the model",
                          hint="pass the folder that holds it", code="not_a_model")
    if not path.is_file():
        raise model_error(model, "not a folder or a regular file", code="not_a_model")
    if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
        raise model_error(model, f"not a checkpoint file (expected {', '.join(SINGLE_FILE_SUFFIXES)})",
                          hint="pass a diffusers pipeline folder or a single-file checkpoint", code="not_a_model")
    return ModelRef("file", str(path.resolve()))


def _check_cached(model: str, revision: str | None) -> None:
    """Offline, a hub id loads only from the cache: its model_index.json must be there."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model, "model_index.json", revision=revision)
    except (OSError, ValueError) as exc:  # an unreadable cache, a revision the cache cannot hold
        raise model_error(model, f"cannot look in the hub cache: {exc}", code="not_cached") from exc
    if isinstance(found, str):
        return
    if found is not None:  # the cache records that the repo has no model_index.json
        raise model_error(model, "not a diffusers pipeline (the cached repo has no model_index.json)",
                          code="not_a_model")
    at = f" at revision {revision}" if revision else ""
    raise model_error(model, f"not in the local cache{at} and offline mode is on (HF_HUB_OFFLINE)",
                      hint=NOT_CACHED_HINT.format(ref=shown(model)) + ", or unset HF_HUB_OFFLINE",
                      code="not_cached")
