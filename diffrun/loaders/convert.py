"""A decoded image -> the mode a pipeline wants: deep images scaled to 8 bits, transparency composited.

Memory is the constraint here: inputs near the pixel cap are ~90 MP, and every full-size copy costs
4 bytes a pixel. So each step makes at most one new image, the one it came from is closed as soon as
the new one exists (when it is ours to close), deep images are scaled in strips of rows rather than
as whole float64 arrays, and compositing blends the background into the RGBA pixels in place. The
peak stays under the decoded image plus the output (2 x 4 bytes a pixel).
"""

from __future__ import annotations

from PIL import Image, ImageChops

from diffrun.loaders.policy import FetchPolicy

OUTPUT_MODES = ("RGB", "L", "RGBA")
DEEP_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
STRIP_PIXELS = 1 << 18
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
    """`im` over an opaque `background`, as RGB, blended in place in the RGBA pixels.

    The background colour is pasted through the inverted alpha (two 1-byte bands), then the same
    4-byte pixels are taken as RGB (Pillow stores RGB at 4 bytes a pixel too) without a copy where
    Pillow can share them (`Image.fromarrow`); alpha_composite would need an RGBA background, its
    RGBA result and an RGB copy of that.
    """
    if im.mode != "RGBA" or not owned:  # LA, PA, P or L/RGB with a transparent colour; or not ours to change
        im = _replace(im, im.convert("RGBA"), owned)
    alpha = im.getchannel("A")
    inverse = ImageChops.invert(alpha)
    alpha.close()
    im.paste(background, (0, 0, *im.size), inverse)  # each pixel: src * a + background * (1 - a)
    inverse.close()
    im.putalpha(255)  # the fourth byte of an RGB pixel is 255 in Pillow's own RGB images
    return _as_rgb(im)


def _as_rgb(rgba: Image.Image) -> Image.Image:
    """The RGB image on the same pixels as `rgba` (which must not be used afterwards), else a copy."""
    fromarrow = getattr(Image, "fromarrow", None)
    if fromarrow is not None:
        try:
            return fromarrow(rgba, "RGB", rgba.size)
        except (ValueError, TypeError, NotImplementedError):
            pass
    out = rgba.convert("RGB")
    rgba.close()
    return out


def to_8bit(im: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or float single-channel image as "L", scaled by its real range.

    16-bit and 32-bit integer: v * 255 / (2**bits - 1), rounded, with `bits` the smallest of 8/16/32
    that holds the largest value (16 for "I;16"), negatives clipped to 0: integer arithmetic. Float:
    [0, 1] times 255, any other range stretched from its min to its max, NaN and infinities as 0:
    float32, in place. Computed in strips of rows, into one uint8 array.
    """
    import numpy as np

    width, height = im.size
    rows = max(1, STRIP_PIXELS // max(1, width))
    out = np.empty((height, width), dtype=np.uint8)
    if im.mode == "F":
        low, high = _float_range(im, rows)
        if low >= 0.0 and high <= 1.0:
            offset, factor = 0.0, 255.0
        elif high > low:
            offset, factor = low, 255.0 / (high - low)
        else:
            offset, factor = 0.0, 0.0
        for top, strip in _strips(im, rows, np.float32):
            np.nan_to_num(strip, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
            strip -= np.float32(offset)
            strip *= np.float32(factor)
            np.rint(strip, out=strip)
            np.clip(strip, 0, 255, out=strip)
            out[top:top + len(strip)] = strip
        return Image.fromarray(out)
    if im.mode == "I":
        peak = max(0, int(im.getextrema()[1])) if width and height else 0
        top_value = 2 ** next((bits for bits in (8, 16, 32) if peak < 2**bits), 32) - 1
    else:
        top_value = 65535
    for top, strip in _strips(im, rows, np.int64):
        np.maximum(strip, 0, out=strip)
        strip *= 2 * 255
        strip += top_value
        strip //= 2 * top_value  # round(v * 255 / top_value), halves up
        out[top:top + len(strip)] = strip
    return Image.fromarray(out)


def _float_range(im: Image.Image, rows: int) -> tuple[float, float]:
    import numpy as np

    low, high = float("inf"), float("-inf")
    for _, strip in _strips(im, rows, np.float32):
        np.nan_to_num(strip, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = min(low, float(strip.min())), max(high, float(strip.max()))
    return (low, high) if low <= high else (0.0, 1.0)


def _strips(im: Image.Image, rows: int, dtype: object):
    """(first row, writable `dtype` array of up to `rows` rows) over the whole image: small copies."""
    import numpy as np

    width, height = im.size
    for top in range(0, height, rows):
        strip = im.crop((0, top, width, min(height, top + rows)))
        yield top, np.array(strip, dtype=dtype)
        strip.close()


def _replace(old: Image.Image, new: Image.Image, owned: bool) -> Image.Image:
    """`new`, closing `old` (freeing its pixels) when it is ours and a different image."""
    if owned and new is not old:
        old.close()
    return new
