"""The Job: one unit of work, built from command-line options or a manifest row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Job fields that map onto pipeline call arguments, and the argument's name in diffusers.
# (`fps` is not one: it sets the written video's frame rate; `--param fps=N` reaches pipelines that take it.)
CALL_ARGUMENTS = {
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "strength": "strength",
    "width": "width",
    "height": "height",
    "frames": "num_frames",
    "num_images": "num_images_per_prompt",
}


@dataclass
class Job:
    id: str = "job"
    prompt: str | None = None
    negative_prompt: str | None = None
    image: list[str] = field(default_factory=list)
    """References for the pipeline's `image` argument (several become a list)."""
    mask: str | None = None
    inputs: dict[str, list[str]] = field(default_factory=dict)
    """Other image arguments of the pipeline's __call__: NAME -> references."""
    params: dict[str, Any] = field(default_factory=dict)
    """Any other call arguments, passed through as given."""
    seeds: list[int] = field(default_factory=list)
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    fps: int | None = None
    """Frame rate of written videos."""
    num_images: int | None = None
    output: str | None = None

    def references(self) -> dict[str, list[str]]:
        """Every image reference of the job, keyed by the pipeline argument it feeds."""
        refs: dict[str, list[str]] = {}
        if self.image:
            refs["image"] = list(self.image)
        if self.mask:
            refs["mask_image"] = [self.mask]
        for name, values in self.inputs.items():
            refs[name] = list(values)
        return refs

    def call_arguments(self) -> dict[str, Any]:
        """The sampling settings as diffusers keyword arguments (unset ones left out), then `params`."""
        args = {name: getattr(self, key) for key, name in CALL_ARGUMENTS.items() if getattr(self, key) is not None}
        args.update(self.params)
        return args

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
