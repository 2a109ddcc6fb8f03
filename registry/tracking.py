"""MLflow tracking: where runs go, and what one training run records.

The tracking URI comes from model.settings (sqlite under POSECOACH_HOME by default;
MLFLOW_TRACKING_URI points it at a server). Logging happens on the driver, from what the
cross-validation and training work returned.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from model.data import storage
from model.data.labels import class_name
from model.data.names import csv_row, metric_key
from model.evaluate.summary import scalar_figures, summarise
from model.learn.saved import code_version as saved_code_version
from model.settings import get_settings


def configure_tracking(uri: str | None = None) -> str:
    """Point MLflow (tracking and registry) at `uri`, or the settings' URI; return it."""
    uri = uri or get_settings().mlflow_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(uri: str | None = None) -> MlflowClient:
    """An MlflowClient on the configured tracking URI."""
    uri = configure_tracking(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_name(dataset: str) -> str:
    return f"posecoach-{dataset}"


def ensure_experiment(dataset: str) -> str:
    """The dataset's experiment id, created if missing; on a local (sqlite) store its artifacts
    go under POSECOACH_HOME/mlartifacts rather than the working directory's ./mlruns."""
    c = client()
    name = experiment_name(dataset)
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (get_settings().home / "mlartifacts" / name).as_uri()
    try:
        return c.create_experiment(name, artifact_location=location)
    except MlflowException:
        found = c.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def code_version() -> str:
    """The package version and git commit the code runs from, as one tag value."""
    found = saved_code_version()
    commit = found.get("commit")
    return f"{found.get('package')}+g{commit[:12]}" if commit else str(found.get("package"))


def fold_summary(folds: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean and standard deviation over folds of every figure all folds have (the rule of
    model.evaluate.summary.summarise): `<name>.mean`, `<name>.std`."""
    mean, std = summarise(list(folds))
    return {f"{name}.{stat}": of[name] for name in mean
            for stat, of in (("mean", mean), ("std", std))}


def per_class_csv(rows: list[dict[str, Any]]) -> str:
    """The per-class table as CSV; text cells (class names come from datasets) through
    model.data.names.csv_cell, so that none opens as a spreadsheet formula."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(csv_row(row) for row in rows)
    return buf.getvalue()


def class_names(classes: Iterable[str | tuple[str, str]]) -> list[str]:
    """Classes as 'exercise/label' names, whether given as names or (exercise, label) pairs."""
    return [c if isinstance(c, str) else class_name((c[0], c[1])) for c in classes]


def _metric_name(name: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces; anything else becomes _."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)


def _log_figures(prefix: str, figures: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({_metric_name(f"{prefix}.{k}"): v for k, v in figures.items()}, step=step)


def log_training_run(
    *,
    dataset: str,
    dataset_version: int | None,
    profile: str,
    params: Mapping[str, Any],
    skeleton: str,
    classes: Iterable[str | tuple[str, str]],
    folds: Iterable[Mapping[str, Any]] = (),
    gate: Mapping[str, Any] | None = None,
    confusion_png: Path | None = None,
    calibration: Mapping[str, Any] | None = None,
    code: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Log one training run and return its run id.

    `folds` are the cross-validation fold figures (one dict each, as model.evaluate.metrics'
    Evaluation.to_dict()), logged per fold (step = fold index, `cv.<name>`) and as mean and
    standard deviation; `gate` the gate-subject figures (`gate.<name>`), whose per-class table
    is logged as per_class.json / per_class.csv and as `gate.class.<class>.<figure>` metrics
    (a class name that is not plain as model.data.names.metric_key makes it); `calibration`
    the temperature and its ECE, Brier score and NLL before and after (`calibration.<name>`,
    calibration.json, and its reliability diagram when it names one as `reliability_png`).
    """
    experiment_id = ensure_experiment(dataset)
    folds = list(folds)
    run_tags = {
        "dataset": dataset,
        "dataset_version": "" if dataset_version is None else str(dataset_version),
        "code_version": code or code_version(),
        "profile": profile,
        "skeleton": skeleton,
        **(tags or {}),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        mlflow.log_params({"profile": profile, "dataset": dataset,
                           "dataset_version": dataset_version, **params})
        mlflow.log_dict({"skeleton": skeleton, "classes": class_names(classes)}, "classes.json")
        for i, fold in enumerate(folds):
            _log_figures("cv", scalar_figures(fold), step=i)
        if folds:
            summary = fold_summary(folds)
            _log_figures("cv", summary)
            mlflow.log_dict({"folds": folds, "summary": summary}, "cv.json")
        if gate is not None:
            _log_figures("gate", scalar_figures(gate))
            mlflow.log_dict(dict(gate), "gate.json")
            rows = list(gate.get("per_class") or [])
            if rows:
                mlflow.log_dict({"per_class": rows}, "per_class.json")
                mlflow.log_text(per_class_csv(rows), "per_class.csv")
                _log_figures("gate.class", {
                    f"{metric_key(row['class'])}.{k}": float(v) for row in rows
                    for k, v in row.items()
                    if k != "class" and isinstance(v, int | float)
                })
        if confusion_png is not None:
            mlflow.log_artifact(str(confusion_png))
        if calibration:
            _log_figures("calibration", scalar_figures(calibration))
            mlflow.log_dict(dict(calibration), "calibration.json")
            if calibration.get("reliability_png"):
                mlflow.log_artifact(str(calibration["reliability_png"]))
        return run.info.run_id


def log_drift_run(dataset: str, drift: Mapping[str, Any], page: str | None = None) -> str:
    """Log one drift report (flows.drift.DriftResult.to_dict()) as a run of the dataset's
    experiment: per exercise `drift.<exercise>.<figure>` and `.psi.<feature>`, `drift.seen`, the
    figures as drift.json and the page as an artifact when it is a local file."""
    metrics: dict[str, float] = {"drift.seen": float(bool(drift.get("drift_seen"))),
                                 "drift.n_scored": float(drift.get("n_scored") or 0)}
    for e in drift.get("exercises", []):
        key = f"drift.{metric_key(e['exercise'])}"
        metrics[f"{key}.drifted"] = float(len(e["drifted"]))
        for name in ("n_scored", "class_psi", "unsure_share"):
            metrics[f"{key}.{name}"] = e[name]
        for f in e["features"]:
            metrics[f"{key}.psi.{metric_key(f['feature'])}"] = f["psi"]
    finite = {_metric_name(k): float(v) for k, v in metrics.items()
              if v is not None and math.isfinite(float(v))}
    tags = {"dataset": dataset, "kind": "drift", "model_version": str(drift.get("model_version")),
            "code_version": code_version()}
    with mlflow.start_run(experiment_id=ensure_experiment(dataset), tags=tags,
                          run_name=f"drift-{dataset}") as run:
        mlflow.log_metrics(finite)
        mlflow.log_dict(dict(drift), "drift.json")
        if page and not storage.is_remote(page) and Path(page).is_file():
            mlflow.log_artifact(page)
        return run.info.run_id
