"""Supported output formats, and the optional MP4 dependency (the `video` extra)."""

from __future__ import annotations

from importlib.util import find_spec
from types import ModuleType

from diffrun.errors import UsageError

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
VIDEO_FORMATS = {".mp4", ".webp", ".gif"}

VIDEO_HINT = "pip install 'diffrun[video]'"


def mp4_available() -> bool:
    """True when imageio and imageio-ffmpeg can be imported (checked without importing them)."""
    return find_spec("imageio") is not None and find_spec("imageio_ffmpeg") is not None


def require_mp4() -> None:
    """Raise UsageError with the install hint when MP4 output cannot be written."""
    if not mp4_available():
        raise UsageError("MP4 output needs imageio and imageio-ffmpeg", hint=VIDEO_HINT)


def import_ffmpeg() -> tuple[ModuleType, str]:
    """Import imageio_ffmpeg lazily; return the module and the ffmpeg executable path."""
    require_mp4()
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - find_spec said it was there
        raise UsageError(f"MP4 output needs imageio-ffmpeg: {e}", hint=VIDEO_HINT) from e
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as e:
        raise UsageError(f"MP4 output needs an ffmpeg executable: {e}", hint=VIDEO_HINT) from e
    return imageio_ffmpeg, exe


def default_extension(kind: str) -> str:
    """The extension default names get: .png for images, .mp4 (or .webp without imageio) for video."""
    if kind == "image":
        return ".png"
    if kind == "video":
        return ".mp4" if mp4_available() else ".webp"
    raise ValueError(f"kind must be 'image' or 'video', not {kind!r}")


def _listing(exts) -> str:
    return ", ".join(sorted(exts))


def check_extension(path: str, kind: str) -> str:
    """Return the lower-cased extension of `path`, or raise UsageError if `kind` cannot be saved as it."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    ext = "." + name.rsplit(".", 1)[1].lower() if "." in name.lstrip(".") else ""
    supported = IMAGE_FORMATS if kind == "image" else VIDEO_FORMATS
    if ext in supported:
        if ext == ".mp4":
            require_mp4()
        return ext
    if kind == "video" and ext in IMAGE_FORMATS:
        raise UsageError(f"{path}: {ext} holds a single image, not a video; use one of {_listing(VIDEO_FORMATS)}")
    what = f"unsupported extension {ext!r}" if ext else "no file extension"
    raise UsageError(f"{path}: {what}; {kind} outputs can be {_listing(supported)}")
