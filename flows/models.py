"""What the registry holds for a dataset (`posecoach models list`): the versions of its model,
newest first, their aliases and key gate figures; the paper's released weights imported and
registered (`posecoach models import-paper`)."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

from model.data.names import slug
from model.data.synth import make_session
from model.learn.paper import import_weights
from model.settings import get_settings
from registry.gate import GateFigures
from registry.imported import register_imported
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


_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


def import_name(path: Path, name: str | None, classifier_only: bool) -> str:
    """The name an imported model is registered under (as `posecoach-<name>`): the one asked
    for, checked, or `paper-<file stem>` (`-classifier` when only its classifier is kept)."""
    if name is None:
        name = f"paper-{slug(path.stem).lower() or 'weights'}"
        name += "-classifier" if classifier_only else ""
    if not _NAME.fullmatch(name):
        raise ValueError(f"--name {name!r}: lower-case letters, digits, '.', '_' and '-' only, "
                         "at most 64, starting with a letter or digit")
    return name


def import_paper(path: Path, name: str | None = None, classifier_only: bool = False,
                 units: str = "m") -> dict[str, Any]:
    """Import the paper's state dict at `path` (model.learn.paper), save it under
    POSECOACH_HOME/models/imported/<name>/ and register it as `posecoach-<name>`."""
    name = import_name(path, name, classifier_only)
    trained = import_weights(path, classifier_only=classifier_only, units=units)
    folder = trained.save(get_settings().models / "imported" / name
                          / time.strftime("%Y%m%d-%H%M%S"))
    example, _ = make_session("example", "squat", ["correct"])
    registered, run_id, version = register_imported(folder, trained, name, example)
    return {"model": registered, "version": version, "run_id": run_id, "model_dir": str(folder),
            "variant": trained.config.variant, "attention": trained.gcn_config.attention,
            "classes": [list(c) for c in trained.classes],
            "normalization": trained.normalization.to_dict(), "origin": trained.meta["origin"]}
