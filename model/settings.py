"""One settings object: paths, URIs and profiles, with environment overrides.

Every layer reads these plain values; nothing here imports Ray, MLflow or Prefect.
Dataset settings are data, on each dataset's card (model.data.card).
Environment: POSECOACH_HOME (default ./var), POSECOACH_LAKE, POSECOACH_REPORTS,
POSECOACH_PROFILE, POSECOACH_FPS, POSECOACH_GATE_<FIELD> (GateSettings;
POSECOACH_GATE_SUBJECTS_<NAME> overrides a card's gate subjects), POSECOACH_LIMIT_<FIELD>
(InputLimits), POSECOACH_UNSURE_THRESHOLD, POSECOACH_REVIEW_<FIELD> (ReviewSettings),
POSECOACH_DRIFT_<FIELD> (DriftSettings), POSECOACH_NOTIFY_URL, POSECOACH_KEEP_CV,
MLFLOW_TRACKING_URI, RAY_ADDRESS, PREFECT_API_URL.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from model.learn.config import TrainConfig, get_variant

CORRECT = "correct"


@dataclass(frozen=True)
class Profile:
    """How big a job is (`test`, `demo`, `nightly`): its training settings, the synthetic
    data's size and the parallelism."""

    name: str
    train: TrainConfig
    synth_subjects: int = 4
    synth_reps: int = 10
    train_workers: int = 1
    threads_per_fold: int = 1


PROFILES: dict[str, Profile] = {
    "test": Profile("test", TrainConfig(epochs=3, hidden=32), synth_subjects=4, synth_reps=2),
    # The demo keeps its last epoch's model after only 15 epochs: its learning rate comes down
    # every epoch (to 4 % by the last), or the weights kept are a snapshot of large steps.
    "demo": Profile("demo", TrainConfig(epochs=15, hidden=128, lr_decay=0.8, lr_step=1),
                    synth_subjects=4, synth_reps=8),
    "nightly": Profile("nightly", TrainConfig(epochs=50, hidden=256), synth_subjects=4,
                       synth_reps=8),
}


class DatasetRecipe(Protocol):
    """What a dataset's card (model.data.card.DatasetCard) asks of its trainings."""

    motion_only: bool | str
    beta: float
    average_tail: float
    label_smoothing: float


@dataclass(frozen=True)
class GateSettings:
    """The promotion gate's margins and floors (see registry/gate.py for the rules)."""

    macro_margin: float = 0.02
    correction_margin: float = 0.02
    class_drop: float = 0.3
    class_floor: float | None = 0.0
    floor_macro: float = 0.5
    floor_correction: float = 0.25
    min_correction_gain: float | None = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class InputLimits:
    """What one input file may hold, checked before it is read whole (model.data.formats):
    its size on disk and once decompressed, its frames, its coordinates and the characters of
    each of its text fields (subject, session_id, ...)."""

    max_file_mb: int = 256
    max_text_mb: int = 128
    max_frames: int = 1_000_000
    max_values: int = 50_000_000
    max_field_chars: int = 1_000

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ReviewSettings:
    """The review queue of a score run (model.serve.review): every unsure repetition and every
    exercise disagreement, `audit` confident ones drawn at random, at most `limit` in all."""

    audit: int = 5
    limit: int = 500

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DriftSettings:
    """When scored repetitions have drifted from training (model.evaluate.drift): a PSI at or
    above `psi` that is unlikely by chance (significance `alpha` over an exercise's tests)."""

    psi: float = 0.25
    alpha: float = 0.01

    def to_dict(self) -> dict:
        return asdict(self)


class SettingsError(ValueError):
    """An environment override that is not a value of its setting's kind."""


def _number(env: dict[str, str] | os._Environ, key: str, kind: type, default: float | None
            ) -> float | None:
    """The variable `key` as a finite number of `kind` (int or float), `default` when unset;
    SettingsError naming the variable and its value otherwise."""
    raw = env.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (kind is int and not value.is_integer()):
        article = "an integer" if kind is int else "a finite number"
        raise SettingsError(f"environment variable {key}={raw!r} is not {article}")
    return kind(value)


def _numbers_from(cls: type, prefix: str, env: dict[str, str] | os._Environ) -> object:
    """A dataclass of numbers with <prefix><FIELD> overrides ("none" clears a field)."""
    defaults = cls()
    values: dict[str, float | None] = {}
    for name in cls.__dataclass_fields__:
        key = f"{prefix}{name.upper()}"
        raw = env.get(key)
        if raw is not None:
            kind = int if isinstance(getattr(defaults, name), int) else float
            values[name] = None if raw.lower() == "none" else _number(env, key, kind, None)
    return cls(**values)


