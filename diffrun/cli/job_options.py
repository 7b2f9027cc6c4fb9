"""Options that describe a job (prompt, inputs, sampling, output), shared by `generate` and `batch`
(where they give every manifest row its defaults)."""

from __future__ import annotations

from typing import Annotated

import typer

from diffrun.cli.options import OUTPUT, SAMPLING, parse_inputs, parse_params
from diffrun.jobs import Job

INPUTS = "Inputs"

Prompt = Annotated[str | None, typer.Option("--prompt", "-p", help="What to generate.")]
NegativePrompt = Annotated[str | None, typer.Option("--negative-prompt", "-n", help="What to avoid.")]
Images = Annotated[list[str] | None, typer.Option(
    "--image", "-i", rich_help_panel=INPUTS, help="Input image REF: path, URL, data: URI or - (repeatable).")]
Mask = Annotated[str | None, typer.Option("--mask", rich_help_panel=INPUTS, help="Inpainting mask REF.")]
Inputs = Annotated[list[str] | None, typer.Option(
    "--input", rich_help_panel=INPUTS, help="Any other image argument: NAME=REF (repeat NAME for a list).")]
Steps = Annotated[int | None, typer.Option("--steps", min=1, rich_help_panel=SAMPLING, help="Denoising steps.")]
Guidance = Annotated[float | None, typer.Option("--guidance", rich_help_panel=SAMPLING, help="Guidance scale.")]
Strength = Annotated[float | None, typer.Option(
    "--strength", min=0.0, max=1.0, rich_help_panel=SAMPLING, help="How much image-to-image changes the input.")]
NumImages = Annotated[int | None, typer.Option("--num-images", min=1, rich_help_panel=SAMPLING,
                                               help="Images per seed.")]
Width = Annotated[int | None, typer.Option(
    "--width", "-W", min=8, rich_help_panel=SAMPLING,
    help="Output width (image-to-image: the input is cropped and resized to it).")]
Height = Annotated[int | None, typer.Option("--height", "-H", min=8, rich_help_panel=SAMPLING, help="Output height.")]
Frames = Annotated[int | None, typer.Option("--frames", min=1, rich_help_panel=SAMPLING, help="Video frames.")]
Fps = Annotated[int | None, typer.Option("--fps", min=1, rich_help_panel=OUTPUT, help="Frame rate of written videos.")]
Params = Annotated[list[str] | None, typer.Option(
    "--param", rich_help_panel=SAMPLING, help="Any other call argument KEY=VALUE (JSON value).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", rich_help_panel=OUTPUT, help="Replace existing files.")]
Quality = Annotated[int | None, typer.Option("--quality", min=1, max=100, rich_help_panel=OUTPUT,
                                             help="JPEG/WebP quality.")]
Sidecar = Annotated[bool, typer.Option("--sidecar", rich_help_panel=OUTPUT,
                                       help="Also write <output>.json with the recipe.")]


def job_from_options(*, prompt: str | None, negative_prompt: str | None, image: list[str] | None, mask: str | None,
                     input_: list[str] | None, param: list[str] | None, seed: list[int] | None, steps: int | None,
                     guidance: float | None, strength: float | None, width: int | None, height: int | None,
                     frames: int | None, fps: int | None, num_images: int | None, output: str | None) -> Job:
    """The Job the command line describes (for batch: every row's defaults)."""
    return Job(
        prompt=prompt, negative_prompt=negative_prompt, image=list(image or []), mask=mask,
        inputs=parse_inputs(input_), params=parse_params(param), seeds=list(seed or []),
        steps=steps, guidance=guidance, strength=strength, width=width, height=height, frames=frames, fps=fps,
        num_images=num_images, output=output,
    )
