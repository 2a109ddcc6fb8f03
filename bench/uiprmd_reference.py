"""What a person's own reference squats would give the full model: another protocol than the
LOSO figure, in which a few of the held-out person's squats are known to be correct (say, done
under a therapist's eye at intake). Nothing here is a posecoach setting; it measures how much of
the error a threshold that fits the person would remove.

Per held-out person, the full model's log-odds that each squat is correct. Two figures:
  - the best threshold for each person, chosen on that person's own labels: an upper bound that
    no method reaches;
  - the reference rule: a squat is called correct when its log-odds minus the median log-odds
    of `size` reference squats (drawn at random among the person's correct ones) exceed a
    threshold; the threshold is the one that is best over the other people (cross-fitted, never
    on the person scored), and each person is scored on their squats other than the reference,
    averaged over `DRAWS` draws of the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REFERENCE_SIZES = (1, 2, 3)
DRAWS = 50
FIT_DRAWS = 10  # draws of each other person's reference that the threshold is fitted on
SEED = 0


@dataclass(frozen=True)
class Person:
    """One held-out person: the log-odds that each squat is correct, and which ones are."""

    log_odds: np.ndarray
    correct: np.ndarray


def log_odds(log_probs: np.ndarray, column: int) -> np.ndarray:
    """log(p / (1 - p)) of one class's probability, p kept away from 0 and 1."""
    p = np.clip(np.exp(log_probs[:, column]), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def best_threshold_accuracy(person: Person) -> float:
    """The accuracy of the threshold on the log-odds that is best for this person's labels."""
    cut = best_cut(person.log_odds, person.correct)
    return float(np.mean((person.log_odds > cut) == person.correct))


def relative(person: Person, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The log-odds of the squats outside the reference, minus the reference's median, and
    which of them are correct."""
    rest = np.ones(len(person.log_odds), bool)
    rest[reference] = False
    return person.log_odds[rest] - np.median(person.log_odds[reference]), person.correct[rest]


def best_cut(values: np.ndarray, correct: np.ndarray) -> float:
    """The threshold on `values` with the highest accuracy (correct above it): one below them
    all, or halfway between two neighbouring values, the lowest of equals."""
    ordered = np.sort(values)
    cuts = np.concatenate([[ordered[0] - 1.0], (ordered[1:] + ordered[:-1]) / 2])
    hits = [np.mean((values > c) == correct) for c in cuts]
    return float(cuts[int(np.argmax(hits))])


def reference_accuracy(people: list[Person], size: int, draws: int = DRAWS,
                       seed: int = SEED) -> list[float]:
    """Each person's mean accuracy under the reference rule with `size` reference squats."""
    rng = np.random.default_rng(seed)
    references = [[rng.choice(np.flatnonzero(p.correct), size, replace=False)
                   for _ in range(draws)] for p in people]
    out = []
    for k, person in enumerate(people):
        pooled = [relative(other, ref) for j, other in enumerate(people) if j != k
                  for ref in references[j][:FIT_DRAWS]]
        cut = best_cut(np.concatenate([v for v, _ in pooled]),
                       np.concatenate([c for _, c in pooled]))
        scored = [relative(person, ref) for ref in references[k]]
        out.append(float(np.mean([np.mean((v > cut) == c) for v, c in scored])))
    return out


def reference_figures(people: list[Person]) -> dict[str, object]:
    """Mean accuracies over people: the per-person best threshold, and the reference rule with
    each of REFERENCE_SIZES reference squats (per person too)."""
    usable = [p for p in people if p.correct.sum() > max(REFERENCE_SIZES) and (~p.correct).any()]
    best = [best_threshold_accuracy(p) for p in usable]
    by_size = {size: reference_accuracy(usable, size) for size in REFERENCE_SIZES}
    return {"people": len(usable), "best_threshold": float(np.mean(best)),
            "reference": {str(size): float(np.mean(acc)) for size, acc in by_size.items()},
            "reference_per_person": {str(size): acc for size, acc in by_size.items()}}
