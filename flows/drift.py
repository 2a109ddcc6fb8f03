"""The drift report: do the repetitions scored since the last retrain look like the champion's
training data? Per exercise (model.evaluate.drift): the predicted class mix against the training
mix, the share of unsure repetitions, and movement features compared by PSI and KS.

The score flow stores each scored repetition's movement features (of its normalised poses) in
the repetitions table (`features`, JSON); the training side is the champion's dataset version,
normalised the champion's way. `posecoach drift` and each retrain write an HTML page with the
plots under `<reports>/drift/`, log the figures to MLflow and print a warning line when drift is
seen. A training version purged since (TrainingDataGone) is not replaced by another: drift
then fails with a line naming it, and a retrain records that line and goes on.
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
from deltalake import DeltaTable

from flows.output import console
from model.data import storage
from model.data.dataset import Dataset
from model.data.names import html_text, safe_file_name
from model.data.sequence import Sequence, SequenceError
from model.data.skeletons import get_skeleton
from model.evaluate.drift import ExerciseDrift, Observation, compare
from model.evaluate.features import movement_features_many
from model.evaluate.plots import plot_drift
from model.learn.saved import TrainedModel
from model.serve.scoring import normalize_valid
from model.settings import get_settings
from registry.lookup import find_versions, saved_model_dir
from registry.tracking import log_drift_run
from registry.versions import CHAMPION, alias_version, get_version, model_name

TABLE = "repetitions"  # the score flow's table under the reports folder
DRIFT_DIR = "drift"
PLOTTED = 6  # features per exercise on the page: those of the largest PSI
UNREADABLE = ("no_version", "purged_version")  # SequenceError kinds of a version gone


class DriftError(RuntimeError):
    """A drift report that cannot be made (no champion to compare with, or its training data
    cannot be read any more)."""


class TrainingDataGone(DriftError):
    """The model's training version of the dataset cannot be read any more (its files purged)."""


def training_observations(model: TrainedModel, seqs: list[Sequence]) -> list[Observation]:
    """The training side: each sequence's true label and the features of its normalised poses."""
    poses, _ = normalize_valid(model, seqs)
    joints = get_skeleton(model.normalization.skeleton).joints
    features = movement_features_many(poses, joints, model.normalization.fps)
    return [Observation(s.exercise, s.label, f) for s, f in zip(seqs, features, strict=True)]


def scored_observations(reports: str, model_name: str, since: datetime | None
                        ) -> list[Observation]:
    """The repetitions scored by `model_name` (any version) at or after `since`."""
    uri = storage.join(reports, TABLE)
    if not DeltaTable.is_deltatable(uri):
        return []
    table = DeltaTable(uri)
    names = set(table.schema().to_arrow().names)
    columns = [c for c in ("exercise", "label", "unsure", "features", "scored_at", "model")
               if c in names]
    after = "" if since is None else since.astimezone(UTC).isoformat(timespec="seconds")
    out = []
    for row in table.to_pyarrow_table(columns=columns).to_pylist():
        if row.get("model") != model_name or (row.get("scored_at") or "") < after:
            continue
        if row.get("label") is None:
            continue
        out.append(Observation(row["exercise"], row["label"],
                               json.loads(row.get("features") or "{}"), bool(row.get("unsure"))))
    return out


@dataclass
class DriftResult:
    """One comparison: what was compared, per exercise its figures, and whether drift was seen."""

    dataset: str
    model: str
    model_version: str | None
    dataset_version: int | None
    since: str | None
    n_train: int
    n_scored: int
    exercises: list[dict] = field(default_factory=list)
    page: str | None = None
    run_id: str | None = None

    @property
    def seen(self) -> dict[str, list[str]]:
        """Per drifted exercise, what shifted."""
        return {e["exercise"]: e["drifted"] for e in self.exercises if e["drifted"]}

    @property
    def warning(self) -> str | None:
        if not self.seen:
            return None
        parts = "; ".join(f"{ex}: {', '.join(what)}" for ex, what in self.seen.items())
        return (f"warning: drift since {self.since or 'the start'} in {len(self.seen)} "
                f"exercise(s) of {self.dataset} ({parts})")

    def to_dict(self) -> dict:
        return {**asdict(self), "drift_seen": bool(self.seen), "drifted": self.seen,
                "warning": self.warning}


def training_sequences(ds: Dataset, version: int | None, model: str) -> list[Sequence]:
    """The rows of `ds` at `version` (the model's training data); TrainingDataGone when that
    version cannot be read any more."""
    try:
        return ds.read(version=version)
    except SequenceError as exc:
        if exc.kind not in UNREADABLE:
            raise
        raise TrainingDataGone(
            f"{model} was trained on version {version} of dataset {ds.name!r}, whose files were "
            "purged (data delete-subject --purge or data vacuum): drift cannot be measured "
            "against its training data. posecoach retrain trains on the current version "
            f"({ds.version()}); once the gate promotes that model, drift is measured against "
            "its training data") from exc


