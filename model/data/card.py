"""A dataset's card: the settings a dataset needs, kept as data beside its Delta table.

The card lives at `<dataset uri>/_posecoach_card.json` (a hidden name: Delta and vacuum leave
it alone). It holds the skeleton models train on, the subjects kept for the promotion gate
only, the training recipe (`motion_only`: true, false or "auto", chosen per training by an
inner leave-one-subject-out on its training subjects, model.learn.recipe; `beta`, the
correction term's weight), the exercises the dataset may hold (empty: whatever its data
brings) and how continuous sessions of each are cut into repetitions (model.serve.segment).

Every dataset gets the same default card when first ingested (`default_card`): the gate is the
last fifth of its subjects in natural order (at least one), the recipe is "auto" with beta 0.1.
A dataset made before cards existed reads as its default card until one is written
(`posecoach data create NAME`). POSECOACH_GATE_SUBJECTS_<NAME> overrides a card's gate.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from model.data import storage
from model.data.dataset import Dataset
from model.data.names import exercise_name, short_hash
from model.data.skeletons import CANONICAL, SKELETONS, SkeletonError, joint_map

CARD_FILE = "_posecoach_card.json"
FORMAT = 1
AUTO = "auto"
DEFAULT_BETA = 0.1
DEFAULT_AVERAGE_TAIL = 0.5
DEFAULT_LABEL_SMOOTHING = 0.1
GATE_SHARE = 0.2
SEGMENTERS = ("cycle", "excursion", "hold")
GATE_ENV = "POSECOACH_GATE_SUBJECTS_"


class CardError(ValueError):
    """A card that cannot be used; the message names the dataset and the problem."""


def natural_key(text: str) -> list:
    """'s2' before 's10': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


