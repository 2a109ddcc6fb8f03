"""Decisions relative to a person's own reference, fitted and measured on held-out predictions.

A reference is a few of the person's repetitions known to be correct (done under a therapist's
eye at intake, say). A new body shifts the model's scores as a whole while it mostly keeps their
order, so a repetition is judged correct when its log-odds of being correct, minus the median of
the reference's, exceed a cut (model.serve.reference applies it). The cut is fitted here on the
cross-validation folds' held-out people (`fit_cut`), as the temperature is, never on the person
scored.

Per held-out person and exercise (`held_out_people`), the model's log-odds that each repetition is
the exercise's correct class. Two figures (`reference_figures`):
  - the best threshold for each person, chosen on that person's own labels: an upper bound that
    no method reaches;
  - the reference rule: each person scored on their repetitions other than `size` reference
    ones (drawn at random among their correct ones, averaged over `DRAWS` draws), with the cut
    fitted on the other people (cross-fitted).
"""


from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.data.labels import class_name
from model.serve.reference import log_odds
from model.settings import CORRECT

REFERENCE_SIZES = (1, 2, 3)
DRAWS = 50
FIT_DRAWS = 10  # draws of each other person's reference that the threshold is fitted on
SEED = 0


@dataclass(frozen=True)
class Person:
    """One held-out person doing one exercise: the log-odds that each repetition is correct,
    which ones are, and (where known) which ones the network alone calls correct (its most
    likely class is the correct one)."""

    log_odds: np.ndarray
    correct: np.ndarray
    said_correct: np.ndarray | None = None


def best_threshold_accuracy(person: Person) -> float:
    """The accuracy of the threshold on the log-odds that is best for this person's labels."""
    cut = best_cut(person.log_odds, person.correct)
    return float(np.mean((person.log_odds > cut) == person.correct))


def outside(person: Person, reference: np.ndarray) -> np.ndarray:
    """Which of the person's repetitions are not in the reference."""
    rest = np.ones(len(person.log_odds), bool)
    rest[reference] = False
    return rest


