"""A process-wide budget for decoded bytes in flight, so concurrent loads cannot add up unbounded.

Each decode reserves an estimate of its peak (the decoded image, the converted copy and one working
image) before it allocates any pixels, and waits while the reservations of other decodes would push
the total past the budget. A decode larger than the whole budget waits until it can run alone, so
nothing is ever refused for the budget's sake: it only limits how many big images decode at once.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

# Bytes per pixel as Pillow stores each mode ("RGB" and the other 3-band modes take 4).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def estimate(width: int, height: int, source_mode: str, mode: str) -> int:
    """Peak bytes of one decode: the decoded image, the output, and one more output-sized image."""
    pixels = max(0, width) * max(0, height)
    out = 1 if mode == "L" else 4
    return pixels * (_BYTES_PER_PIXEL.get(source_mode, 4) + out + 4)


class DecodeBudget:
    """Reservations of bytes, at most `limit` at once (one reservation alone may exceed it)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.in_use = 0
        self.peak = 0
        """The most bytes reserved at once so far (for tests and benchmarks)."""

    @contextlib.contextmanager
    def reserve(self, nbytes: int, limit: int) -> Iterator[None]:
        n = max(0, min(int(nbytes), int(limit)))
        with self._cond:
            self._cond.wait_for(lambda: self.in_use == 0 or self.in_use + n <= limit)
            self.in_use += n
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._cond:
                self.in_use -= n
                self._cond.notify_all()


BUDGET = DecodeBudget()
