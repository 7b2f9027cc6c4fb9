"""Model and runtime options shared by `generate` and `batch`, declared once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffrun.cli.groups import OptionGroup
from diffrun.cli.options import FLAG, RUNTIME, parse_loras

if TYPE_CHECKING:
    from diffrun.pipelines import ModelOptions

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


def model_options(*, model: Model = None, revision: Revision = None, variant: Variant = None, device: Device = "auto",
                  dtype: Dtype = "auto", offload: Offload = "none", vae_tiling: VaeTiling = False,
                  vae_slicing: VaeSlicing = False, attention_slicing: AttentionSlicing = False,
                  compile_: Compile = False, scheduler: Scheduler = None, lora: Lora = None,
                  threads: Threads = None) -> ModelOptions:
    """The runtime options as `pipelines.ModelOptions` (imports no torch; pipelines validates them).

    `model` stays as given (None when no -m): `require_model` resolves it, once the command knows
    whether another source (a recipe's model) fills it in."""
    from diffrun.pipelines import ModelOptions

    return ModelOptions(model=model, revision=revision, variant=variant, device=device, dtype=dtype,  # type: ignore[arg-type]
                        offload=offload, vae_tiling=vae_tiling, vae_slicing=vae_slicing,
                        attention_slicing=attention_slicing, compile=compile_, scheduler=scheduler,
                        loras=parse_loras(lora), threads=threads)


RUNTIME_OPTIONS = OptionGroup.of(model_options)
"""The model and runtime options of every command that loads a model, as one ModelOptions."""


def require_model(runtime: ModelOptions, fallback: str | None = None) -> ModelOptions:
    """`runtime` with its model (else `fallback`) as `model_ref` gives it: UsageError when there is none."""
    return replace(runtime, model=model_ref(runtime.model or fallback))
