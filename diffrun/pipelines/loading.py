"""Load a model reference (folder, hub id or single file) into a configured DiffusionPipeline."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from diffrun.errors import DiffrunError, OutOfMemoryError
from diffrun.pipelines import runtime
from diffrun.pipelines.models import LoadedModel, ModelOptions
from diffrun.pipelines.reference import (
    NOT_CACHED_HINT,
    ModelRef,
    check_model_ref,
    model_error,
    offline,
    shown,
)

# httpx and requests name their network failures these ways (neither is imported to test for them).
_NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "NetworkError",
                   "ConnectionError", "Timeout", "ProxyError"}
_DIFFUSERS_PREFIX = re.compile(r"^Cannot load model \S+: ")


def quiet_libraries() -> None:
    """diffrun draws its own progress: silence diffusers' and transformers' bars and chatter, and the
    hub's warnings (its failures become diffrun's one-line errors); the hub's download bars stay."""
    import diffusers
    import huggingface_hub
    import transformers

    huggingface_hub.utils.logging.set_verbosity_error()

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

    checkpoint = load_single_file_checkpoint(str(path), local_files_only=offline())
    config_repo = fetch_diffusers_config(checkpoint)["pretrained_model_name_or_path"]
    del checkpoint
    try:
        class_name = DiffusionPipeline.load_config(config_repo, local_files_only=offline())["_class_name"]
    except Exception as exc:  # the hub's many error types: the config, not the file, is what is missing
        failure = _hub_reason(exc, None)
        if failure is None:
            raise
        reason, code, _hint = failure
        raise model_error(path, f"needs the pipeline config {config_repo}: {reason}", code=code,
                          hint=NOT_CACHED_HINT.format(ref=shown(config_repo))) from exc
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None or not hasattr(pipeline_class, "from_single_file"):
        raise model_error(path, f"{class_name} cannot load single-file checkpoints", code="unsupported")
    kwargs = {dtype_kwarg(): dtype}
    return pipeline_class.from_single_file(str(path), config=config_repo, local_files_only=offline(), **kwargs)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and every cause or context under it (diffusers wraps the hub's errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_network_error(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(exc).__mro__)


def _hub_reason(exc: BaseException, revision: str | None) -> tuple[str, str, str | None] | None:
    """(reason, code, hint) for a failure of the hub or its cache under `exc`; None if it is not one."""
    from huggingface_hub import errors as hub

    chain = list(_chain(exc))
    at = f" at revision {revision}" if revision else ""
    if any(isinstance(e, hub.OfflineModeIsEnabled) for e in chain) or (
            offline() and any(isinstance(e, hub.LocalEntryNotFoundError) for e in chain)):
        return f"not in the local cache{at} and offline mode is on (HF_HUB_OFFLINE)", "not_cached", None
    for e in chain:
        if isinstance(e, hub.GatedRepoError):
            return "a gated repo on the hub: accept its terms on its page, then log in (hf auth login)", \
                "hub_gated", None
        if isinstance(e, hub.RepositoryNotFoundError):
            return "not found on the hub (a private repo needs a login: hf auth login)", "hub_not_found", None
        if isinstance(e, hub.RevisionNotFoundError):
            return f"revision {revision or 'main'} not found on the hub", "hub_revision_not_found", None
        if isinstance(e, hub.HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", None)
            return f"the hub answered HTTP {status or '?'}", "hub_http_status", None
    if any(_is_network_error(e) or isinstance(e, hub.LocalEntryNotFoundError) for e in chain):
        return (f"not in the local cache{at} and the hub is unreachable", "hub_unreachable",
                "check the network (or HF_ENDPOINT)")
    return None


def _load_pipe(ref: ModelRef, options: ModelOptions, dtype: Any) -> Any:
    """The bare pipeline; every failure becomes one `<model>: <reason>` ModelError."""
    try:
        if ref.kind == "file":
            return _from_single_file(Path(ref.ref), options, dtype)
        return _from_folder_or_hub(ref.ref, options, dtype)
    except DiffrunError:
        raise
    except Exception as exc:  # diffusers/hub/OS errors of many types: all mean the model cannot load
        failure = _hub_reason(exc, options.revision) if ref.kind == "hub" else None
        if failure is not None:
            reason, code, extra = failure
            hint = NOT_CACHED_HINT.format(ref=shown(ref.ref)) if code in ("not_cached", "hub_unreachable") else None
            if extra:
                hint = f"{hint}; {extra}" if hint else extra
            raise model_error(ref.ref, reason, code=code, hint=hint) from exc
        reason = _DIFFUSERS_PREFIX.sub("", runtime.first_line(exc))
        if ref.kind == "hub" and offline() and isinstance(exc, OSError):
            # model_index.json is cached (the reference check saw it) but some other file is not
            raise model_error(ref.ref, f"not fully in the local cache and offline mode is on ({reason})",
                              hint=NOT_CACHED_HINT.format(ref=shown(ref.ref)), code="not_cached") from exc
        raise model_error(ref.ref, reason, code="load_failed") from exc


def load_model(options: ModelOptions, on_progress: Callable[[str], None] | None = None) -> LoadedModel:
    """Load and set up the pipeline `options` describe; failures raise ModelError/UsageError."""
    say = on_progress or (lambda _message: None)
    start = time.perf_counter()
    ref = check_model_ref(options.model, options.revision)  # before torch: a bad reference fails at once
    runtime.apply_threads(options.threads)  # before torch does any parallel work
    device = runtime.resolve_device(options.device)
    dtype = runtime.resolve_dtype(options.dtype, device)
    offload = runtime.check_offload(options.offload, device)
    quiet_libraries()
    say(f"loading {options.model}")
    pipe = _load_pipe(ref, options, runtime.torch_dtype(dtype))
    folder = Path(ref.ref) if ref.kind == "folder" else None
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
            raise OutOfMemoryError(f"{shown(options.model)}: out of memory moving it to {device}",
                                   hint="try --offload model (or sequential), or --dtype fp16") from exc
        raise model_error(options.model, f"cannot move it to {device}: {runtime.first_line(exc)}",
                          code="device") from exc
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