@dataclass(frozen=True)
class Settings:
    home: Path
    lake: str
    reports: str
    mlflow_uri: str
    ray_address: str | None
    prefect_api_url: str | None
    profile: str = "demo"
    fps: float = 30.0
    notify_url: str | None = None
    gate: GateSettings = field(default_factory=GateSettings)
    limits: InputLimits = field(default_factory=InputLimits)
    unsure_threshold: float = 0.6
    review: ReviewSettings = field(default_factory=ReviewSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    keep_cv: int = 3  # earlier cross-validation folders under home/cv kept (workers/cv.py)
    profiles: dict[str, Profile] = field(default_factory=lambda: dict(PROFILES))

    @property
    def quarantine(self) -> Path:
        return self.home / "quarantine"

    @property
    def models(self) -> Path:
        return self.home / "models"

    def get_profile(self, name: str | None = None) -> Profile:
        key = name or self.profile
        if key not in self.profiles:
            raise KeyError(f"unknown profile {key!r}; known: {', '.join(self.profiles)}")
        return self.profiles[key]

    def with_home(self, home: Path) -> Settings:
        """The same settings re-rooted at another home (paths and the default sqlite URI follow)."""
        return load_settings({**os.environ, "POSECOACH_HOME": str(home)})


def load_limits(env: dict[str, str] | os._Environ | None = None) -> InputLimits:
    """The input limits alone (POSECOACH_LIMIT_<FIELD>, os.environ by default): what every file
    read checks, without building the rest of the settings."""
    return _numbers_from(InputLimits, "POSECOACH_LIMIT_", os.environ if env is None else env)


def load_settings(env: dict[str, str] | os._Environ | None = None) -> Settings:
    """Build the settings from the environment (os.environ by default)."""
    env = os.environ if env is None else env
    home = Path(env.get("POSECOACH_HOME", "var")).resolve()
    return Settings(
        home=home,
        lake=env.get("POSECOACH_LAKE", str(home / "lake")),
        reports=env.get("POSECOACH_REPORTS", str(home / "reports")),
        mlflow_uri=env.get("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}"),
        ray_address=env.get("RAY_ADDRESS") or None,
        prefect_api_url=env.get("PREFECT_API_URL") or None,
        profile=env.get("POSECOACH_PROFILE", "demo"),
        fps=_number(env, "POSECOACH_FPS", float, Settings.fps),
        notify_url=env.get("POSECOACH_NOTIFY_URL") or None,
        gate=_numbers_from(GateSettings, "POSECOACH_GATE_", env),
        limits=load_limits(env),
        unsure_threshold=_number(env, "POSECOACH_UNSURE_THRESHOLD", float,
                                 Settings.unsure_threshold),
        review=_numbers_from(ReviewSettings, "POSECOACH_REVIEW_", env),
        drift=_numbers_from(DriftSettings, "POSECOACH_DRIFT_", env),
        keep_cv=_number(env, "POSECOACH_KEEP_CV", int, Settings.keep_cv),
    )


def get_settings() -> Settings:
    """Current settings, read afresh from the environment on each call."""
    return load_settings()


def run_config(profile: Profile, dataset: DatasetRecipe | None = None, *, variant: str = "full",
               seed: int = 0, device: str = "cpu", threads: int | None = None,
               **overrides: Any) -> TrainConfig:
    """The training configuration of one run, assembled here alone: the profile's settings
    (nightly = the paper's), what the dataset's card asks (motion_only, beta, average_tail,
    label_smoothing), the run's variant, seed, device and threads, then `overrides` (tests and
    benchmarks: epochs=1, ...). A variant without the smoothness term trains with smooth_weight
    0."""
    smooth = profile.train.smooth_weight if get_variant(variant).smoothness else 0.0
    run = {"variant": variant, "seed": seed, "device": device, "threads": threads,
           "smooth_weight": smooth}
    if dataset is not None:
        run.update(motion_only=dataset.motion_only, beta=dataset.beta,
                   average_tail=dataset.average_tail, label_smoothing=dataset.label_smoothing)
    return replace(profile.train, **{**run, **overrides})


__all__ = [
    "CORRECT",
    "PROFILES",
    "DatasetRecipe",
    "DriftSettings",
    "GateSettings",
    "InputLimits",
    "Profile",
    "ReviewSettings",
    "Settings",
    "get_settings",
    "load_limits",
    "load_settings",
    "run_config",
]


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """The environment variables `values` set (None: unset) for the block, and what was there
    before put back after it."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for key, value in values.items():
            _set_env(key, value)
        yield
    finally:
        for key, value in saved.items():
            _set_env(key, value)


def _set_env(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
