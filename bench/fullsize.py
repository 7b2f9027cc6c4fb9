"""Full-size Stable Diffusion 1.5 and SDXL pipelines with seeded random weights, built from configs written here.

Nothing is downloaded: the architectures are the published ones (SD 1.5: UNet ~860M parameters, CLIP
ViT-L text encoder, VAE; SDXL: UNet ~2.6B, CLIP ViT-L and OpenCLIP ViT-bigG text encoders, VAE), the
tokenizers are diffrun's byte-level CLIP vocabulary (diffrun/pipelines/tiny.py), and every weight is
random, seeded. Each model is saved as a normal diffusers folder of fp16 (or bf16) safetensors, so
`diffrun generate -m FOLDER` loads it like a downloaded one. The pictures are noise; the sizes, the
kernels and the memory are the real ones.

`--scale tiny` builds the same architectures (same blocks, depths, heads and attention layout) with
every width shrunk, so the code paths can run on a CPU in seconds.

    python bench/fullsize.py DIR --kind sd15 [--scale full|tiny] [--dtype fp16|bf16|fp32] [--device cuda]
    python bench/fullsize.py --count          # parameter counts of the full-size configs, on the meta device
    python bench/fullsize.py DIR --lora FILE  # a random LoRA for DIR's UNet (diffusers/peft safetensors)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffrun.pipelines.tiny import tiny_vocab  # noqa: E402  (cheap: no torch)

KINDS = ("sd15", "sdxl")
SCALES = ("full", "tiny")
DTYPES = ("fp16", "bf16", "fp32")
CLIP_VOCAB = 49408
"""The real CLIP vocabulary size: full-size text encoders keep their real embedding tables."""

# -- configs -------------------------------------------------------------------------------------
# Full sizes are those of the published configs (runwayml/stable-diffusion-v1-5,
# stabilityai/stable-diffusion-xl-base-1.0). Tiny keeps every block type, depth, head count and
# transformer depth and divides the widths, so the same code runs, only smaller.


def unet_config(kind: str, scale: str = "full") -> dict[str, Any]:
    """UNet2DConditionModel keyword arguments."""
    full = scale == "full"
    if kind == "sd15":
        return {
            "sample_size": 64 if full else 8,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280, 1280) if full else (16, 32, 64, 64),
            "layers_per_block": 2,
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                 "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": text_config("clip-l", scale)["hidden_size"],
            "attention_head_dim": 8,  # diffusers' legacy name: SD 1.5 has 8 heads per attention
            "norm_num_groups": 32 if full else 8,
        }
    if kind == "sdxl":
        pooled = text_config("bigg", scale)["projection_dim"]
        time_dim = 256 if full else 8
        return {
            "sample_size": 128 if full else 8,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": (320, 640, 1280) if full else (20, 40, 80),
            "layers_per_block": 2,
            "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            "transformer_layers_per_block": (1, 2, 10),
            "attention_head_dim": (5, 10, 20),  # heads, as above
            "cross_attention_dim": text_config("clip-l", scale)["hidden_size"] + text_config("bigg", scale)[
                "hidden_size"],
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": time_dim,
            "projection_class_embeddings_input_dim": pooled + 6 * time_dim,
            "norm_num_groups": 32 if full else 4,
        }
    raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


def vae_config(kind: str, scale: str = "full") -> dict[str, Any]:
    """AutoencoderKL keyword arguments (SD 1.5 and SDXL share the architecture, not the scaling)."""
    full = scale == "full"
    config: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "block_out_channels": (128, 256, 512, 512) if full else (16, 32, 64, 64),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 2,
        "norm_num_groups": 32 if full else 8,
        "sample_size": (512 if kind == "sd15" else 1024) if full else 32,
    }
    if kind == "sdxl":
        config.update(scaling_factor=0.13025, force_upcast=True)
    return config


def text_config(name: str, scale: str = "full") -> dict[str, Any]:
    """CLIPTextConfig keyword arguments: `clip-l` (CLIP ViT-L/14) or `bigg` (OpenCLIP ViT-bigG/14)."""
    full = scale == "full"
    vocab = tiny_vocab()
    common = {
        "vocab_size": CLIP_VOCAB if full else len(vocab),
        "max_position_embeddings": 77,
        "layer_norm_eps": 1e-05,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    if name == "clip-l":
        return {**common, "hidden_size": 768 if full else 48, "intermediate_size": 3072 if full else 192,
                "num_attention_heads": 12, "num_hidden_layers": 12, "projection_dim": 768 if full else 48,
                "hidden_act": "quick_gelu"}
    if name == "bigg":
        return {**common, "hidden_size": 1280 if full else 80, "intermediate_size": 5120 if full else 320,
                "num_attention_heads": 20, "num_hidden_layers": 32, "projection_dim": 1280 if full else 80,
                "hidden_act": "gelu"}
    raise ValueError(f"unknown text encoder {name!r}")


def scheduler(kind: str) -> Any:
    """DDIM for SD 1.5 and Euler for SDXL, with their models' beta schedules: one UNet call per step."""
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "steps_offset": 1}
    if kind == "sd15":
        return DDIMScheduler(**betas, clip_sample=False, set_alpha_to_one=False)
    return EulerDiscreteScheduler(**betas, timestep_spacing="leading", interpolation_type="linear")


def tokenizer(pad: str | None = None) -> Any:
    """The byte-level CLIP tokenizer; SDXL's second one pads with "!" as OpenCLIP's does."""
    from transformers import CLIPTokenizer

    kwargs = {"pad_token": pad} if pad else {}
    return CLIPTokenizer(vocab=tiny_vocab(), merges=[], model_max_length=77, **kwargs)


