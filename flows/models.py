"""What the registry holds for a dataset (`posecoach models list`): the versions of its model,
newest first, their aliases and key gate figures."""

from __future__ import annotations

import math
from typing import Any

from registry.gate import GateFigures
from registry.versions import CHALLENGER, CHAMPION, alias_version, list_versions
from registry.versions import model_name as registered_name


def _plain(value: float) -> float | None:
    """A figure for JSON: NaN becomes None."""
    return None if math.isnan(value) else value


def listing(dataset: str) -> dict[str, Any]:
    """Versions of the dataset's registered model, newest first, with their key figures."""
    name = registered_name(dataset)
    versions = []
    for summary in list_versions(name):
        row = summary.to_dict()
        figures = GateFigures.from_evaluation(row.pop("gate"))
        row["figures"] = {"macro": _plain(figures.macro),
                          "correction_independent": _plain(figures.correction)}
        versions.append(row)
    return {"model": name, "champion": alias_version(name, CHAMPION),
            "challenger": alias_version(name, CHALLENGER), "versions": versions}
