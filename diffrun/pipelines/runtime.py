"""Device, dtype and the optional set-up steps a loaded pipeline goes through (offload, scheduler, LoRA)."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

from diffrun.errors import ModelError, UsageError

DTYPES = ("fp32", "fp16", "bf16")
OFFLOADS = ("none", "model", "sequential")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(device: str) -> str:
    """'auto' -> cuda, then mps, then cpu; an explicit device must be one torch can use."""
    import torch

    device = (device or "auto").strip().lower()
    if not _DEVICE.match(device):
        raise UsageError(f"unknown --device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: torch sees no CUDA device", hint="use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps" and not has_mps:
        raise UsageError("--device mps: MPS is not available", hint="use --device cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> str:
    """'auto' -> bf16 on GPUs that support it, else fp16 on GPUs and mps, fp32 on cpu."""
    import torch

    dtype = (dtype or "auto").strip().lower()
    if dtype == "auto":
        if device.startswith("cuda"):
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp16" if device == "mps" else "fp32"
    if dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {dtype!r}; use auto, {', '.join(DTYPES)}")
    return dtype


def torch_dtype(dtype: str) -> Any:
    import torch

    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]


def check_offload(offload: str, device: str) -> str:
    """Offload needs a CUDA device: diffusers moves each model onto it when it is used."""
    offload = (offload or "none").strip().lower()
    if offload not in OFFLOADS:
        raise UsageError(f"unknown --offload {offload!r}; use {', '.join(OFFLOADS)}")
    if offload != "none" and not device.startswith("cuda"):
        raise UsageError(f"--offload {offload} needs a CUDA device (device is {device})",
                         hint="leave out --offload, or use --device cuda")
    return offload


def place(pipe: Any, device: str, offload: str) -> None:
    """Move the pipeline to its device, or hand it to accelerate's offload hooks."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)


def apply_memory_options(pipe: Any, vae_tiling: bool, vae_slicing: bool, attention_slicing: bool) -> None:
    """VAE tiling/slicing on the VAE itself, attention slicing on the pipeline."""
    vae = getattr(pipe, "vae", None)
    for wanted, method, option in ((vae_tiling, "enable_tiling", "--vae-tiling"),
                                   (vae_slicing, "enable_slicing", "--vae-slicing")):
        if not wanted:
            continue
        if vae is None or not hasattr(vae, method):
            raise UsageError(f"{option}: {type(pipe).__name__} has no VAE that supports it")
        getattr(vae, method)()
    if attention_slicing:
        if not hasattr(pipe, "enable_attention_slicing"):
            raise UsageError(f"--attention-slicing: {type(pipe).__name__} does not support it")
        pipe.enable_attention_slicing()


def compatible_schedulers(pipe: Any) -> list[str]:
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        return []
    return sorted({cls.__name__ for cls in getattr(scheduler, "compatibles", [])} | {type(scheduler).__name__})


def set_scheduler(pipe: Any, name: str) -> None:
    """Swap in a compatible scheduler class, configured from the current one."""
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise UsageError(f"--scheduler: {type(pipe).__name__} has no scheduler")
    classes = {cls.__name__: cls for cls in getattr(scheduler, "compatibles", [])}
    classes.setdefault(type(scheduler).__name__, type(scheduler))
    if name not in classes:
        raise UsageError(f"unknown --scheduler {name!r} for {type(pipe).__name__}; compatible: "
                         + ", ".join(sorted(classes)))
    pipe.scheduler = classes[name].from_config(scheduler.config)


def load_loras(pipe: Any, loras: list[tuple[str, float]]) -> None:
    """load_lora_weights for each (reference, scale), then set_adapters with their scales."""
    if not loras:
        return
    if not hasattr(pipe, "load_lora_weights"):
        raise UsageError(f"--lora: {type(pipe).__name__} does not support LoRA weights")
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise UsageError("--lora needs the peft package", hint="pip install 'diffrun[lora]'")
    names = []
    for i, (ref, _scale) in enumerate(loras):
        name = f"lora{i}"
        path = Path(ref).expanduser()
        try:
            if path.is_file():
                pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            else:
                pipe.load_lora_weights(ref, adapter_name=name)
        except Exception as exc:  # diffusers, peft and the hub raise many types; all mean "cannot load"
            raise ModelError(f"cannot load LoRA {ref!r}: {first_line(exc)}") from exc
        names.append(name)
    try:
        pipe.set_adapters(names, adapter_weights=[float(scale) for _, scale in loras])
    except Exception as exc:  # same: one clear line whatever went wrong
        raise ModelError(f"cannot apply LoRA weights: {first_line(exc)}") from exc


def compile_denoiser(pipe: Any) -> None:
    """torch.compile the UNet or transformer in place (`Module.compile`): the module keeps its class, so
    `from_pipe` (a task switch: pipelines/variants.py) takes it as the component it is, compiled."""
    for attr in ("unet", "transformer"):
        module = getattr(pipe, attr, None)
        if module is not None:
            module.compile()
            return
    raise UsageError(f"--compile: {type(pipe).__name__} has no unet or transformer to compile")


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA OOM type, or the RuntimeError MPS, the CPU allocator and older torch raise for it."""
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    text = str(exc) if isinstance(exc, RuntimeError) else ""
    return isinstance(exc, oom_types) or "out of memory" in text or "can't allocate memory" in text


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: its first non-empty line, else its type."""
    for line in str(exc).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return type(exc).__name__


# -- CPU threads -------------------------------------------------------------------------------------

_THREADS: dict[str, int] = {}
"""What apply_threads saw and did in this process: torch's own default, the count set."""


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, cut to a cgroup v2 CPU quota where one is set."""
    import os

    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def default_threads(torch_default: int, cpus: int | None = None) -> int:
    """diffrun's choice: one CPU left to the loader, writer and main Python threads, never more than
    torch's own choice. On 2 cores that is 1, which bench/threads.py measured faster than torch's 2
    (README); where CPUs are plenty it is torch's own count."""
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, min(torch_default, cpus - 1))


def _env_threads() -> int | None:
    """OMP_NUM_THREADS, when the user set it: torch already obeys it, so it stands as the default."""
    import os

    try:
        value = int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0])
    except ValueError:
        return None
    return value if value > 0 else None


def apply_threads(threads: int | None) -> int:
    """Set torch's CPU threads (`threads`, else OMP_NUM_THREADS, else `default_threads`); return the count.

    Call before torch does parallel work: intra-op threads may change later, inter-op threads only
    once per process (set here to the same count the first time)."""
    import torch

    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1, not {threads}")
    torch_default = _THREADS.setdefault("torch_default", torch.get_num_threads())
    count = threads or _env_threads() or default_threads(torch_default)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    if "interop" not in _THREADS:
        _THREADS["interop"] = count
        with contextlib.suppress(RuntimeError):  # inter-op work already started here: it keeps its pool
            torch.set_num_interop_threads(count)
    _THREADS["threads"] = count
    return count


def cpu_threads() -> int:
    """The CPU thread count torch uses now (what the recipe records)."""
    import torch

    return torch.get_num_threads()