@dataclass(frozen=True)
class DatasetCard:
    """One dataset's settings (see the module docstring)."""

    name: str
    skeleton: str = "ec3d19"
    gate_subjects: tuple[str, ...] = ()
    motion_only: bool | str = AUTO
    beta: float = DEFAULT_BETA
    average_tail: float = DEFAULT_AVERAGE_TAIL
    label_smoothing: float = DEFAULT_LABEL_SMOOTHING
    exercises: tuple[str, ...] = ()
    segmentation: dict[str, str] = field(default_factory=dict)
    stored: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        where = f"dataset {self.name!r} card"
        if self.skeleton not in SKELETONS:
            raise CardError(f"{where}: unknown skeleton {self.skeleton!r} "
                            f"(known: {', '.join(sorted(SKELETONS))})")
        if self.motion_only not in (True, False, AUTO):
            raise CardError(f"{where}: motion_only must be true, false or {AUTO!r}, "
                            f"got {self.motion_only!r}")
        if not (isinstance(self.beta, int | float) and math.isfinite(self.beta)
                and self.beta >= 0):
            raise CardError(f"{where}: beta must be a number >= 0, got {self.beta!r}")
        if not (isinstance(self.average_tail, int | float) and 0 <= self.average_tail <= 1):
            raise CardError(f"{where}: average_tail must be a number in [0, 1], "
                            f"got {self.average_tail!r}")
        if not (isinstance(self.label_smoothing, int | float)
                and 0 <= self.label_smoothing < 1):
            raise CardError(f"{where}: label_smoothing must be a number in [0, 1), "
                            f"got {self.label_smoothing!r}")
        try:
            for ex in (*self.exercises, *self.segmentation):
                exercise_name(ex)
        except ValueError as exc:
            raise CardError(f"{where}: {exc}") from exc
        if bad := {e: s for e, s in self.segmentation.items() if s not in SEGMENTERS}:
            raise CardError(f"{where}: segmentation {bad} (known: {', '.join(SEGMENTERS)})")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["stored"]
        return {"format": FORMAT, **out, "gate_subjects": list(self.gate_subjects),
                "exercises": list(self.exercises)}

    def fingerprint(self) -> str:
        """A short hash of the card's content: every field reaches the model (its recipe, gate,
        skeleton, exercises and segmentation), so a changed card trains anew."""
        return short_hash(json.dumps(self.to_dict(), sort_keys=True))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DatasetCard:
        if d.get("format") != FORMAT:
            raise CardError(f"dataset {d.get('name')!r} card: format {d.get('format')!r}, "
                            f"expected {FORMAT}")
        known = {f.name for f in fields(cls)} - {"stored"}
        if extra := sorted(set(d) - known - {"format"}):
            raise CardError(f"dataset {d.get('name')!r} card: unknown fields {extra}")
        values = {k: v for k, v in d.items() if k in known}
        for key in ("gate_subjects", "exercises"):
            if key in values:
                values[key] = tuple(str(v) for v in values[key])
        return cls(**values)

    def problems(self, subjects: set[str], exercises: set[str], skeletons: set[str],
                 gate_required: bool = False) -> list[CardProblem]:
        """Every way the card does not fit its data (the `subjects`, `exercises` and stored
        `skeletons` it holds), each with the value that fixes it; an empty gate is one where
        `gate_required` (training needs a gate)."""
        found = (self._gate_problem(subjects, gate_required), self._exercises_problem(exercises),
                 self._skeleton_problem(skeletons))
        return [p for p in found if p is not None]

    def _gate_problem(self, subjects: set[str], required: bool) -> CardProblem | None:
        missing = [s for s in self.gate_subjects if s not in subjects]
        present = ", ".join(sorted(subjects, key=natural_key)) or "none"
        if missing:
            return CardProblem("gate_subjects", self._gate_fix(subjects),
                               f"names gate subjects {missing} that have no data (subjects "
                               f"present: {present})")
        if required and not self.gate_subjects:
            return CardProblem("gate_subjects", self._gate_fix(subjects),
                               f"names no gate subjects (subjects present: {present})")
        return None

    def _gate_fix(self, subjects: set[str]) -> tuple[str, ...]:
        """The card's gate subjects that have data, where two subjects are left to train on;
        else the default gate of the data (its last subject when it has too few for one)."""
        kept = tuple(s for s in self.gate_subjects if s in subjects)
        if kept and len(subjects) - len(kept) >= 2:
            return kept
        return default_gate(subjects) or tuple(sorted(subjects, key=natural_key)[-1:])

    def _exercises_problem(self, exercises: set[str]) -> CardProblem | None:
        """The card's exercises (when it lists any) against the data's: those it lacks and
        those the data also holds."""
        if not self.exercises:
            return None
        extra = sorted(exercises - set(self.exercises))
        missing = [e for e in self.exercises if e not in exercises]
        said = [*([f"lists exercises {missing} that the data does not hold"] if missing else []),
                *([f"lists exercises {list(self.exercises)}; the data also holds {extra}"]
                  if extra else [])]
        if not said:
            return None
        fix = (*(e for e in self.exercises if e in exercises), *extra)
        return CardProblem("exercises", fix, "; ".join(said) + " (exercises present: "
                                             f"{', '.join(sorted(exercises))})")

    def _skeleton_problem(self, stored: set[str]) -> CardProblem | None:
        """Rows stored in skeletons that cannot be mapped onto the card's."""
        if not (unmapped := sorted(s for s in stored if not maps_onto(s, self.skeleton))):
            return None
        fix = next((c for c in (CANONICAL, *sorted(stored))
                    if all(maps_onto(s, c) for s in stored)), CANONICAL)
        return CardProblem("skeleton", fix,
                           f"holds rows in skeleton(s) {unmapped}, which have no joint map onto "
                           f"skeleton {self.skeleton!r} (stored: {', '.join(sorted(stored))})")


@dataclass(frozen=True)
class CardProblem:
    """One way a card does not fit its data: the field, the value that fixes it, what is wrong."""

    field: str
    fix: Any
    text: str


def configure_option(key: str, value: Any) -> str:
    """The `posecoach data configure` option that sets a card field to a value (the inverse of
    parse_value)."""
    if isinstance(value, tuple):
        text = ",".join(value)
    elif isinstance(value, dict):
        text = ",".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, bool):
        text = str(value).lower()
    else:
        text = str(value)
    return f"--{key.replace('_', '-')} {shlex.quote(text)}"


