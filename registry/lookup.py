"""Finding registered versions: by their tags (idempotent retraining) and their saved folder
(the model/ folder logged as the pyfunc's `model_dir` artifact), downloaded for local use."""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from registry.access import not_found, registry_error
from registry.versions import CHAMPION, RegistryError, alias_version, client, get_version


def find_versions(name: str, **tags: str) -> list[str]:
    """Versions of `name` carrying every given tag value, oldest first (none when the model is
    not registered; a server that does not answer or refuses is an error, never "none")."""
    try:
        found = client().search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        if not_found(exc):
            return []
        raise registry_error(exc, f"{name}: versions could not be searched: {exc}") from exc
    hits = [mv for mv in found if all(mv.tags.get(k) == str(v) for k, v in tags.items())]
    return sorted((str(mv.version) for mv in hits), key=int)


def resolve(name: str, version: str | int | None = None, alias: str = CHAMPION) -> str:
    """The pinned version (checked to exist) or the one holding `alias`."""
    if version is not None:
        return str(get_version(name, version).version)
    found = alias_version(name, alias)
    if found is None:
        raise RegistryError(f"{name} has no version with the alias {alias!r}: train and promote "
                            "a model first (posecoach retrain), or pin one with --version")
    return found


def saved_model_dir(name: str, version: str | int, dest: str | Path) -> Path:
    """Download the saved model folder of a registered version into `dest`; return its path."""
    mv = get_version(name, version)
    out = Path(dest) / f"{name}-v{mv.version}"
    if not _saved_folders(out):
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}",
                                            dst_path=str(out))
    found = _saved_folders(out)
    if len(found) != 1:
        raise RegistryError(f"{name} v{mv.version} holds {len(found)} saved model folders "
                            "among its artifacts, expected one")
    return found[0]


def _saved_folders(out: Path) -> list[Path]:
    """Folders holding a model.json under the pyfunc's artifacts (MLflow keeps the basename)."""
    return sorted(p.parent for p in (out / "artifacts").glob("*/model.json"))
