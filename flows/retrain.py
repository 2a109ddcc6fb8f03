"""The retrain flow: pin the dataset version -> leave-one-subject-out cross-validation on Ray ->
final training of the model and its independent judge -> gate figures of candidate and champion
-> log to MLflow from the driver -> register as challenger -> the gate promotes or refuses.

Idempotent per training identity: the dataset version, the profile, the seed and the card's
content (its fingerprint); a second run with all four unchanged registers nothing, a changed
card or seed trains anew.
At most one retrain per dataset runs at a time on this machine (a lock file under
POSECOACH_HOME; deployments also carry a concurrency limit of one). Tasks retry only on
failures a retry can mend (I/O, lost Ray workers), never on a deterministic one.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray.exceptions
from prefect import flow, task
from prefect.cache_policies import NONE

from flows.confidence import fit_on_folds, fit_reference, on_gate
from flows.drift import nightly_drift
from model.data.card import CardError, DatasetCard, load_card, problems_error
from model.data.dataset import Dataset
from model.data.normalize import Normalization
from model.data.sequence import Sequence
from model.evaluate.calibration import Held
from model.evaluate.folds import judge_config_for
from model.evaluate.metrics import evaluate
from model.evaluate.plots import plot_confusion
from model.learn.config import TrainConfig
from model.learn.saved import TrainedModel
from model.serve.reference import REFERENCE_CUT_KEY, REFERENCE_CV_KEY
from model.serve.scoring import SEGMENTATION_KEY
from model.settings import get_settings, run_config
from registry.access import server_errors
from registry.gate import NIGHTLY_ACTOR, promote
from registry.lookup import find_versions, saved_model_dir
from registry.pyfunc import log_packaged_model
from registry.tracking import code_version, log_training_run
from registry.versions import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    get_version,
    model_name,
    register_candidate,
    set_alias,
)
from workers.cv import cross_validate
from workers.train import train_final

TRANSIENT = (OSError, TimeoutError, ConnectionError, ray.exceptions.RayError)


class RetrainError(RuntimeError):
    """A retrain that cannot be done (no data, no gate subjects, one already running)."""


def retry_helps(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry transient failures only."""
    return isinstance(state.result(raise_on_failure=False), TRANSIENT)


@contextmanager
def dataset_lock(dataset: str) -> Iterator[None]:
    """Hold the retrain lock of `dataset`, or raise RetrainError when another run holds it."""
    folder = get_settings().home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"retrain-{dataset}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RetrainError(f"a retrain of dataset {dataset!r} is already running") from exc
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class RetrainResult:
    dataset: str
    dataset_version: int | None
    profile: str
    status: str
    model: str
    version: str | None = None
    decision: dict = field(default_factory=dict)
    cv_mean: dict = field(default_factory=dict)
    cv_std: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    champion_gate: dict | None = None
    calibration: dict = field(default_factory=dict)
    reference: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)
    run_id: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


_retrying = dict(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_helps,
                 cache_policy=NONE)


@task(name="pin-dataset", **_retrying)
def pin_dataset(dataset: str) -> int:
    version = Dataset(dataset).version()
    if version is None:
        raise RetrainError(f"dataset {dataset!r} is empty: ingest data first (posecoach ingest)")
    return version


@task(name="load-sequences", **_retrying)
def load_sequences(dataset: str, version: int) -> list[Sequence]:
    return Dataset(dataset).read(version=version)


@task(name="cross-validate", **_retrying)
def run_cross_validation(train_seqs: list[Sequence], config: TrainConfig, threads: int,
                         norm: Normalization) -> dict:
    return cross_validate(train_seqs, config, threads_per_fold=threads, norm=norm).to_dict()


@task(name="final-training", **_retrying)
def final_training(train_seqs: list[Sequence], config: TrainConfig, workers: int,
                   norm: Normalization, folder: Path, meta: dict,
                   temperature: float = 1.0) -> Path:
    trained = train_final(train_seqs, config, workers=workers, norm=norm, progress=False)
    trained.meta.update(meta)
    trained.temperature = temperature
    return trained.save(folder)


@task(name="gate-figures", cache_policy=NONE)
def gate_figures(candidate_dir: Path, judge_dir: Path, champion_dir: Path | None,
                 gate_seqs: list[Sequence], plot_path: Path
                 ) -> tuple[dict, dict | None, Held | None]:
    """Candidate and champion on the gate subjects: same sequences, the newest judge; and the
    candidate's raw held-out predictions there (for its calibration figures)."""
    judge = TrainedModel.load(judge_dir)
    candidate = evaluate(TrainedModel.load(candidate_dir), gate_seqs, judge)
    plot_confusion(candidate, plot_path)
    champion = None
    if champion_dir is not None:
        champion = evaluate(TrainedModel.load(champion_dir), gate_seqs, judge).to_dict()
    return candidate.to_dict(), champion, candidate.held


@task(name="register", **_retrying)
def log_and_register(result: RetrainResult, config: TrainConfig, folds: list[dict],
                     model_dir: Path, confusion: Path, example: Sequence,
                     skeleton: str, classes: list, identity: dict[str, str]
                     ) -> tuple[str, str]:
    run_id = log_training_run(
        dataset=result.dataset, dataset_version=result.dataset_version, profile=result.profile,
        params=config.to_dict(), skeleton=skeleton, classes=classes, folds=folds,
        gate=result.gate, confusion_png=confusion, calibration=result.calibration,
        run_name=f"retrain-{result.dataset}-v{result.dataset_version}",
    )
    info = log_packaged_model(run_id, model_dir, example)
    version = register_candidate(
        info.model_uri, result.dataset, dataset_version=result.dataset_version,
        code_version=code_version(), skeleton=skeleton, classes=classes,
        cv=result.cv_mean, gate=result.gate,
        tags={**identity, "run_id": run_id},
    )
    return run_id, version


