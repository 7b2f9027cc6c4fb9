"""A decoded image -> the mode a pipeline wants: deep images scaled to 8 bits, transparency composited.

Memory is the constraint here: inputs near the pixel cap are ~90 MP, and every full-size copy costs
4 bytes a pixel. So each step makes at most one new image, the one it came from is closed as soon as
the new one exists (when it is ours to close), deep images are scaled in strips of rows rather than
as whole float64 arrays, and compositing pastes through the alpha band onto the background in place.
The peak is the decoded image plus the output: 2 x 4 bytes a pixel for the worst modes.
"""

from __future__ import annotations

from PIL import Image

from diffrun.loaders.policy import FetchPolicy

OUTPUT_MODES = ("RGB", "L", "RGBA")
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
STRIP_PIXELS = 1 << 20
"""Pixels scaled at once when turning a deep image into 8 bits (small temporaries, same arithmetic)."""


def normalise(im: Image.Image, policy: FetchPolicy, *, mode: str = "RGB") -> Image.Image:
    """A new, detached image in `mode`: deep images scaled to 8 bits, transparency composited.

    `im` itself is left as it is.
    """
    return normalised(im, policy, mode, owned=False)


def normalised(im: Image.Image, policy: FetchPolicy, mode: str, *, owned: bool) -> Image.Image:
    """normalise(); `owned`: `im` is a plain, loaded image nobody else holds, to reuse or close.

    Each step that changes the image makes a new one and closes the old one when it is ours, so the
    copy that detaches the result from a caller's image is made only when no step ran.
    """
    if im.mode in DEEP_MODES:
        im, owned = _replace(im, to_8bit(im), owned), True
    if mode == "RGBA":
        if im.mode != "RGBA":
            im, owned = _replace(im, im.convert("RGBA"), owned), True
    elif has_alpha(im):
        im, owned = composite(im, policy.background, owned=owned), True
    elif im.mode not in ("RGB", "L"):
        im, owned = _replace(im, im.convert("RGB"), owned), True  # CMYK (Adobe inversion by Pillow), P, 1, ...
    if im.mode != mode:
        im, owned = _replace(im, im.convert(mode), owned), True
    if not owned:
        im = im.copy()
    im.load()
    return im


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info


def composite(im: Image.Image, background: tuple[int, int, int], *, owned: bool) -> Image.Image:
    """`im` over an opaque `background`, as RGB: one background image, pasted onto through the alpha.

    `paste` with the RGBA image as its own mask blends in place; alpha_composite would need an RGBA
    background, its RGBA result and an RGB copy of that (three more full images).
    """
    if im.mode != "RGBA":  # LA, PA, P or L/RGB with a transparent colour, premultiplied modes
        im, owned = _replace(im, im.convert("RGBA"), owned), True
    out = Image.new("RGB", im.size, background)
    out.paste(im, (0, 0), im)
    if owned:
        im.close()
    return out


def to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image as "L", scaled by its real range.

    16-bit: v / 257, rounded. 32-bit integer: by the smallest of 8/16/32 bits that holds the largest
    value, negatives clipped to 0. Float: [0, 1] times 255, any other range stretched from its min to
    its max, NaN and infinities as 0. Computed strip by strip, into one uint8 array.
    """
    import numpy as np

    width, height = im.size
    rows = max(1, STRIP_PIXELS // max(1, width))
    out = np.empty((height, width), dtype=np.uint8)
    if im.mode.startswith("I;16"):
        for top, strip in _strips(im, rows):
            out[top:top + len(strip)] = (strip.astype(np.uint32) + 128) // 257
    elif im.mode == "I":
        peak = max(0, int(im.getextrema()[1])) if width and height else 0
        depth = next((bits for bits in (8, 16, 32) if peak < 2**bits), 32)
        factor = 255.0 / (2**depth - 1)
        for top, strip in _strips(im, rows):
            scaled = np.clip(strip.astype(np.float64), 0, None) * factor
            out[top:top + len(strip)] = np.clip(np.rint(scaled), 0, 255)
    else:  # "F"
        low, high = _float_range(im, rows)
        if low >= 0.0 and high <= 1.0:
            offset, factor = 0.0, 255.0
        elif high > low:
            offset, factor = low, 255.0 / (high - low)
        else:
            offset, factor = 0.0, 0.0
        for top, strip in _strips(im, rows):
            clean = np.nan_to_num(strip.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            out[top:top + len(strip)] = np.clip(np.rint((clean - offset) * factor), 0, 255)
    return Image.fromarray(out)


def _float_range(im: Image.Image, rows: int) -> tuple[float, float]:
    import numpy as np

    low, high = float("inf"), float("-inf")
    for _, strip in _strips(im, rows):
        clean = np.nan_to_num(strip, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = min(low, float(clean.min())), max(high, float(clean.max()))
    return (low, high) if low <= high else (0.0, 1.0)


def _strips(im: Image.Image, rows: int):
    """(first row, array of up to `rows` rows) over the whole image; each strip is a small copy."""
    import numpy as np

    width, height = im.size
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = im.crop((0, top, width, bottom))
        yield top, np.asarray(strip)
        strip.close()


def _replace(old: Image.Image, new: Image.Image, owned: bool) -> Image.Image:
    """`new`, closing `old` (freeing its pixels) when it is ours and a different image."""
    if owned and new is not old:
        old.close()
    return new