def problems_error(name: str, problems: list[CardProblem], changes: dict[str, Any] | None = None,
                   version: int | None = None) -> CardError:
    """A CardError naming every problem of dataset `name`'s card (against its data, at `version`
    where given) with the option that fixes it, and one `posecoach data configure` command that
    fixes them all (with the `changes` asked for, where a problem does not replace them)."""
    fixes = {**(changes or {}), **{p.field: p.fix for p in problems}}
    at = "" if version is None else f" v{version}"
    said = [f"it {p.text}: set {configure_option(p.field, p.fix)}" for p in problems]
    if len(said) > 1:
        said = [f"({k}) {text}" for k, text in enumerate(said, 1)]
    command = " ".join(configure_option(k, v) for k, v in fixes.items())
    return CardError(f"dataset {name!r} card does not fit its data{at}"
                     f"{f' ({len(said)} problems)' if len(said) > 1 else ''}: {'; '.join(said)}. "
                     f"Fix {'them all' if len(said) > 1 else 'it'} with: posecoach data configure "
                     f"{name} {command}")


def maps_onto(source: str, target: str) -> bool:
    """Whether poses in skeleton `source` can be mapped onto skeleton `target`."""
    try:
        joint_map(source, target)
    except SkeletonError:
        return False
    return True


def default_gate(subjects: set[str]) -> tuple[str, ...]:
    """The last fifth of the subjects in natural order, at least one; none when fewer than
    three (training needs two subjects besides the gate)."""
    ordered = sorted(subjects, key=natural_key)
    if len(ordered) < 3:
        return ()
    return tuple(ordered[-max(1, round(GATE_SHARE * len(ordered))):])


def default_card(name: str, subjects: set[str] | None = None) -> DatasetCard:
    """The card every dataset starts with, its gate taken from the subjects it holds."""
    return DatasetCard(name, gate_subjects=default_gate(subjects or set()))


def card_uri(dataset_uri: str) -> str:
    return storage.join(dataset_uri, CARD_FILE)


def read_card(name: str, dataset_uri: str) -> DatasetCard | None:
    """The stored card of a dataset, or None when it has none."""
    uri = card_uri(dataset_uri)
    if not storage.exists(uri):
        return None
    try:
        raw = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as exc:
        raise CardError(f"{uri}: not a JSON card: {exc}") from exc
    card = DatasetCard.from_dict(raw)
    if card.name != name:
        raise CardError(f"{uri}: the card is for dataset {card.name!r}, not {name!r}")
    return replace(card, stored=True)


def write_card(card: DatasetCard, dataset_uri: str) -> DatasetCard:
    storage.write_text(card_uri(dataset_uri), json.dumps(card.to_dict(), indent=2) + "\n")
    return replace(card, stored=True)


def gate_override(name: str, env: dict[str, str] | os._Environ | None = None
                  ) -> tuple[str, ...] | None:
    """POSECOACH_GATE_SUBJECTS_<NAME>="s4,s5", when set."""
    raw = (os.environ if env is None else env).get(GATE_ENV + name.upper())
    if raw is None:
        return None
    return tuple(s.strip() for s in raw.split(",") if s.strip())


def with_env(card: DatasetCard, env: dict[str, str] | os._Environ | None = None
             ) -> DatasetCard:
    """The card with the environment's overrides applied."""
    gate = gate_override(card.name, env)
    return card if gate is None else replace(card, gate_subjects=gate)