def drift_report(model: TrainedModel, model_name: str, model_version: str | None,
                 dataset: str, reports: str | None = None, since: datetime | None = None,
                 ) -> DriftResult:
    """Compare what was scored since `since` with the model's training data (its dataset
    version, not read when nothing was scored); write the HTML page (MLflow: check_drift).
    TrainingDataGone when something was scored and that version cannot be read any more."""
    settings = get_settings()
    reports = reports or settings.reports
    version = model.meta.get("dataset_version")
    scored = scored_observations(reports, model_name, since)
    ds = Dataset(dataset)
    train_seqs = (training_sequences(ds, version, f"{model_name} v{model_version or '?'}")
                  if scored and ds.exists() and ds.version() is not None else [])
    train = training_observations(model, train_seqs) if train_seqs else []
    found = compare(train, scored, settings.drift.psi, settings.drift.alpha)
    result = DriftResult(dataset=dataset, model=model_name, model_version=model_version,
                         dataset_version=version,
                         since=None if since is None else since.isoformat(timespec="seconds"),
                         n_train=len(train), n_scored=len(scored),
                         exercises=[d.to_dict() for d in found])
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    uri = storage.join(reports, DRIFT_DIR, f"{safe_file_name(dataset)}-{stamp}.html")
    result.page = storage.write_text(uri, drift_page(result, found, train, scored))
    return result


def _values(obs: list[Observation], exercise: str, feature: str) -> np.ndarray:
    return np.array([o.features[feature] for o in obs
                     if o.exercise == exercise and feature in o.features], float)


def _plot(d: ExerciseDrift, train: list[Observation], scored: list[Observation]) -> str:
    """The exercise's most shifted features as a PNG data URI ("" when none was compared)."""
    top = sorted(d.features, key=lambda f: -f.psi)[:PLOTTED]
    if not top:
        return ""
    buf = io.BytesIO()
    plot_drift({f.feature: _values(train, d.exercise, f.feature) for f in top},
               {f.feature: _values(scored, d.exercise, f.feature) for f in top}, buf,
               f"{d.exercise}: training against scored")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _num(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def drift_page(result: DriftResult, found: list[ExerciseDrift], train: list[Observation],
               scored: list[Observation]) -> str:
    """The drift report as one HTML page, plots embedded."""
    esc = html_text
    head = (f"<h1>Drift of {esc(result.dataset)}</h1><p>model {esc(result.model)} "
            f"v{esc(result.model_version or '?')}, trained on dataset version "
            f"{esc(result.dataset_version)}; {result.n_scored} repetitions scored since "
            f"{esc(result.since or 'the start')} against {result.n_train} training ones</p>")
    warn = f"<p class='warn'>{esc(result.warning)}</p>" if result.warning else (
        "<p>no drift seen</p>")
    parts = []
    for d in found:
        rows = "".join(
            f"<tr{' class=warn' if f.feature in d.drifted else ''}><td>{esc(f.feature)}</td>"
            f"<td>{_num(f.psi)}</td><td>{_num(f.ks)}</td><td>{_num(f.p_value)}</td>"
            f"<td>{_num(f.train_median)}</td><td>{_num(f.scored_median)}</td></tr>"
            for f in sorted(d.features, key=lambda f: -f.psi))
        plot = _plot(d, train, scored)
        parts.append(
            f"<h2>{esc(d.exercise)}</h2><p>{d.n_train} training, {d.n_scored} scored; "
            f"class mix PSI {_num(d.class_psi)} (p {_num(d.class_p_value)}): training "
            f"{esc(json.dumps(d.train_mix))}, scored {esc(json.dumps(d.scored_mix))}; unsure "
            f"{_num(d.unsure_share)}; drifted: {esc(', '.join(d.drifted) or 'nothing')}</p>"
            + (f"<img alt='features of {esc(d.exercise)}' src='{plot}'>" if plot else "")
            + "<table><tr><th>feature</th><th>PSI</th><th>KS</th><th>p</th>"
              f"<th>training median</th><th>scored median</th></tr>{rows}</table>")
    style = ("body{font-family:sans-serif;margin:2em}.warn{color:#b00;font-weight:bold}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>drift "
            f"{esc(result.dataset)}</title><style>{style}</style></head><body>{head}{warn}"
            f"{''.join(parts)}</body></html>")


def last_retrain(name: str) -> datetime | None:
    """When the newest version of `name` was registered (None: never)."""
    versions = find_versions(name)
    if not versions:
        return None
    return datetime.fromtimestamp(get_version(name, versions[-1]).creation_timestamp / 1000, UTC)


def check_drift(dataset: str, since: datetime | None = None, reports: str | None = None
                ) -> DriftResult:
    """The drift of what was scored since `since` (default: the last retrain) from the
    champion's training data: page written, figures logged to MLflow."""
    name = model_name(dataset)
    version = alias_version(name, CHAMPION)
    if version is None:
        raise DriftError(f"{name} has no champion to compare with: train and promote a model "
                         "first (posecoach retrain)")
    folder = saved_model_dir(name, version, get_settings().home / "registry")
    result = drift_report(TrainedModel.load(folder), name, version, dataset, reports,
                          since or last_retrain(name))
    result.run_id = log_drift_run(dataset, result.to_dict(), result.page)
    return result


def nightly_drift(dataset: str) -> dict:
    """What a retrain records of drift before it trains: the summary of check_drift, a warning
    line printed when drift is seen; without a champion, nothing to compare; when the
    champion's training data was purged, a line saying that drift was not measured and why
    (the retrain goes on)."""
    try:
        result = check_drift(dataset)
    except DriftError as exc:
        if isinstance(exc, TrainingDataGone):
            console.print(f"[yellow]drift not measured[/yellow]: {exc}")
        return {"drift_seen": False, "reason": str(exc)}
    if result.warning:
        console.print(f"[red]{result.warning}[/red] (see {result.page})")
    return {"drift_seen": bool(result.seen), "drifted": result.seen, "warning": result.warning,
            "since": result.since, "n_scored": result.n_scored, "page": result.page,
            "run_id": result.run_id}
