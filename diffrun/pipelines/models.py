"""Plain data passed in and out of `diffrun.pipelines`: no torch here, so importing it is cheap."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelOptions:
    """How to load a model and set it up; every field maps onto one command-line option."""

    model: str
    """Local folder, hub id, or single-file checkpoint (.safetensors/.ckpt)."""
    revision: str | None = None
    variant: str | None = None
    device: str = "auto"
    """auto|cpu|cuda|cuda:N|mps; auto = cuda, then mps, then cpu."""
    dtype: str = "auto"
    """auto|fp16|bf16|fp32; auto = bf16 on GPUs that support it, else fp16 on GPUs, fp32 on cpu."""
    offload: str = "none"
    """none|model|sequential; only with cuda."""
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_slicing: bool = False
    compile: bool = False
    scheduler: str | None = None
    """A class name from pipe.scheduler.compatibles, e.g. "EulerDiscreteScheduler"."""
    loras: list[tuple[str, float]] = field(default_factory=list)
    """(reference, scale) pairs."""
    threads: int | None = None
    """torch CPU threads; None: OMP_NUM_THREADS if set, else runtime.default_threads (set on every device)."""


@dataclass
class LoadedModel:
    """A loaded pipeline, the options it was loaded with, and what the recipe records about it."""

    pipe: Any
    options: ModelOptions
    device: str
    dtype: str
    info: dict[str, Any]
    load_seconds: float
    pipes: dict[str, Any] = field(default_factory=dict, repr=False)
    """Pipelines switched to with from_pipe, sharing `pipe`'s weights, keyed by task (None: none fits)."""
    refused: dict[str, list[str]] = field(default_factory=dict, repr=False)
    """Why each candidate class was refused, for the tasks no pipeline fits."""


@dataclass
class Request:
    """One job's worth of pipeline inputs, ready for `run`."""

    prompt: str | None
    negative_prompt: str | None
    images: dict[str, Any]
    """Pipeline argument name -> PIL image or list of PIL images."""
    args: dict[str, Any]
    """diffusers call keyword arguments, already named as diffusers names them."""
    seed: int


@dataclass
class Output:
    """What one request produced."""

    images: list[Any]
    videos: list[list[Any]]
    task: str
    pipeline: str
    call_args: dict[str, Any]
    input_arguments: dict[str, str] = field(default_factory=dict)
    """Input name -> the __call__ argument it fed (a ControlNet text-to-image class takes `control_image`
    as `image`), for the recipe."""
    checks: list[dict[str, Any]] = field(default_factory=list)
    """Failed output checks (pipelines/checks.py), `index` counting this output's images or videos."""
