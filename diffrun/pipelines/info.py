"""`diffrun env`: library versions, the devices torch sees, and where models come from."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from diffrun.pipelines.reference import offline


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _devices() -> tuple[list[dict[str, Any]], bool, bool]:
    import torch

    devices: list[dict[str, Any]] = [{"name": "cpu", "type": "cpu", "memory_bytes": None}]
    cuda = torch.cuda.is_available()
    if cuda:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            devices.append({"name": f"cuda:{i} ({props.name})", "type": "cuda",
                            "memory_bytes": int(props.total_memory)})
    mps_backend = getattr(torch.backends, "mps", None)
    mps = bool(mps_backend and mps_backend.is_available())
    if mps:
        devices.append({"name": "mps", "type": "mps", "memory_bytes": None})
    return devices, cuda, mps


def environment() -> dict[str, Any]:
    """Versions, devices, the Hugging Face cache folder and whether the hub is offline."""
    from huggingface_hub import constants

    devices, cuda, mps = _devices()
    return {
        "versions": {name: _version(name) for name in ("torch", "diffusers", "transformers", "accelerate")},
        "devices": devices,
        "cuda_available": cuda,
        "mps_available": mps,
        "hf_cache": str(constants.HF_HUB_CACHE),
        "offline": offline(),
    }
