"""Weights from diffrun's own generator, so a tiny model is the same under any torch or diffusers.

Every parameter is drawn from numpy's PCG64, seeded by (seed, sha256 of the parameter's full name),
using only the generator's raw 64-bit words (`random_raw`, fixed by the PCG64 algorithm, not by a
numpy version's sampling code), mapped to numbers here:

- Linear and Conv weights and biases: uniform in +-1/sqrt(fan_in) (the bound of torch's default);
- GroupNorm / LayerNorm (any module whose name ends in "Norm"): weight 1, bias 0;
- everything else (embeddings, class tokens, ...): normal with std 0.02 (Box-Muller on the same words).

Buffers (position ids, scheduler tables) are not random and are left as the classes build them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

NORMAL_STD = 0.02


def _generator(seed: int, name: str) -> np.random.PCG64:
    digest = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, digest]))


def _uniform(bits: np.random.PCG64, count: int) -> np.ndarray:
    """count floats in [0, 1) from the top 53 bits of raw words."""
    raw = np.asarray(bits.random_raw(count), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def draw(seed: int, name: str, shape: tuple[int, ...], kind: str, fan_in: int = 1) -> np.ndarray:
    """The float32 values of one parameter: kind is uniform, normal, ones or zeros."""
    count = int(np.prod(shape)) if shape else 1
    if kind == "ones":
        return np.ones(shape, np.float32)
    if kind == "zeros":
        return np.zeros(shape, np.float32)
    bits = _generator(seed, name)
    if kind == "uniform":
        bound = 1.0 / math.sqrt(max(fan_in, 1))
        values = (_uniform(bits, count) * 2.0 - 1.0) * bound
    else:
        u = _uniform(bits, 2 * ((count + 1) // 2)).reshape(2, -1)
        radius = np.sqrt(-2.0 * np.log1p(-u[0]))  # 1 - u in (0, 1]: never log(0)
        values = np.concatenate([radius * np.cos(2 * math.pi * u[1]), radius * np.sin(2 * math.pi * u[1])])[:count]
        values = values * NORMAL_STD
    return values.astype(np.float32).reshape(shape)


def _rule(module: Any, local: str, shape: tuple[int, ...], weight_fan_in: int) -> tuple[str, int]:
    import torch

    if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d,
                           torch.nn.ConvTranspose2d)):
        return "uniform", weight_fan_in
    if type(module).__name__.endswith("Norm") or isinstance(module, torch.nn.modules.normalization.GroupNorm):
        return ("ones" if local == "weight" else "zeros"), 1
    return "normal", 1


def _fan_in(module: Any) -> int:
    weight = getattr(module, "weight", None)
    if weight is None or weight.dim() < 2:
        return 1
    import torch

    if isinstance(module, torch.nn.ConvTranspose2d):
        return int(weight.shape[0] * weight[0][0].numel())
    return int(weight.shape[1] * weight[0][0].numel())


def seed_weights(model: Any, seed: int, prefix: str) -> None:
    """Overwrite every parameter of `model` (a torch module) in place with `draw` values; `prefix` names
    the component (unet, vae, text_encoder, ...) so equal shapes in two components still differ."""
    import torch

    with torch.no_grad():
        for module_name, module in model.named_modules():
            fan_in = _fan_in(module)
            for local, parameter in module.named_parameters(recurse=False):
                name = ".".join(part for part in (prefix, module_name, local) if part)
                kind, fan = _rule(module, local, tuple(parameter.shape), fan_in)
                values = draw(seed, name, tuple(parameter.shape), kind, fan)
                parameter.copy_(torch.from_numpy(values).to(parameter.dtype))


def weights_digest(tensors: dict[str, Any], prefix: str = "") -> str:
    """sha256 over every tensor's name, shape and float32 little-endian bytes, in name order: pass a
    component's saved state (safetensors.torch.load_file) or dict(module.state_dict())."""
    digest = hashlib.sha256()
    for name, parameter in sorted(tensors.items()):
        values = parameter.detach().cpu().float().numpy().astype("<f4")
        digest.update(f"{prefix}.{name}{tuple(values.shape)}".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()
