"""Loaders: a reference (path, file://, http(s)://, data:, "-", bytes, PIL image) -> a checked image.

Nothing here touches the disk unless `save_dir` is given; requests is imported only for URLs.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from diffrun.errors import InputError, disk_error
from diffrun.loaders import problems
from diffrun.loaders.decode import OUTPUT_MODES, PIL_ERRORS, DecodedImage, decode_image, normalise
from diffrun.loaders.policy import FetchPolicy
from diffrun.loaders.redact import display_ref, strip_credentials
from diffrun.loaders.sources import RawInput, read_source
from diffrun.loaders.store import InputStore

__all__ = [
    "FetchPolicy",
    "InputError",
    "InputStore",
    "LoadResult",
    "LoadedInput",
    "load_image",
    "load_input",
    "load_many",
]


@dataclass
class LoadedInput:
    source: str
    """Display form of the reference: shortened, credentials removed."""
    image: Image.Image
    data: bytes
    """The exact original bytes (b"" for a PIL image passed in)."""
    format: str
    """The detected format: "PNG", "JPEG", ... ("PIL" for an image passed in without one)."""
    final_url: str | None = None
    saved_path: Path | None = None
    digest: str | None = field(default=None, repr=False, compare=False)
    """The sha256 when already known; read `sha256`, which fills this in on first use."""
    notes: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """What the decoder library said while this input decoded fine (libtiff warnings): for --debug."""

    @property
    def sha256(self) -> str:
        """Hex digest of `data` (for a PIL image passed in: of its PNG encoding), computed once, when first asked.

        Lazy because a plain load_image() never needs it; two threads asking at once both get the same value.
        """
        if self.digest is None:
            self.digest = hashlib.sha256(self.data).hexdigest()
        return self.digest

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


@dataclass
class LoadResult:
    source: str
    input: LoadedInput | None
    error: InputError | None
    seconds: float
    rejected_bytes: int | None = None
    """For an input whose bytes were read and then refused (not an image, corrupt, ...): how many."""
    rejected_sha256: str | None = None
    """... and their sha256, so a refused download can be found again."""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        loaded, error = self.input, self.error
        return {
            "source": self.source,
            "ok": self.ok,
            "format": loaded.format if loaded else None,
            "width": loaded.width if loaded else None,
            "height": loaded.height if loaded else None,
            "mode": loaded.image.mode if loaded else None,
            "bytes": len(loaded.data) if loaded else self.rejected_bytes,
            "sha256": loaded.sha256 if loaded else self.rejected_sha256,
            "saved_path": str(loaded.saved_path) if loaded and loaded.saved_path else None,
            "final_url": strip_credentials(loaded.final_url) if loaded and loaded.final_url else None,
            "error": str(error) if error else None,
            "code": error.code if error else None,
            "hint": error.hint if error else None,
            "seconds": round(self.seconds, 6),
        }


def load_input(source: Any, policy: FetchPolicy | None = None, *, mode: str = "RGB",
               save_dir: Path | str | None = None, store: InputStore | None = None) -> LoadedInput:
    """Read, check and decode one input; InputError (exit 3) naming the input on any failure."""
    policy = policy or FetchPolicy()
    _check_mode(mode)
    raw = read_source(source, policy, display=display_ref(source))
    return _from_raw(raw, policy, mode, _store(store, save_dir))


def load_image(source: Any, policy: FetchPolicy | None = None, *, mode: str = "RGB",
               save_dir: Path | str | None = None) -> Image.Image:
    """load_input(...).image."""
    return load_input(source, policy, mode=mode, save_dir=save_dir).image


def load_many(sources: Iterable[Any], policy: FetchPolicy | None = None, *, mode: str = "RGB",
              save_dir: Path | str | None = None, workers: int = 8) -> Iterator[LoadResult]:
    """Load concurrently (at most `workers` at once), yielding results in input order.

    InputError never escapes: it is in `LoadResult.error`. Sources are pulled from the iterable only
    as slots free up, so a huge or endless iterable is never loaded all at once.
    """
    policy = policy or FetchPolicy()
    _check_mode(mode)
    workers = max(1, int(workers))
    store = InputStore(save_dir) if save_dir is not None else None
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="diffrun-load")
    pending: deque[Future[LoadResult]] = deque()
    try:
        for source in sources:
            pending.append(pool.submit(_timed_load, source, policy, mode, store))
            if len(pending) >= workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _check_mode(mode: str) -> None:
    if mode not in OUTPUT_MODES:
        raise ValueError(f"mode must be one of {OUTPUT_MODES}, not {mode!r}")


def _from_raw(raw: RawInput, policy: FetchPolicy, mode: str, store: InputStore | None) -> LoadedInput:
    if raw.image is not None:
        return _from_pil(raw, policy, mode, store)
    decoded = decode_image(raw.data, policy, mode=mode, display=raw.display)
    loaded = LoadedInput(source=raw.display, image=decoded.image, data=raw.data, format=decoded.format,
                         final_url=raw.final_url, notes=decoded.notes)
    if store is not None:
        loaded.saved_path = _save(store, raw.data, loaded, decoded.format, decoded)
    return loaded


def _timed_load(source: Any, policy: FetchPolicy, mode: str, store: InputStore | None) -> LoadResult:
    start = time.perf_counter()
    display = display_ref(source)
    raw: RawInput | None = None
    try:
        raw = read_source(source, policy, display=display)
        loaded = _from_raw(raw, policy, mode, store)
    except InputError as e:
        result = LoadResult(display, None, e, 0.0)
        if raw is not None and raw.image is None:
            result.rejected_bytes = len(raw.data)
            result.rejected_sha256 = hashlib.sha256(raw.data).hexdigest()
        result.seconds = time.perf_counter() - start
        return result
    return LoadResult(display, loaded, None, time.perf_counter() - start)


def _store(store: InputStore | None, save_dir: Path | str | None) -> InputStore | None:
    if store is not None:
        return store
    return InputStore(save_dir) if save_dir is not None else None


def _save(store: InputStore, data: bytes, loaded: LoadedInput, fmt: str, decoded: DecodedImage | None) -> Path:
    width, height = (decoded.width, decoded.height) if decoded else (loaded.width, loaded.height)
    try:
        return store.save(data, sha256=loaded.sha256, fmt=fmt, source_display=loaded.source,
                          final_url=loaded.final_url, width=width, height=height)
    except OSError as e:  # a full disk is exit 74, as for outputs; anything else this input's failure
        raise disk_error(f"--save-inputs {store.directory}", e) or InputError(
            loaded.source, f"cannot save to {store.directory}: {e.strerror or e}", code="save_failed") from None


def _from_pil(raw: RawInput, policy: FetchPolicy, mode: str, store: InputStore | None) -> LoadedInput:
    """A PIL image passed in: same checks and normalisation, identity is its PNG encoding."""
    src = raw.image
    assert src is not None
    if src.width * src.height > policy.max_pixels:  # before load(): an image opened lazily has pixels to come
        raise problems.too_many_pixels(raw.display, src.width * src.height, policy.max_pixels, src.size)
    try:
        src.load()
        image = normalise(src, policy, mode=mode)
        png = _png(src) or _png(image)
    except InputError:
        raise
    except PIL_ERRORS as e:
        raise InputError(raw.display, f"cannot use this image: {problems.describe(e)}",
                         code="convert_failed") from None
    loaded = LoadedInput(source=raw.display, image=image, data=b"", format=src.format or "PIL",
                         digest=hashlib.sha256(png).hexdigest())
    if store is not None:
        loaded.saved_path = _save(store, png, loaded, "PNG", None)
    return loaded


def _png(image: Image.Image) -> bytes:
    """The PNG encoding of `image`, or b"" when PNG cannot hold its mode (CMYK, F, ...)."""
    buffer = io.BytesIO()
    try:
        image.save(buffer, "PNG", compress_level=1)
    except (OSError, KeyError, ValueError):
        return b""
    return buffer.getvalue()
