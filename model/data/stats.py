"""Statistics that skip gaps (NaN), over many runs of values at once; evenly spaced picks."""

from __future__ import annotations

import numpy as np


def evenly_spaced(n: int, at_most: int) -> np.ndarray:
    """Indices into n items: all of them, or at_most of them evenly spread from first to last."""
    if n <= at_most:
        return np.arange(n)
    return np.linspace(0, n - 1, at_most).round().astype(int)


def run_medians(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """np.nanmedian of each run of `lengths` values from `starts` (runs back to back, each at
    least one value), in the values' dtype; NaN for a run with no known value. Every run is
    sorted by one sort, NaN last within it, then the middle one or two of its known values
    are taken."""
    runs = np.repeat(np.arange(len(lengths)), lengths)
    ordered = values[np.lexsort((values, runs))]
    known = np.bincount(runs, weights=~np.isnan(values), minlength=len(lengths)).astype(int)
    low = ordered[starts + np.maximum(known - 1, 0) // 2]
    high = ordered[starts + known // 2]
    middle = (low + high) / values.dtype.type(2)
    return np.where(known > 0, middle, values.dtype.type(np.nan))