def relative(person: Person, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The log-odds of the repetitions outside the reference, minus the reference's median, and
    which of them are correct."""
    rest = outside(person, reference)
    return person.log_odds[rest] - np.median(person.log_odds[reference]), person.correct[rest]


def best_cut(values: np.ndarray, correct: np.ndarray) -> float:
    """The threshold on `values` with the highest accuracy (correct above it): one below them
    all, or halfway between two neighbouring values, the lowest of equals."""
    ordered = np.sort(values)
    cuts = np.concatenate([[ordered[0] - 1.0], (ordered[1:] + ordered[:-1]) / 2])
    right, wrong = np.sort(values[correct]), np.sort(values[~correct])
    hits = (len(right) - np.searchsorted(right, cuts, side="right")  # correct above the cut
            + np.searchsorted(wrong, cuts, side="right"))  # mistakes at or below it
    return float(cuts[int(np.argmax(hits))])


def draw_references(people: list[Person], size: int, draws: int, seed: int = SEED
                    ) -> list[list[np.ndarray]]:
    """`draws` random references of `size` correct repetitions for each person (of one fewer
    than their correct repetitions where they have no more than `size`)."""
    rng = np.random.default_rng(seed)
    return [[rng.choice(np.flatnonzero(p.correct), min(size, int(p.correct.sum()) - 1),
                        replace=False) for _ in range(draws)] for p in people]


def cut_on(people: list[Person], references: list[list[np.ndarray]]) -> float:
    """The cut on relative log-odds that is best over these people and references together."""
    pooled = [relative(p, ref) for p, refs in zip(people, references, strict=True)
              for ref in refs]
    return best_cut(np.concatenate([v for v, _ in pooled]), np.concatenate([c for _, c in pooled]))


def fit_cut(people: list[Person], sizes: tuple[int, ...] = REFERENCE_SIZES,
            draws: int = FIT_DRAWS) -> float | None:
    """The cut a model keeps: best over every person with two correct repetitions and a mistake,
    with references of each of `sizes` (smaller where a person has too few); None when there is
    no such person."""
    people = [p for p in people if p.correct.sum() >= 2 and (~p.correct).any()]
    if not people:
        return None
    drawn = [draw_references(people, size, draws, seed=SEED + size) for size in sizes]
    return cut_on([p for _ in sizes for p in people], [refs for d in drawn for refs in d])


def reference_accuracy(people: list[Person], size: int, draws: int = DRAWS,
                       seed: int = SEED) -> list[float]:
    """Each person's mean accuracy under the reference rule with `size` reference repetitions,
    the cut fitted on the other people."""
    references = draw_references(people, size, draws, seed)
    out = []
    for k, person in enumerate(people):
        others = [j for j in range(len(people)) if j != k]
        cut = cut_on([people[j] for j in others], [references[j][:FIT_DRAWS] for j in others])
        scored = [relative(person, ref) for ref in references[k]]
        out.append(float(np.mean([np.mean((v > cut) == c) for v, c in scored])))
    return out


def network_accuracy(people: list[Person], size: int, draws: int = DRAWS,
                     seed: int = SEED) -> list[float]:
    """Each person's mean accuracy of the network alone (`said_correct`) on the same repetitions
    the reference rule scores (`reference_accuracy` with the same arguments)."""
    references = draw_references(people, size, draws, seed)
    out = []
    for person, refs in zip(people, references, strict=True):
        rests = [outside(person, ref) for ref in refs]
        out.append(float(np.mean([np.mean(person.said_correct[r] == person.correct[r])
                                  for r in rests])))
    return out


def usable(people: list[Person]) -> list[Person]:
    """The people with more correct repetitions than the largest reference, and a mistake."""
    return [p for p in people if p.correct.sum() > max(REFERENCE_SIZES) and (~p.correct).any()]


def held_out_people(folds: list[dict]) -> list[Person]:
    """From the held-out predictions each fold recorded (model.evaluate.folds, "held"): one
    Person per fold and exercise with a correct class, over the repetitions of that exercise."""
    people = []
    for held in (f["held"] for f in folds if f.get("held")):
        classes = held["classes"]
        log_probs = np.asarray(held["log_probs"], np.float64).reshape(-1, len(classes))
        true = np.asarray(held["true"], np.int64)
        exercise_of = np.array([c.split("/", 1)[0] for c in classes])[true]
        for exercise in sorted(set(exercise_of.tolist())):
            name = class_name((exercise, CORRECT))
            if name not in classes:
                continue
            column, rows = classes.index(name), exercise_of == exercise
            people.append(Person(log_odds(log_probs[rows], column), true[rows] == column,
                                 log_probs[rows].argmax(axis=1) == column))
    return people


def reference_figures(people: list[Person]) -> dict[str, object]:
    """Mean accuracies over people of telling correct repetitions from mistakes: the per-person
    best threshold, and with each of REFERENCE_SIZES reference repetitions the reference rule
    (per person too) and, on the same repetitions, the network's own decision (when known for
    everyone); only {"people": 0} when no person has more correct repetitions than the largest
    reference and a mistake."""
    people = usable(people)
    if not people:
        return {"people": 0}
    best = [best_threshold_accuracy(p) for p in people]
    by_size = {size: reference_accuracy(people, size) for size in REFERENCE_SIZES}
    network = (None if any(p.said_correct is None for p in people)
               else {str(size): float(np.mean(network_accuracy(people, size)))
                     for size in REFERENCE_SIZES})
    return {"people": len(people), "network": network, "best_threshold": float(np.mean(best)),
            "reference": {str(size): float(np.mean(acc)) for size, acc in by_size.items()},
            "reference_per_person": {str(size): acc for size, acc in by_size.items()}}
