"""Options that describe a job (prompt, inputs, sampling, output), shared by `generate` and `batch`
(where they give every manifest row its defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from diffrun.cli.groups import OptionGroup
from diffrun.cli.options import FLAG, OUTPUT, SAMPLING, parse_inputs, parse_params
from diffrun.errors import UsageError
from diffrun.jobs import DEFAULT_MAX_IMAGES, Job, job_problems
from diffrun.outputs.names import template_fields

INPUTS = "Inputs"
PIPELINE_DEFAULT = "\\[default: pipeline default]"
"""Unset sampling options take the pipeline's own default (its __call__ signature)."""

Prompt = Annotated[str | None, typer.Option("--prompt", "-p", metavar="TEXT", help="What to generate.")]
NegativePrompt = Annotated[str | None, typer.Option("--negative-prompt", "-n", metavar="TEXT", help="What to avoid.")]
Images = Annotated[list[str] | None, typer.Option(
    "--image", "-i", metavar="REF", rich_help_panel=INPUTS,
    help="Input image REF: path, URL, data: URI or - (repeatable).")]
Mask = Annotated[str | None, typer.Option("--mask", metavar="REF", rich_help_panel=INPUTS, help="Inpainting mask REF.")]
Inputs = Annotated[list[str] | None, typer.Option(
    "--input", metavar="NAME=REF", rich_help_panel=INPUTS,
    help="Any other image argument: NAME=REF (repeat NAME for a list).")]
Steps = Annotated[int | None, typer.Option(
    "--steps", min=1, metavar="N", rich_help_panel=SAMPLING, help=f"Denoising steps {PIPELINE_DEFAULT}.")]
Guidance = Annotated[float | None, typer.Option(
    "--guidance", metavar="SCALE", rich_help_panel=SAMPLING, help=f"Guidance scale {PIPELINE_DEFAULT}.")]
Strength = Annotated[float | None, typer.Option(
    "--strength", min=0.0, max=1.0, metavar="FRACTION", rich_help_panel=SAMPLING,
    help=f"How much image-to-image changes the input {PIPELINE_DEFAULT}.")]
NumImages = Annotated[int | None, typer.Option("--num-images", min=1, metavar="N", rich_help_panel=SAMPLING,
                                               help="Images per seed \\[default: 1].")]
Width = Annotated[int | None, typer.Option(
    "--width", "-W", min=8, metavar="PIXELS", rich_help_panel=SAMPLING,
    help="Output width (image-to-image: the input is cropped and resized to it) "
         "\\[default: pipeline default; image-to-image: the input's].")]
Height = Annotated[int | None, typer.Option(
    "--height", "-H", min=8, metavar="PIXELS", rich_help_panel=SAMPLING,
    help="Output height \\[default: pipeline default; image-to-image: the input's].")]
Frames = Annotated[int | None, typer.Option("--frames", min=1, metavar="N", rich_help_panel=SAMPLING,
                                            help=f"Video frames {PIPELINE_DEFAULT}.")]
Fps = Annotated[int | None, typer.Option("--fps", min=1, metavar="N", rich_help_panel=OUTPUT,
                                         help="Frame rate of written videos \\[default: the pipeline's fps, else 8].")]
Params = Annotated[list[str] | None, typer.Option(
    "--param", metavar="KEY=VALUE", rich_help_panel=SAMPLING, help="Any other call argument KEY=VALUE (JSON value).")]
MaxImages = Annotated[int, typer.Option(
    "--max-images", min=1, envvar="DIFFRUN_MAX_IMAGES", metavar="N", rich_help_panel=SAMPLING,
    help="Most outputs one job may ask for: seeds x images per seed.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", metavar=FLAG, rich_help_panel=OUTPUT,
                                         help="Replace existing files.")]
Quality = Annotated[int | None, typer.Option("--quality", min=1, max=100, metavar="N", rich_help_panel=OUTPUT,
                                             help="JPEG/WebP quality.")]
Sidecar = Annotated[bool, typer.Option("--sidecar", metavar=FLAG, rich_help_panel=OUTPUT,
                                       help="Also write <output>.json with the recipe.")]


def job_options(*, prompt: Prompt = None, negative_prompt: NegativePrompt = None, image: Images = None,
                mask: Mask = None, input_: Inputs = None, steps: Steps = None, guidance: Guidance = None,
                strength: Strength = None, num_images: NumImages = None, width: Width = None, height: Height = None,
                frames: Frames = None, fps: Fps = None, param: Params = None) -> Job:
    """The Job the command line describes, less its seeds and output (whose flags differ by command;
    for batch: every row's defaults)."""
    return Job(
        prompt=prompt, negative_prompt=negative_prompt, image=list(image or []), mask=mask,
        inputs=parse_inputs(input_), params=parse_params(param), steps=steps, guidance=guidance, strength=strength,
        width=width, height=height, frames=frames, fps=fps, num_images=num_images,
    )


JOB_OPTIONS = OptionGroup.of(job_options)
"""What a job is made of (prompt, inputs, sampling), as one Job."""


@dataclass(frozen=True)
class OutputFiles:
    """How outputs are written: replace existing files, JPEG/WebP quality, a .json sidecar."""

    overwrite: bool = False
    quality: int | None = None
    sidecar: bool = False


def output_files(*, overwrite: Overwrite = False, quality: Quality = None, sidecar: Sidecar = False) -> OutputFiles:
    return OutputFiles(overwrite=overwrite, quality=quality, sidecar=sidecar)


OUTPUT_FILES = OptionGroup.of(output_files)


FLAGS = {"seeds": "--seed", "steps": "--steps", "guidance": "--guidance", "strength": "--strength",
         "width": "--width", "height": "--height", "frames": "--frames", "fps": "--fps",
         "num_images": "--num-images", "params": "--param", "inputs": "--input", "output": "--output"}


def check_job(job: Job, max_images: int = DEFAULT_MAX_IMAGES) -> Job:
    """`job`, or UsageError (exit 2) for its first value that would crash or run away later."""
    problems = job_problems(job, max_images=max_images, names=FLAGS)
    if problems:
        raise UsageError(problems[0])
    if job.output not in (None, "-"):
        template_fields(job.output)  # only bare fields: `{seed:>2000000000}` would build a 2 GB name
    return job
