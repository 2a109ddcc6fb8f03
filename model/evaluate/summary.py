"""Figures as nested dicts (Evaluation.to_dict(), a fold's result): one figure by its dotted
name, every numeric leaf by dotted name, and the mean and spread of the leaves over folds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def figure_at(figures: Mapping[str, Any], name: str) -> Any:
    """The value at a dotted name ("correction.independent.all"); None where there is none."""
    value: Any = figures
    for key in name.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return value


def scalar_figures(figures: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric leaves, keyed by dotted name; lists (per-class rows, the confusion matrix,
    class names), None and booleans are left out."""
    out: dict[str, float] = {}
    for key, value in figures.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalar_figures(value, f"{name}."))
        elif isinstance(value, int | float | np.number) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def summarise(folds: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation (over folds, ddof=0) of the figures every fold has: a figure
    missing from one fold (None, say) is left out rather than averaged over the others."""
    per_fold = [scalar_figures(f) for f in folds]
    names = sorted(set.intersection(*(set(p) for p in per_fold))) if per_fold else []
    mean = {n: float(np.mean([p[n] for p in per_fold])) for n in names}
    std = {n: float(np.std([p[n] for p in per_fold])) for n in names}
    return mean, std
