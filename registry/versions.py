"""Registration and aliases: one registered model per dataset, `champion` and `challenger`.

Every candidate becomes a new version of `posecoach-<dataset>` holding the alias `challenger`;
`champion` is what scoring uses unless a version is pinned. A version's tags carry what it was
made from and how it did: dataset and code versions, skeleton, classes, CV and gate figures and
the per-class table (the confusion matrix is an artifact of its run).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from registry.access import RegistryError as RegistryError  # re-exported: callers import it here
from registry.access import not_found, registry_error, server_errors
from registry.tracking import class_names, client

CHAMPION = "champion"
CHALLENGER = "challenger"


def model_name(dataset: str) -> str:
    return f"posecoach-{dataset}"


def model_uri(name: str, version: str | int | None = None, alias: str = CHAMPION) -> str:
    """`models:/<name>/<version>` when a version is pinned, else `models:/<name>@<alias>`."""
    return f"models:/{name}/{version}" if version is not None else f"models:/{name}@{alias}"


@server_errors()
def register_candidate(
    logged_uri: str,
    dataset: str,
    *,
    dataset_version: int | None,
    code_version: str,
    skeleton: str,
    classes: Iterable[str | tuple[str, str]],
    cv: Mapping[str, float] | None = None,
    gate: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    name: str | None = None,
) -> str:
    """Register a logged model as a new version of `posecoach-<dataset>` (or of `name`), alias
    `challenger`.

    `cv` is the cross-validation summary (mean / std per figure); `gate` the candidate's own
    gate-subject figures (Evaluation.to_dict()), kept for `models list` and as
    the fallback figures of `models promote`. Returns the version number.
    """
    version_tags = {
        "dataset": dataset,
        "dataset_version": "" if dataset_version is None else str(dataset_version),
        "code_version": code_version,
        "skeleton": skeleton,
        "classes": json.dumps(class_names(classes)),
        "cv": json.dumps(dict(cv or {})),
        "gate_figures": json.dumps(dict(gate or {})),
        "per_class": json.dumps((gate or {}).get("per_class", [])),
        **(tags or {}),
    }
    c = client()
    name = name or model_name(dataset)
    mv = mlflow.register_model(logged_uri, name, tags=version_tags)
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def get_version(name: str, version: str | int) -> ModelVersion:
    """The version, or RegistryError naming what is missing."""
    try:
        return client().get_model_version(name, str(version))
    except MlflowException as exc:
        raise registry_error(exc, f"{name}: no version {version} ({exc.error_code})") from exc


def version_exists(name: str, version: str | int) -> bool:
    """Whether the version is registered (False once deleted); a server that does not answer
    or refuses is an error, never "no such version"."""
    try:
        client().get_model_version(name, str(version))
    except MlflowException as exc:
        if not_found(exc):
            return False
        raise registry_error(exc, f"{name}: version {version} could not be read: {exc}") from exc
    return True


def alias_version(name: str, alias: str) -> str | None:
    """The version holding `alias`, or None (also when the model is not registered); a server
    that does not answer or refuses is an error, never "no such alias"."""
    try:
        return str(client().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if not_found(exc, "INVALID_PARAMETER_VALUE"):
            return None
        raise registry_error(exc, f"{name}: alias {alias!r} could not be read: {exc}") from exc


@server_errors()
def set_alias(name: str, alias: str, version: str | int) -> None:
    client().set_registered_model_alias(name, alias, str(version))


@server_errors()
def set_version_tags(name: str, version: str | int, tags: Mapping[str, str]) -> None:
    c = client()
    for key, value in tags.items():
        c.set_model_version_tag(name, str(version), key, value)


def json_tag(mv: ModelVersion, key: str, default: Any = None) -> Any:
    """A version tag holding JSON, decoded (default when absent)."""
    raw = mv.tags.get(key)
    return default if raw in (None, "") else json.loads(raw)


@dataclass
class VersionSummary:
    """One line of `models list`."""

    version: str
    aliases: list[str]
    created: str
    dataset_version: str
    code_version: str
    skeleton: str
    gate: dict[str, Any] = field(default_factory=dict)
    decision: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _created(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


@server_errors()
def list_versions(name: str) -> list[VersionSummary]:
    """Every version of `name`, newest first, with its aliases, origin and gate figures."""
    c = client()
    try:
        aliases = c.get_registered_model(name).aliases
    except MlflowException as exc:
        raise registry_error(exc, f"no registered model {name!r}") from exc
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for mv in c.search_model_versions(f"name='{name}'"):
        out.append(VersionSummary(
            version=str(mv.version),
            aliases=sorted(by_version.get(str(mv.version), [])),
            created=_created(mv.creation_timestamp),
            dataset_version=mv.tags.get("dataset_version", ""),
            code_version=mv.tags.get("code_version", ""),
            skeleton=mv.tags.get("skeleton", ""),
            gate=json_tag(mv, "gate_figures", {}),
            decision=mv.tags.get("gate.decision", ""),
        ))
    return sorted(out, key=lambda s: int(s.version), reverse=True)
