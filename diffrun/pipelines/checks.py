"""Output checks: NaN/Inf in the decoded tensor, blank (single-colour) images and frames, NSFW blackouts.

diffrun asks pipelines for `output_type="np"` and makes the PIL images itself, exactly as diffusers'
`VaeImageProcessor.numpy_to_pil` does (so the pixels are bit for bit the ones `output_type="pil"`
gives), because by the time diffusers hands back PIL images the uint8 cast has turned NaN into 0
and an overflowing fp16 VAE looks like an ordinary black picture.

A check result is a dict: {"check": "nan" | "blank" | "nsfw", "index": i, "ok": False, "message": ...}
(plus "frame" for a video frame); only failed checks are listed, so an empty list means all passed.
numpy only: no torch here.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

BLANK_LEVELS = 2
"""An image is blank when, in every channel, max - min <= 2/255 (2 levels of 0-255)."""


def numpy_to_pil(images: np.ndarray) -> list[Any]:
    """diffusers' numpy_to_pil, bit for bit: HxWxC floats in [0, 1] (or a batch) -> PIL images."""
    from PIL import Image

    if images.ndim == 3:
        images = images[None, ...]
    with warnings.catch_warnings():  # NaN -> uint8: "invalid value encountered in cast" (checked separately)
        warnings.simplefilter("ignore", RuntimeWarning)
        images = (images * 255).round().astype("uint8")
    if images.shape[-1] == 1:
        return [Image.fromarray(image.squeeze()) for image in images]  # 2-D uint8: mode "L", as diffusers
    return [Image.fromarray(image) for image in images]


def nonfinite_message(values: np.ndarray) -> str | None:
    """'N NaN and M Inf values in the decoded output' or None when every value is finite."""
    if values.dtype.kind != "f":
        return None
    nan = int(np.isnan(values).sum())
    inf = int(np.isinf(values).sum())
    if not nan and not inf:
        return None
    parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
    return (" and ".join(p for p in parts if p) + f" of {values.size} values in the decoded output "
            "(often an fp16 VAE overflow: try --dtype fp32 or bf16)")


def blank_message(pixels: np.ndarray) -> str | None:
    """'single colour ...' when every channel's max - min <= BLANK_LEVELS, else None (uint8 HxW[xC])."""
    if pixels.size == 0:
        return None
    channels = pixels.reshape(-1, 1 if pixels.ndim == 2 else pixels.shape[-1])[:, :3]
    low, high = channels.min(axis=0), channels.max(axis=0)
    if np.any(high.astype(int) - low.astype(int) > BLANK_LEVELS):
        return None
    colour = ",".join(str(int(v)) for v in np.round((low.astype(int) + high.astype(int)) / 2))
    what = "all black" if high.max() <= BLANK_LEVELS else f"a single colour ({colour})"
    return f"{what}: every channel varies by at most {BLANK_LEVELS}/255"


def _fail(check: str, index: int, message: str, frame: int | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"check": check, "index": index, "ok": False, "message": message}
    if frame is not None:
        found["frame"] = frame
    return found


def check_image(values: np.ndarray | None, image: Any, index: int, frame: int | None = None) -> list[dict[str, Any]]:
    """The failed checks of one image (or video frame): `values` its float array, `image` its PIL image."""
    found = []
    if values is not None and (message := nonfinite_message(values)):
        found.append(_fail("nan", index, message, frame))
    if (message := blank_message(np.asarray(image))) is not None:
        found.append(_fail("blank", index, message, frame))
    return found


def convert_images(images: Any, nsfw: Any = None) -> tuple[list[Any], list[list[dict[str, Any]]]]:
    """A pipeline's `images` (a float array from output_type="np", or PIL images from a pipeline that
    ignores it) -> PIL images and each image's failed checks."""
    if isinstance(images, np.ndarray):
        arrays = list(images[None] if images.ndim == 3 else images)
        pil = [numpy_to_pil(a)[0] for a in arrays]
    else:
        arrays = [a if isinstance(a, np.ndarray) else None for a in (images or [])]
        pil = [numpy_to_pil(a)[0] if isinstance(a, np.ndarray) else a for a in (images or [])]
    checks = [check_image(a, p, i) for i, (a, p) in enumerate(zip(arrays, pil, strict=True))]
    flags = list(nsfw) if isinstance(nsfw, (list, tuple, np.ndarray)) else []
    for i, flagged in enumerate(flags[: len(pil)]):
        if bool(flagged):
            checks[i].append(_fail("nsfw", i, "the safety checker flagged it and blacked it out"))
    return pil, checks


def convert_videos(frames: Any) -> tuple[list[list[Any]], list[list[dict[str, Any]]]]:
    """A pipeline's `frames` (B x F x H x W x C floats, or lists of PIL frames) -> PIL frames per video
    and each video's failed checks (one per failing frame)."""
    videos, checks = [], []
    for v, video in enumerate(list(frames)):
        frame_list = list(video[None] if isinstance(video, np.ndarray) and video.ndim == 3 else video)
        pil, found = [], []
        for f, frame in enumerate(frame_list):
            image = numpy_to_pil(frame)[0] if isinstance(frame, np.ndarray) else frame
            pil.append(image)
            found.extend(check_image(frame if isinstance(frame, np.ndarray) else None, image, v, frame=f))
        videos.append(pil)
        checks.append(found)
    return videos, checks


def describe(check: dict[str, Any]) -> str:
    """'blank (image 0): all black: ...' for warnings and error messages."""
    where = f"image {check.get('index', 0)}" if "frame" not in check else \
        f"video {check.get('index', 0)} frame {check['frame']}"
    return f"{check.get('check')} ({where}): {check.get('message')}"