# -- building ------------------------------------------------------------------------------------


def _components(kind: str, scale: str, seed: int) -> dict[str, Any]:
    """The pipeline's modules, each seeded on its own so one component's weights never depend on another's."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    parts: dict[str, Any] = {"unet": UNet2DConditionModel(**unet_config(kind, scale))}
    torch.manual_seed(seed + 1)
    parts["vae"] = AutoencoderKL(**vae_config(kind, scale))
    torch.manual_seed(seed + 2)
    parts["text_encoder"] = CLIPTextModel(CLIPTextConfig(**text_config("clip-l", scale)))
    if kind == "sdxl":
        torch.manual_seed(seed + 3)
        parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**text_config("bigg", scale)))
    return parts


def build_pipeline(kind: str, scale: str = "full", seed: int = 0, device: str = "cpu") -> Any:
    """A StableDiffusionPipeline (sd15) or StableDiffusionXLPipeline (sdxl) with random weights.

    The weights are initialised on `device` (on a GPU the random initialisation of billions of
    parameters runs there, not on the CPU); the same seed gives the same weights on the same kind of device.
    """
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if kind not in KINDS or scale not in SCALES:
        raise ValueError(f"kind must be one of {KINDS}, scale one of {SCALES}")
    with torch.device(device) if device != "cpu" else nullcontext():
        parts = _components(kind, scale, seed)
    if kind == "sd15":
        return StableDiffusionPipeline(**parts, scheduler=scheduler(kind), tokenizer=tokenizer(),
                                       safety_checker=None, feature_extractor=None, image_encoder=None,
                                       requires_safety_checker=False)
    return StableDiffusionXLPipeline(**parts, scheduler=scheduler(kind), tokenizer=tokenizer(),
                                     tokenizer_2=tokenizer(pad="!"), image_encoder=None, feature_extractor=None,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)


def save_model(directory: Path | str, kind: str, scale: str = "full", dtype: str = "fp16", seed: int = 0,
               device: str = "cpu") -> Path:
    """Build `kind` and save it to `directory` as a diffusers folder of `dtype` safetensors; return the path."""
    import torch

    from diffrun.pipelines.loading import quiet_libraries

    quiet_libraries()
    path = Path(directory)
    pipe = build_pipeline(kind, scale, seed, device)
    pipe.to(dtype={"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype])
    if device != "cpu":
        pipe.to("cpu")  # saved from host memory, and the GPU is left free for what runs next
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def count_parameters(kind: str, scale: str = "full") -> dict[str, int]:
    """Parameters of each component, counted on the meta device: nothing is allocated."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        parts = _components(kind, scale, seed=0)
    return {name: sum(p.numel() for p in module.parameters()) for name, module in parts.items()}


# -- LoRA ----------------------------------------------------------------------------------------

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
"""The UNet attention projections LoRAs for Stable Diffusion usually train."""


def make_lora(model_dir: Path | str, path: Path | str, rank: int = 4, seed: int = 0, std: float = 0.02) -> Path:
    """A random LoRA for the UNet of the diffusers folder `model_dir`, saved as one safetensors file.

    Keys are in diffusers' PEFT layout (`unet.<module>.lora_A.weight` [rank, in], `lora_B.weight`
    [out, rank]), which `pipe.load_lora_weights` (and so `diffrun --lora FILE`) reads with peft.
    lora_B is random too (training starts it at zero), so the LoRA visibly changes the output.
    The UNet is built on the meta device to find the layers: no weights are read or allocated.
    """
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    config = json.loads((Path(model_dir) / "unet" / "config.json").read_text())
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
    generator = torch.Generator("cpu").manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.endswith(LORA_TARGETS) or ".attn" not in name:
            continue
        down = torch.randn(rank, module.in_features, generator=generator) / module.in_features ** 0.5
        up = torch.randn(module.out_features, rank, generator=generator) * std
        tensors[f"unet.{name}.lora_A.weight"] = down.to(torch.float16).contiguous()
        tensors[f"unet.{name}.lora_B.weight"] = up.to(torch.float16).contiguous()
    if not tensors:
        raise ValueError(f"{model_dir}: no attention projections found in the UNet")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", type=Path, help="where to save the model (or the model, with --lora)")
    parser.add_argument("--kind", choices=KINDS, default="sd15")
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--dtype", choices=DTYPES, default="fp16", help="dtype of the saved weights")
    parser.add_argument("--device", default="cpu", help="where the weights are initialised: cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", action="store_true", help="print parameter counts of the configs and exit")
    parser.add_argument("--lora", type=Path, metavar="FILE", help="write a random LoRA for DIRECTORY's UNet")
    args = parser.parse_args(argv)
    if args.count:
        for kind in KINDS:
            counts = count_parameters(kind, args.scale)
            shown = ", ".join(f"{name} {n / 1e6:,.1f}M" for name, n in counts.items())
            print(f"{kind} ({args.scale}): {shown}; total {sum(counts.values()) / 1e9:.3f}B")
        return
    if args.directory is None:
        parser.error("give a DIRECTORY (or --count)")
    start = time.perf_counter()
    if args.lora:
        print(make_lora(args.directory, args.lora, seed=args.seed))
        return
    path = save_model(args.directory, args.kind, args.scale, args.dtype, args.seed, args.device)
    print(f"{path}  ({args.kind}, {args.scale}, {args.dtype}, {time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
