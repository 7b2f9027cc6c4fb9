"""Model and runtime options shared by `generate` and `batch`, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from diffrun.cli.options import FLAG, RUNTIME, parse_loras

Model = Annotated[str | None, typer.Option(
    "--model", "-m", envvar="DIFFRUN_MODEL", metavar="MODEL", rich_help_panel=RUNTIME,
    help="A diffusers pipeline folder, a cached hub id, or a single-file checkpoint.")]
Revision = Annotated[str | None, typer.Option(
    "--revision", envvar="DIFFRUN_REVISION", metavar="REV", rich_help_panel=RUNTIME,
    help="Hub revision (branch, tag or commit).")]
Variant = Annotated[str | None, typer.Option(
    "--variant", envvar="DIFFRUN_VARIANT", metavar="NAME", rich_help_panel=RUNTIME,
    help="Weight variant, e.g. fp16.")]
Device = Annotated[str, typer.Option(
    "--device", envvar="DIFFRUN_DEVICE", metavar="DEVICE", rich_help_panel=RUNTIME,
    help="auto, cuda, cuda:N, mps or cpu (auto: cuda, then mps, then cpu).")]
Dtype = Annotated[str, typer.Option(
    "--dtype", envvar="DIFFRUN_DTYPE", metavar="DTYPE", rich_help_panel=RUNTIME,
    help="auto, fp16, bf16 or fp32 (auto: bf16 where supported, fp16 on GPUs, fp32 on cpu).")]
Offload = Annotated[str, typer.Option(
    "--offload", envvar="DIFFRUN_OFFLOAD", metavar="MODE", rich_help_panel=RUNTIME,
    help="none, model or sequential CPU offload (CUDA only).")]
VaeTiling = Annotated[bool, typer.Option(
    "--vae-tiling", envvar="DIFFRUN_VAE_TILING", metavar=FLAG, rich_help_panel=RUNTIME,
    help="Decode in tiles (large images, less memory).")]
VaeSlicing = Annotated[bool, typer.Option(
    "--vae-slicing", envvar="DIFFRUN_VAE_SLICING", metavar=FLAG, rich_help_panel=RUNTIME,
    help="Decode one image at a time.")]
AttentionSlicing = Annotated[bool, typer.Option(
    "--attention-slicing", envvar="DIFFRUN_ATTENTION_SLICING", metavar=FLAG, rich_help_panel=RUNTIME,
    help="Compute attention in slices.")]
Compile = Annotated[bool, typer.Option(
    "--compile", envvar="DIFFRUN_COMPILE", metavar=FLAG, rich_help_panel=RUNTIME,
    help="torch.compile the denoiser (slow first call, faster after).")]
Scheduler = Annotated[str | None, typer.Option(
    "--scheduler", envvar="DIFFRUN_SCHEDULER", metavar="NAME", rich_help_panel=RUNTIME,
    help="A scheduler class compatible with the pipeline.")]
Lora = Annotated[list[str] | None, typer.Option(
    "--lora", envvar="DIFFRUN_LORA", metavar="REF[:SCALE]", rich_help_panel=RUNTIME,
    help="LoRA weights REF[:SCALE] (repeatable).")]
Threads = Annotated[int | None, typer.Option(
    "--threads", min=1, envvar="DIFFRUN_THREADS", metavar="N", rich_help_panel=RUNTIME, show_default=False,
    help="CPU threads for torch, also with cuda/mps (the CPU still does part of the work) "
         "\\[default: $OMP_NUM_THREADS, else one less than the usable CPUs, at most torch's own choice]; "
         "recorded in the recipe.")]


def model_ref(model: str | None) -> str:
    """A local folder or file as an absolute path (so recipes work from anywhere); hub ids as given."""
    from diffrun.errors import UsageError

    if not model:
        raise UsageError("no model given", hint="pass --model DIR_OR_HUB_ID or set DIFFRUN_MODEL "
                                                "(try: diffrun tiny-model ./tiny && diffrun generate -m ./tiny ...)")
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def model_options(*, model: str | None, revision: str | None, variant: str | None, device: str, dtype: str,
                  offload: str, vae_tiling: bool, vae_slicing: bool, attention_slicing: bool, compile_: bool,
                  scheduler: str | None, lora: list[str] | None, threads: int | None = None):
    """The runtime options as `pipelines.ModelOptions` (imports no torch; pipelines validates them)."""
    from diffrun.pipelines import ModelOptions

    return ModelOptions(model=model_ref(model), revision=revision, variant=variant, device=device, dtype=dtype,
                        offload=offload, vae_tiling=vae_tiling, vae_slicing=vae_slicing,
                        attention_slicing=attention_slicing, compile=compile_, scheduler=scheduler,
                        loras=parse_loras(lora), threads=threads)
