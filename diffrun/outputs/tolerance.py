"""How close two images must be to count as the same (`compare`, `generate --expect`); no numpy here,
so the commands that only declare the options start fast."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PSNR = 40.0
"""The default minimum PSNR (dB) for two images to count as the same."""


@dataclass(frozen=True)
class Tolerance:
    """Pass when PSNR >= min_psnr, or (when max_diff is set instead) when every level differs by <= max_diff."""

    min_psnr: float = DEFAULT_PSNR
    max_diff: int | None = None

    def describe(self) -> str:
        return f"max diff {self.max_diff}" if self.max_diff is not None else f"PSNR >= {self.min_psnr:g} dB"
