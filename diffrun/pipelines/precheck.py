"""Checks that need only the model's pipeline class, run before its weights load.

The class is the one a diffusers folder's model_index.json names (a hub id's, when it is in the local
cache); a single-file checkpoint's class is only known once the file is read, so it is not checked here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from diffrun.errors import UsageError
from diffrun.pipelines import variants
from diffrun.pipelines.calls import pipeline_task
from diffrun.pipelines.models import ModelOptions, Request
from diffrun.pipelines.tasks import check_call, wanted_task


def _model_index(options: ModelOptions) -> dict[str, Any] | None:
    ref = options.model
    path = Path(ref).expanduser()
    index: str | Path | None = None
    if path.is_dir():
        index = path / "model_index.json"
    elif not path.exists() and ref.count("/") == 1:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(ref, "model_index.json", revision=options.revision)
        except ValueError:  # not a valid repo id: load_model says so
            return None
        index = found if isinstance(found, str) else None
    if index is None:
        return None
    try:
        data = json.loads(Path(index).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or broken: load_model reports it
        return None
    return data if isinstance(data, dict) else None


def declared_class(options: ModelOptions) -> type | None:
    """The diffusers pipeline class the model declares, or None where it names none diffrun can import."""
    index = _model_index(options)
    name = index.get("_class_name") if index else None
    if not isinstance(name, str) or not name.isidentifier() or not name.endswith("Pipeline"):
        return None  # custom pipelines name a [module, class] pair: their __call__ is only known after loading
    from diffrun.pipelines.loading import quiet_libraries

    quiet_libraries()  # importing a pipeline module can already make transformers talk (a torchvision fallback)
    return variants.diffusers_class(name)


def precheck(options: ModelOptions, request: Request) -> None:
    """Refuse, before any weights load, arguments that neither the model's class nor any class it could
    switch to for the request's task takes (an unknown --param, say). Where the class or its switch
    cannot be known yet, nothing is refused: the check after loading has the last word."""
    cls = declared_class(options)
    if cls is None:
        return
    base = pipeline_task(cls)
    task = "custom" if base == "custom" else wanted_task(cls, request)
    candidates = [cls] if base in (task, "custom") else variants.named_classes(cls, task)
    problems: list[UsageError] = []
    for candidate in candidates:
        try:
            check_call(candidate, request)
        except UsageError as exc:
            problems.append(exc)
        else:
            return
    if problems:
        raise problems[0]
