"""FetchPolicy: every knob that decides how an input is fetched and decoded."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BYTES = 50_000_000
DEFAULT_MAX_PIXELS = 89_478_485  # the same number as Pillow's own decompression-bomb threshold
DEFAULT_DECODE_BUDGET = 1 << 30  # 1 GiB
BYTES_HINT = "raise --max-input-bytes if the input is trusted"
"""The hint of every input over --max-input-bytes, whichever way its bytes came."""


@dataclass(frozen=True)
class FetchPolicy:
    timeout: float = 30.0
    """Seconds to wait for a connection or for the next bytes of a response."""
    deadline: float | None = 120.0
    """Wall-clock seconds for one input, retries and backoff included (None: no limit)."""
    retries: int = 3
    """Retries after the first attempt, for connection errors, timeouts and retryable statuses."""
    backoff: float = 0.5
    """Base of the exponential backoff between attempts, in seconds (jitter is added)."""
    max_retry_after: float = 30.0
    """Cap on a server's Retry-After, in seconds."""
    max_redirects: int = 5
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    regular_files_only: bool = False
    """Local inputs must be regular files outside /proc, /sys and /dev (manifest rows, --from recipes);
    otherwise a FIFO or device is read like stdin, within the deadline (loaders/special.py)."""
    background: tuple[int, int, int] = (255, 255, 255)
    """Colour that transparent pixels are composited onto."""
    allow_hosts: tuple[str, ...] = ()
    """When not empty, only these hosts (exact, or `*.example.com`) may be fetched."""
    block_private: bool = False
    """Refuse loopback, private, link-local and reserved addresses, on every redirect hop."""
    decode_budget: int = DEFAULT_DECODE_BUDGET
    """Bytes of decoded pixels in flight at once, over all loads in this process (see loaders/budget.py)."""