def training_identity(version: int, profile: str, seed: int, card: DatasetCard
                      ) -> dict[str, str]:
    """What decides a retrain's model, as the registered version's tags: the dataset version,
    the profile, the seed and the card's fingerprint."""
    return {"dataset_version": str(version), "profile": profile, "seed": str(seed),
            "card": card.fingerprint()}


def finish_registered(result: RetrainResult, version: str, identity: dict[str, str],
                      actor: str, models: Path) -> RetrainResult:
    """An earlier run registered `version` with the same training identity: skipped when its
    gate decision is on it; when that run stopped before the gate (the MLflow server went
    away), the version's artifacts are checked and the gate decides now, on the figures
    recorded at registration."""
    result.version = version
    if get_version(result.model, version).tags.get("gate.decision"):
        result.decision = {"reason": (
            f"dataset version {identity['dataset_version']}, profile {identity['profile']}, "
            f"seed {identity['seed']} and this card (fingerprint {identity['card']}) already "
            f"trained as {result.model} v{version}")}
        return result
    saved_model_dir(result.model, version, models / "registered")
    set_alias(result.model, CHALLENGER, version)
    decision = promote(result.model, version, actor=actor)
    result.decision = decision.to_dict()
    result.status = "promoted" if decision.promoted else "not promoted"
    return result


def check_card(card: DatasetCard, seqs: list[Sequence], version: int) -> None:
    """RetrainError where the card cannot train on `seqs` (a gate without data, or none; a
    skeleton the rows do not map onto), naming every problem of the card with one command that
    fixes them all; exercises it lists that the data lacks do not stop a training."""
    problems = card.problems({s.subject for s in seqs}, {s.exercise for s in seqs},
                             {s.skeleton for s in seqs}, gate_required=True)
    if any(p.field != "exercises" for p in problems):
        raise RetrainError(str(problems_error(card.name, problems, version=version)))


def split_gate(seqs: list[Sequence], gate_subjects: tuple[str, ...]) -> tuple[list, list]:
    train = [s for s in seqs if s.subject not in gate_subjects]
    gate = [s for s in seqs if s.subject in gate_subjects]
    return train, gate


@flow(name="retrain")
def retrain_flow(dataset: str = "ec3d", profile: str | None = None, seed: int = 0,
                 actor: str = NIGHTLY_ACTOR) -> dict:
    """Retrain, register and (through the gate) promote the model of one dataset."""
    began = time.perf_counter()
    settings = get_settings()
    prof = settings.get_profile(profile)
    try:
        card = load_card(Dataset(dataset))
    except CardError as exc:
        raise RetrainError(str(exc)) from exc
    name = model_name(dataset)
    with dataset_lock(dataset), server_errors():
        version = pin_dataset(dataset)
        result = RetrainResult(dataset=dataset, dataset_version=version, profile=prof.name,
                               status="skipped", model=name)
        result.drift = nightly_drift(dataset)
        identity = training_identity(version, prof.name, seed, card)
        if done := find_versions(name, **identity):
            return finish_registered(result, done[-1], identity, actor,
                                     settings.models).to_dict()
        seqs = load_sequences(dataset, version)
        check_card(card, seqs, version)
        train_seqs, gate_seqs = split_gate(seqs, card.gate_subjects)
        if len({s.subject for s in train_seqs}) < 2:
            raise RetrainError(f"dataset {dataset!r} v{version} needs at least two training "
                               "subjects besides the gate subjects")
        config = run_config(prof, card, seed=seed, threads=prof.threads_per_fold)
        norm = Normalization(skeleton=card.skeleton, fps=settings.fps)
        cv = run_cross_validation(train_seqs, config, prof.threads_per_fold, norm)
        result.cv_mean, result.cv_std = cv["mean"], cv["std"]
        calibration = fit_on_folds(cv)
        result.reference = fit_reference(cv)
        folder = settings.models / dataset / f"v{version}-{time.strftime('%Y%m%d-%H%M%S')}"
        meta = {"dataset": dataset, "dataset_version": version, "profile": prof.name, "seed": seed,
                "card": card.to_dict(), SEGMENTATION_KEY: dict(card.segmentation),
                REFERENCE_CUT_KEY: result.reference["cut"],
                REFERENCE_CV_KEY: {k: result.reference["cv"].get(k)
                                   for k in ("network", "reference")}}
        model_run = final_training.submit(train_seqs, config, prof.train_workers, norm,
                                          folder / "model", meta, calibration["temperature"])
        judge_run = final_training.submit(train_seqs, judge_config_for(config), 1, norm,
                                          folder / "judge", meta)
        model_dir, judge_dir = model_run.result(), judge_run.result()
        current = alias_version(name, CHAMPION)
        champion_dir = (saved_model_dir(name, current, folder / "champion")
                        if current is not None else None)
        result.gate, result.champion_gate, gate_held = gate_figures(
            model_dir, judge_dir, champion_dir, gate_seqs, folder / "confusion_matrix.png")
        result.calibration = on_gate(calibration, gate_held, folder / "reliability.png")
        candidate = TrainedModel.load(model_dir)
        result.run_id, result.version = log_and_register(
            result, config, [f["metrics"]["evaluation"] for f in cv["folds"]], model_dir,
            folder / "confusion_matrix.png", gate_seqs[0], card.skeleton,
            list(candidate.classes), identity)
        decision = promote(name, result.version, candidate=result.gate,
                           champion=result.champion_gate, actor=actor)
        result.decision = decision.to_dict()
        result.status = "promoted" if decision.promoted else "not promoted"
    result.seconds = time.perf_counter() - began
    return result.to_dict()
