"""The Job: one unit of work, built from command-line options or a manifest row."""

from __future__ import annotations

import math
import re
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


MAX_SEED = 2**64 - 1
"""Seeds are 0 to 2**64-1 (torch's generator range); image i of seed S is drawn with seed S + i."""
MAX_INT = 2**31 - 1
"""Largest steps, width, height, frames, fps or num_images: beyond it no pipeline call can even start."""
DEFAULT_MAX_IMAGES = 1000
"""Outputs one job may ask for (seeds x images per seed); --max-images raises it."""
PER_PROMPT = ("num_images_per_prompt", "num_videos_per_prompt")

_NOT_SETTABLE = re.compile(r"^(generator|output_type|return_dict|callback.*|.*latents|.*_embeds|.*attention_mask)$")
"""Call arguments a JSON value or an image cannot fill: tensors, callables, and what diffrun sets itself."""


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


def images_per_seed(job: Job) -> int:
    """Outputs per seed: `num_images`, else a `num_images_per_prompt`/`num_videos_per_prompt` param, else 1
    (job_problems checks the param is a positive integer; anything else counts as 1 here)."""
    if job.num_images:
        return job.num_images
    for name in PER_PROMPT:
        value = job.params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return 1


def not_settable(name: str) -> bool:
    """True for call arguments that no --param, --input or manifest value may set (tensors, callables, ...)."""
    return bool(_NOT_SETTABLE.match(name))


def _finite(value: Any) -> bool:
    """No NaN or infinity anywhere in a JSON-like value (they cannot be recorded as JSON)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


def job_problems(job: Job, *, max_images: int = DEFAULT_MAX_IMAGES, names: dict[str, str] | None = None) -> list[str]:
    """Every value of `job` that would crash or run away later, as messages (empty when all is well).

    `names` maps a field to how the user wrote it (a flag); a manifest shows field names.
    """
    def name(key: str) -> str:
        return (names or {}).get(key, key)

    problems = []
    for key in ("steps", "width", "height", "frames", "fps", "num_images"):
        value = getattr(job, key)
        if value is not None and not (isinstance(value, int) and 1 <= value <= MAX_INT):
            problems.append(f"{name(key)} must be an integer from 1 to {MAX_INT}, got {value!r}")
    for key in ("guidance", "strength"):
        value = getattr(job, key)
        if value is not None and not math.isfinite(value):
            problems.append(f"{name(key)} must be a finite number, got {value}")
    if job.strength is not None and math.isfinite(job.strength) and not 0.0 <= job.strength <= 1.0:
        problems.append(f"{name('strength')} must be between 0 and 1, got {job.strength}")
    for key in PER_PROMPT:
        value = job.params.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INT):
            problems.append(f"{name('params')} {key} must be an integer from 1 to {MAX_INT}, got {value!r}")
    for key, value in job.params.items():
        if not_settable(key):
            problems.append(f"{name('params')} {key}: cannot be set from the command line or a manifest "
                            "(it takes a tensor or a callable, or diffrun sets it)")
        elif not _finite(value):
            problems.append(f"{name('params')} {key}: NaN and infinity are not allowed")
    for key in job.inputs:
        if not_settable(key):
            problems.append(f"{name('inputs')} {key}: not an image argument")
    given = [key for key in PER_PROMPT if key in job.params]
    if len(given) > 1 or (given and job.num_images is not None):
        problems.append(f"{name('num_images')} and {name('params')} {given[-1]} both set the images per seed: "
                        "give the count once")
    per_seed = images_per_seed(job)
    for seed in job.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            problems.append(f"{name('seeds')} {seed!r} is out of range: seeds are integers from 0 to 2**64-1")
        elif seed + per_seed - 1 > MAX_SEED:
            problems.append(f"{name('seeds')} {seed} with {per_seed} images per seed passes 2**64-1 "
                            f"(image i uses seed + i)")
    if len(job.seeds) * per_seed > max_images:
        problems.append(f"{len(job.seeds)} seeds x {per_seed} images per seed = {len(job.seeds) * per_seed} "
                        f"outputs, more than {max_images} for one job (raise --max-images if you mean it)")
    if job.output is not None and any(ord(c) < 32 or c == "\x7f" for c in job.output):
        problems.append(f"{name('output')} must not contain control characters (NUL, newline, ...)")
    return problems
