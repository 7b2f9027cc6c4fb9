"""Tiny pipelines of more families, for task-inference tests: seeded random weights, built in code,
nothing downloaded (the T5 tokenizer's vocabulary is written here too).

- ControlNet: StableDiffusionControlNetPipeline (the tiny SD model plus a tiny ControlNetModel)
- LTX: LTXPipeline (text-to-video; LTXImageToVideoPipeline shares its weights)
- CogVideoX: CogVideoXPipeline (text-to-video; its image-to-video class needs another transformer)
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from diffrun.pipelines.tiny import _sd


def t5_tokenizer(max_length: int = 32) -> Any:
    """A T5 (Unigram) tokenizer over printable ASCII: one piece per character, the usual specials."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def t5_encoder(seed: int, vocab_size: int, d_model: int = 32) -> Any:
    import torch
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, relative_attention_num_buckets=8, decoder_start_token_id=0,
                                   pad_token_id=0, eos_token_id=1))


def controlnet(seed: int = 0) -> Any:
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    sd = _sd(seed)
    torch.manual_seed(seed)
    net = ControlNetModel(block_out_channels=(4, 8), layers_per_block=1, in_channels=4,
                          down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), cross_attention_dim=32,
                          conditioning_embedding_out_channels=(4, 8), norm_num_groups=2)
    return StableDiffusionControlNetPipeline(**sd.components, controlnet=net)


def ltx(seed: int = 0) -> Any:
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline
    from diffusers import LTXVideoTransformer3DModel as Transformer

    tokenizer = t5_tokenizer(max_length=16)
    torch.manual_seed(seed)
    transformer = Transformer(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=4,
                              attention_head_dim=8, cross_attention_dim=32, num_layers=1, caption_channels=32)
    torch.manual_seed(seed)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False,
        patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                       text_encoder=t5_encoder(seed, len(tokenizer)), tokenizer=tokenizer, transformer=transformer)


def cogvideox(seed: int = 0) -> Any:
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline
    from diffusers import CogVideoXTransformer3DModel as Transformer

    tokenizer = t5_tokenizer(max_length=16)
    torch.manual_seed(seed)
    transformer = Transformer(num_attention_heads=4, attention_head_dim=8, in_channels=4, out_channels=4,
                              time_embed_dim=2, text_embed_dim=32, num_layers=1, sample_width=2, sample_height=2,
                              sample_frames=9, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=226)
    torch.manual_seed(seed)
    vae = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4)
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=t5_encoder(seed, len(tokenizer)), vae=vae,
                             transformer=transformer, scheduler=CogVideoXDDIMScheduler())


BUILDERS = {"controlnet": controlnet, "ltx": ltx, "cogvideox": cogvideox}


def make(directory: Path, family: str, seed: int = 0) -> Path:
    """Build a tiny `family` pipeline and save it to `directory` (safetensors, loadable offline)."""
    from diffrun.pipelines.loading import quiet_libraries

    quiet_libraries()
    pipe = BUILDERS[family](seed)
    directory.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(directory, safe_serialization=True)
    return directory
