"""Writing generated video frames: MP4 through imageio-ffmpeg, animated WebP and GIF through Pillow."""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from diffrun.errors import UsageError
from diffrun.outputs.atomic import atomic_path, atomic_write, tracked, write_stdout
from diffrun.outputs.formats import check_extension, default_extension, import_ffmpeg
from diffrun.outputs.images import as_pil, check_quality, embeddable_metadata
from diffrun.outputs.metadata import recipe_json

DEFAULT_WEBP_QUALITY = 90


def _rgb_frames(frames: list) -> list:
    frames = [as_pil(f) for f in frames]
    if not frames:
        raise UsageError("no video frames to write")
    size = frames[0].size
    if any(f.size != size for f in frames):
        raise UsageError(
            "video frames differ in size: " + ", ".join(sorted({f"{w}x{h}" for w, h in (f.size for f in frames)}))
        )
    return [f if f.mode == "RGB" else f.convert("RGB") for f in frames]


def _encode_animated(frames: list, ext: str, recipe: dict, out: BinaryIO, fps: float, quality: int | None):
    """Animated WebP (recipe in EXIF and XMP) or GIF (recipe in the comment), looping forever."""
    first, rest = frames[0], frames[1:]
    common: dict[str, Any] = {"save_all": True, "append_images": rest, "duration": round(1000 / fps), "loop": 0}
    if ext == ".gif":
        first.save(out, "GIF", comment=recipe_json(recipe), **common)
    else:
        q = DEFAULT_WEBP_QUALITY if quality is None else int(quality)
        first.save(out, "WEBP", quality=q, **embeddable_metadata(recipe), **common)


def _even(array):
    """Pad an HxWx3 frame by repeating its last row/column so both sides are even (yuv420p needs it)."""
    import numpy as np

    h, w = array.shape[:2]
    if h % 2 or w % 2:
        array = np.pad(array, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return np.ascontiguousarray(array)


def _encode_mp4(frames: list, path: str, recipe: dict, fps: float, quality: int | None) -> None:
    """H.264 (libx264, yuv420p) MP4 at `path`; the recipe JSON goes in the "comment" metadata."""
    import numpy as np

    imageio_ffmpeg, _ = import_ffmpeg()
    arrays = [_even(np.asarray(f)) for f in frames]
    h, w = arrays[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        path,
        (w, h),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        quality=5 if quality is None else quality / 10,  # imageio's 0..10 scale, mapped to x264 CRF
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-f", "mp4", "-movflags", "+faststart", "-metadata", f"comment={recipe_json(recipe)}"],
    )
    writer.send(None)
    try:
        for array in arrays:
            writer.send(array.tobytes())
    except BaseException as exc:
        if not isinstance(exc, Exception):  # Ctrl-C: imageio then kills ffmpeg rather than wait for it
            with contextlib.suppress(BaseException):
                writer.throw(exc)
        raise
    finally:
        writer.close()


def write_video(
    frames: list,
    target: str | Path,
    recipe: dict,
    *,
    fps: int = 8,
    quality: int | None = None,
    overwrite: bool = False,
    stdout: BinaryIO | None = None,
) -> str:
    """Write `frames` as a video to `target` atomically, or stream it to stdout for "-".

    The format follows the extension (.mp4, .webp, .gif); stdout gets the default video format.
    Returns the path written, or "-".
    """
    check_quality(quality)
    if not fps or fps <= 0:
        raise UsageError(f"fps must be positive, not {fps}")
    to_stdout = str(target) == "-"
    ext = default_extension("video") if to_stdout else check_extension(str(target), "video")
    if ext == ".mp4":
        import_ffmpeg()  # fail with the install hint before converting any frames
    rgb = _rgb_frames(list(frames))
    if ext == ".mp4":
        if to_stdout:
            with tempfile.TemporaryDirectory(prefix="diffrun-") as folder, tracked(folder):
                path = str(Path(folder) / "video.mp4")
                _encode_mp4(rgb, path, recipe, fps, quality)
                return write_stdout(Path(path).read_bytes(), stdout)
        with atomic_path(target, overwrite=overwrite) as tmp:
            _encode_mp4(rgb, tmp, recipe, fps, quality)
        return str(target)
    if to_stdout:
        buf = io.BytesIO()
        _encode_animated(rgb, ext, recipe, buf, fps, quality)
        return write_stdout(buf.getvalue(), stdout)
    return atomic_write(target, lambda f: _encode_animated(rgb, ext, recipe, f, fps, quality), overwrite=overwrite)
