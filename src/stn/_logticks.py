"""Readable log axes for stn's figures: a few major ticks in plain numbers (0.5, 2, 20), no overlapping minor
labels."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.ticker import FuncFormatter, Locator, MaxNLocator, NullLocator

__all__ = ["few_log_ticks"]


class _FewLogTicks(Locator):
    """Ticks of a log axis that stay readable: 1-2-5 per decade, only decades when that gives more than
    ``max_ticks``, and evenly spaced plain ticks when the view spans too little of a decade to hold two."""

    def __init__(self, max_ticks: int = 7) -> None:
        self.max_ticks = max_ticks

    def __call__(self) -> list[float]:
        return self.tick_values(*self.axis.get_view_interval())

    def tick_values(self, vmin: float, vmax: float) -> list[float]:
        lo, hi = sorted((vmin, vmax))
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= 0:
            return []
        lo = max(lo, hi * 1e-12)
        decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        for mantissas in ((1, 2, 5), (1,)):
            ticks = [m * 10.0**k for k in decades for m in mantissas if lo <= m * 10.0**k <= hi]
            if len(ticks) <= self.max_ticks:
                break
        else:  # more decades than max_ticks: every few decades
            stride = -(-len(ticks) // self.max_ticks)
            ticks = ticks[::stride]
        if len(ticks) < 2:  # a fraction of a decade looks linear: plain, evenly spaced ticks
            ticks = [t for t in MaxNLocator(nbins=4).tick_values(lo, hi) if lo <= t <= hi and t > 0]
        return ticks


def _plain_number(value: float, _position: object = None) -> str:
    """``0.5``, ``2``, ``20``: a tick label in plain notation, without float noise (``0.30000000000000004``)."""
    return np.format_float_positional(float(f"{value:.6g}"), trim="-")


def few_log_ticks(axis: Any) -> None:
    """Readable labels on a log axis: a few major ticks in plain numbers (:class:`_FewLogTicks`), no minor
    labels (matplotlib's minor labels on a log axis overlap: 2, 3, ... 9 of every decade)."""
    axis.set_major_locator(_FewLogTicks())
    axis.set_major_formatter(FuncFormatter(_plain_number))
    axis.set_minor_locator(NullLocator())
