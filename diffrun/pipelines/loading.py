"""Load a model reference (folder, hub id or single file) into a configured DiffusionPipeline."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffrun.errors import DiffrunError, ModelError, OutOfMemoryError
from diffrun.pipelines import runtime
from diffrun.pipelines.models import LoadedModel, ModelOptions

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def quiet_libraries() -> None:
    """diffrun draws its own progress: silence diffusers' and transformers' bars and chatter."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def folder_fingerprint(folder: Path) -> str | None:
    """sha256 of model_index.json plus every file's relative name and size: cheap, no weight hashing."""
    index = folder / "model_index.json"
    if not index.is_file():
        return None
    digest = hashlib.sha256(index.read_bytes())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith("."):
            continue
        digest.update(f"\n{rel}\t{path.stat().st_size}".encode())
    return digest.hexdigest()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def dtype_kwarg() -> str:
    """Newer diffusers renamed `torch_dtype` to `dtype` (and warn about the old name)."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


def _from_folder_or_hub(ref: str, options: ModelOptions, dtype: Any) -> Any:
    from diffusers import DiffusionPipeline

    kwargs: dict[str, Any] = {dtype_kwarg(): dtype}
    if options.revision:
        kwargs["revision"] = options.revision
    if options.variant:
        kwargs["variant"] = options.variant
    return DiffusionPipeline.from_pretrained(ref, **kwargs)


def _from_single_file(path: Path, options: ModelOptions, dtype: Any) -> Any:
    """Find the pipeline class the checkpoint belongs to (its default hub config), then load it."""
    import diffusers
    from diffusers import DiffusionPipeline
    from diffusers.loaders.single_file_utils import fetch_diffusers_config, load_single_file_checkpoint

    checkpoint = load_single_file_checkpoint(str(path), local_files_only=_offline())
    config_repo = fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"]
    del checkpoint
    class_name = DiffusionPipeline.load_config(config_repo, local_files_only=_offline())["_class_name"]
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise ModelError(f"cannot load model '{path}': {class_name} cannot load single-file checkpoints")
    kwargs = {dtype_kwarg(): dtype}
    return pipeline_class.from_single_file(str(path), config=config_repo, local_files_only=_offline(), **kwargs)


def _load_pipe(options: ModelOptions, dtype: Any) -> tuple[Any, Path | None]:
    """The bare pipeline and, for a local folder, its path; every failure becomes one ModelError line."""
    ref = options.model
    path = Path(ref).expanduser()
    try:
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise ModelError(f"cannot load model '{ref}': model_index.json missing",
                                 hint="point at a diffusers folder (with model_index.json) or a checkpoint file")
            return _from_folder_or_hub(str(path), options, dtype), path
        if path.is_file():
            if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
                raise ModelError(f"cannot load model '{ref}': not a checkpoint file "
                                 f"({', '.join(SINGLE_FILE_SUFFIXES)})")
            return _from_single_file(path, options, dtype), None
        if not _HUB_ID.match(ref):
            raise ModelError(f"cannot load model '{ref}': not a folder, file or cached hub id")
        return _from_folder_or_hub(ref, options, dtype), None
    except DiffrunError:
        raise
    except Exception as exc:  # diffusers/hub/OS errors of many types: all mean the model cannot load
        reason = runtime.first_line(exc)
        if not path.exists() and _offline() and ("cache" in str(exc).lower() or isinstance(exc, OSError)):
            raise ModelError(f"cannot load model '{ref}': not a folder, file or cached hub id",
                             hint="HF_HUB_OFFLINE is set: only models already in the cache load") from exc
        raise ModelError(f"cannot load model '{ref}': {reason}") from exc


def load_model(options: ModelOptions, on_progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load and set up the pipeline `options` describe; failures raise ModelError/UsageError."""
    say = on_progress or (lambda _message: None)
    start = time.perf_counter()
    runtime.apply_threads(options.threads)  # before torch does any parallel work
    device = runtime.resolve_device(options.device)
    dtype = runtime.resolve_dtype(options.dtype, device)
    offload = runtime.check_offload(options.offload, device)
    quiet_libraries()
    say(f"loading {options.model}")
    pipe, folder = _load_pipe(options, runtime.torch_dtype(dtype))
    pipe.set_progress_bar_config(disable=True)
    if options.scheduler:
        runtime.set_scheduler(pipe, options.scheduler)
    if options.loras:
        say(f"loading {len(options.loras)} LoRA(s)")
        runtime.load_loras(pipe, options.loras)
    say(f"moving to {device} ({dtype})" + (f", offload {offload}" if offload != "none" else ""))
    try:
        runtime.place(pipe, device, offload)
    except Exception as exc:  # torch raises RuntimeError/OOM/ValueError for a device it cannot use
        if runtime.is_out_of_memory(exc):
            raise OutOfMemoryError(f"out of memory moving model '{options.model}' to {device}",
                                   hint="try --offload model (or sequential), or --dtype fp16") from exc
        raise ModelError(f"cannot move model '{options.model}' to {device}: {runtime.first_line(exc)}") from exc
    runtime.apply_memory_options(pipe, options.vae_tiling, options.vae_slicing, options.attention_slicing)
    if options.compile:
        say("compiling")
        runtime.compile_denoiser(pipe)
    scheduler = getattr(pipe, "scheduler", None)
    info = {
        "model": options.model,
        "revision": options.revision,
        "variant": options.variant,
        "folder_sha256": folder_fingerprint(folder) if folder else None,
        "pipeline": type(pipe).__name__,
        "scheduler": type(scheduler).__name__ if scheduler is not None else None,
        "loras": [[ref, float(scale)] for ref, scale in options.loras],
    }
    json.dumps(info)  # the recipe writes it: fail here, not there, if something is not JSON-able
    return LoadedModel(pipe=pipe, options=options, device=device, dtype=dtype, info=info,
                       load_seconds=time.perf_counter() - start)
