"""Label taxonomy. Labels are data: a model's classes are the (exercise, label) pairs it saw.

EC3D's raw label ids and names are here so that its pickle can be read and its classes put in
the paper's order; any other label from data is accepted as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from model.settings import CORRECT

EC3D_LABEL_NAMES: dict[int, str] = {
    1: CORRECT,
    2: "feet_too_wide",
    3: "knees_inward",
    4: "not_low_enough",
    5: "front_bent",
    6: "knee_passes_toe",
    7: "arched_back",
    8: "hunched_back",
    10: "unknown",
}
EC3D_EXERCISE_IDS: dict[int, str] = {0: "squat", 1: "lunge", 2: "plank"}
EC3D_EXERCISES: tuple[str, ...] = tuple(EC3D_EXERCISE_IDS.values())

EC3D_LABELS: dict[str, tuple[int, ...]] = {
    "squat": (1, 2, 3, 4, 5, 10),
    "lunge": (1, 4, 6),
    "plank": (1, 7, 8),
}

Class = tuple[str, str]


def ec3d_classes() -> list[Class]:
    """The paper's 12 classes in its order."""
    return [(ex, EC3D_LABEL_NAMES[i]) for ex in EC3D_EXERCISES for i in EC3D_LABELS[ex]]


def class_name(cls: Class) -> str:
    return f"{cls[0]}/{cls[1]}"


def classes_from(pairs: Iterable[Class]) -> list[Class]:
    """The classes present in data: EC3D's in the paper's order first, then the rest sorted."""
    present = set(pairs)
    known = [c for c in ec3d_classes() if c in present]
    rest = sorted(present - set(known))
    return known + rest


def correct_class(classes: list[Class], exercise: str) -> int:
    """Index of the exercise's correct class in `classes`; ValueError if the model has none."""
    return classes.index((exercise, CORRECT))


def without_correct(classes: Iterable[Class]) -> list[str]:
    """The exercises among `classes` that have no correct class: a model trained on them has
    nothing to correct their repetitions towards."""
    pairs = set(classes)
    return sorted({ex for ex, _ in pairs} - {ex for ex, label in pairs if label == CORRECT})


def no_correct_warning(exercises: list[str]) -> str | None:
    """The warning for exercises without a correct class, or None when there are none."""
    if not exercises:
        return None
    return (f"no {CORRECT!r} repetitions of {', '.join(exercises)}: a model trained on them "
            "cannot show how their repetitions should look, so their reports give no "
            f"corrections (label the correct repetitions {CORRECT!r})")