def parse_value(key: str, raw: str) -> Any:
    """A card field's value from command-line text: lists comma-separated, segmentation as
    EXERCISE=cycle|excursion|hold pairs, motion_only true/false/auto, beta a number."""
    if key in ("gate_subjects", "exercises"):
        return tuple(s.strip() for s in raw.split(",") if s.strip())
    if key == "segmentation":
        pairs = [p.split("=", 1) for p in raw.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise CardError(f"segmentation {raw!r}: give EXERCISE=cycle|excursion|hold pairs")
        return {k.strip(): v.strip() for k, v in pairs}
    if key == "motion_only":
        words = {"true": True, "false": False, AUTO: AUTO}
        if raw.lower() not in words:
            raise CardError(f"motion_only {raw!r}: give true, false or {AUTO}")
        return words[raw.lower()]
    if key in ("beta", "average_tail", "label_smoothing"):
        try:
            return float(raw)
        except ValueError as exc:
            raise CardError(f"{key} {raw!r} is not a number") from exc
    return raw


def no_dataset(name: str) -> str:
    """Why a dataset with neither data nor a card has no card to show or change."""
    return (f"dataset {name!r} does not exist (no data, no card): ingest data into it "
            f"(posecoach ingest FILES --dataset {name}) or make its card first "
            f"(posecoach data create {name})")


def dataset_subjects(dataset: Dataset) -> set[str]:
    """The subjects a dataset holds now (none when it does not exist yet)."""
    if not dataset.exists():
        return set()
    return {str(s) for s in dataset.read_table(columns=["subject"]).column("subject").to_pylist()}


def load_card(dataset: Dataset) -> DatasetCard:
    """The dataset's card with the environment's overrides: the stored one, else the default
    card from its data (`stored` False: `posecoach data create` writes it)."""
    card = read_card(dataset.name, dataset.uri)
    if card is None:
        card = default_card(dataset.name, dataset_subjects(dataset))
    return with_env(card)


def ensure_card(dataset: Dataset) -> DatasetCard:
    """Write the default card of a dataset that has data and no card yet; returns its card."""
    card = read_card(dataset.name, dataset.uri)
    if card is None and dataset.exists():
        card = write_card(default_card(dataset.name, dataset_subjects(dataset)), dataset.uri)
    return with_env(card) if card is not None else load_card(dataset)


def data_problems(dataset: Dataset, card: DatasetCard) -> list[CardProblem]:
    """Every way `card` does not fit the dataset's data (none without data)."""
    if not dataset.exists():
        return []
    table = dataset.read_table(columns=["subject", "exercise", "skeleton"])
    return card.problems(*({str(v) for v in table.column(c).to_pylist()}
                           for c in ("subject", "exercise", "skeleton")))


def save_card(dataset: Dataset, card: DatasetCard, changes: dict[str, Any] | None = None
              ) -> DatasetCard:
    """Check a card against the dataset's data (its gate subjects, exercises and skeletons) and
    store it; a CardError naming every problem, with one command fixing them and the `changes`
    asked for, where it does not fit."""
    if card.name != dataset.name:
        raise CardError(f"card for {card.name!r} given to dataset {dataset.name!r}")
    if problems := data_problems(dataset, card):
        raise problems_error(dataset.name, problems, changes)
    return write_card(card, dataset.uri)


def create_card(dataset: Dataset, **changes: Any) -> DatasetCard:
    """The dataset's default card with `changes`, checked and stored (before its data too);
    CardError when it already has a card."""
    if read_card(dataset.name, dataset.uri) is not None:
        raise CardError(f"dataset {dataset.name!r} already has a card; change it with "
                        f"posecoach data configure {dataset.name} ...")
    return _changed(dataset, default_card(dataset.name, dataset_subjects(dataset)), changes)


def configure(dataset: Dataset, **changes: Any) -> DatasetCard:
    """The dataset's card (stored, else default) with `changes`, checked and stored; CardError
    for a dataset with neither data nor a card (`posecoach data create` makes one first)."""
    stored = read_card(dataset.name, dataset.uri)
    if stored is None and not dataset.exists():
        raise CardError(no_dataset(dataset.name))
    return _changed(dataset, stored or default_card(dataset.name, dataset_subjects(dataset)),
                    changes)


def _changed(dataset: Dataset, base: DatasetCard, changes: dict[str, Any]) -> DatasetCard:
    """`base` with `changes`, checked and stored."""
    allowed = {f.name for f in fields(DatasetCard)} - {"name", "stored"}
    if unknown := sorted(set(changes) - allowed):
        raise CardError(f"dataset {dataset.name!r} card has no fields {unknown}")
    return save_card(dataset, replace(base, **changes), changes)
