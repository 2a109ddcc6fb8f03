"""Decisions relative to a person's own reference: a few of their repetitions known to be correct.

A body the model has never seen shifts its scores as a whole while mostly keeping their order
(docs/real-data.md). With a reference, a repetition of an exercise the reference holds is judged
correct when its log-odds of being the exercise's correct class, minus the median of the
reference repetitions' (the person's offset), exceed the model's cut, fitted on its
cross-validation's held-out people (model.evaluate.reference) and kept in its meta under
`REFERENCE_CUT_KEY`. Otherwise the repetition gets the exercise's most likely mistake. The
probabilities are redistributed to match: within the exercise, the correct class gets the share
sigmoid(log-odds - offset - cut) of the exercise's probability and the mistakes the rest, in
their own proportions; other exercises' probabilities stay. Repetitions of exercises the
reference lacks are decided as without one.

A scoring run holds its references in `References`: one for everyone, or one per person
(subject), each upload judged against its person's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from model.data.labels import Class
from model.settings import CORRECT

REFERENCE_CUT_KEY = "reference_cut"
REFERENCE_CV_KEY = "reference_cv"  # meta: the rule's and the network's figures on the CV


class ReferenceUnusable(ValueError):
    """A reference that cannot be used: no repetition, an exercise without a correct class, or a
    model without a fitted cut."""


@dataclass(frozen=True)
class Reference:
    """Per exercise, the median log-odds of the reference repetitions (the person's offset) and
    how many there were; `digest` identifies the reference (its file's SHA-256), `subject` is
    whose it is."""

    offsets: dict[str, float]
    repetitions: dict[str, int]
    digest: str = ""
    subject: str = ""

    def to_dict(self) -> dict:
        return {"offsets": self.offsets, "repetitions": self.repetitions, "digest": self.digest,
                "subject": self.subject}

    def joined(self, other: Reference) -> Reference:
        """One person's references of other exercises together (their digests hashed)."""
        digest = hashlib.sha256("\n".join(sorted((self.digest, other.digest))).encode())
        return Reference({**self.offsets, **other.offsets},
                         {**self.repetitions, **other.repetitions}, digest.hexdigest(),
                         self.subject)


@dataclass(frozen=True)
class References:
    """A scoring run's references: each person's (by subject), and one for everyone else."""

    by_subject: dict[str, Reference] = field(default_factory=dict)
    everyone: Reference | None = None

    def of(self, subject: str) -> Reference | None:
        return self.by_subject.get(subject, self.everyone)

    @property
    def digest(self) -> str:
        """What identifies them together (SHA-256 of the references' own digests)."""
        if self.everyone is not None and not self.by_subject:
            return self.everyone.digest
        parts = sorted(f"{s}={r.digest}" for s, r in self.by_subject.items())
        parts.append(f"*={'' if self.everyone is None else self.everyone.digest}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def log_odds(log_probs: np.ndarray, column: int) -> np.ndarray:
    """log(p / (1 - p)) of one class's probability, p kept away from 0 and 1."""
    p = np.clip(np.exp(log_probs[:, column]), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def reference_of(log_probs: np.ndarray, classes: Seq[Class], exercises: Seq[str], digest: str,
                 source: str, subject: str = "") -> Reference:
    """The Reference of repetitions known to be correct, from the network's log-probabilities
    (one row per repetition, of the declared `exercises`). ReferenceUnusable, naming `source`,
    when there is no repetition or an exercise has no correct class in the model."""
    if len(exercises) == 0:
        raise ReferenceUnusable(f"{source}: no repetition found in the reference")
    offsets, counts = {}, {}
    for exercise in sorted(set(exercises)):
        if (exercise, CORRECT) not in classes:
            raise ReferenceUnusable(f"{source}: the model has no correct class of {exercise!r} "
                                    "to measure a reference against")
        rows = np.array([e == exercise for e in exercises])
        column = list(classes).index((exercise, CORRECT))
        offsets[exercise] = float(np.median(log_odds(log_probs[rows], column)))
        counts[exercise] = int(rows.sum())
    return Reference(offsets, counts, digest, subject)


def reference_cut(meta: dict) -> float:
    """The model's fitted cut; ReferenceUnusable when it has none (trained before cuts were
    fitted, or its cross-validation had no held-out person with two correct repetitions and a
    mistake of one exercise)."""
    cut = meta.get(REFERENCE_CUT_KEY)
    if cut is None:
        raise ReferenceUnusable(
            "this model has no reference cut: posecoach retrain fits it on the cross-validation's "
            "held-out people, each needing two correct repetitions and a mistake of one "
            "exercise; retrain it (on such data) to score against a reference")
    return float(cut)


def reference_caution(meta: dict) -> str | None:
    """A warning when, on the model's cross-validation, the rule told correct repetitions from
    mistakes less well than the network alone with every reference size; None otherwise."""
    cv = meta.get(REFERENCE_CV_KEY) or {}
    rule, alone = cv.get("reference") or {}, cv.get("network") or {}
    if not rule or set(rule) != set(alone) or any(rule[k] >= alone[k] for k in rule):
        return None
    return ("on this model's cross-validation, judging against a reference told correct "
            "repetitions from mistakes less well than the network alone ("
            + " / ".join(f"{rule[k]:.1%}" for k in rule) + " against "
            + " / ".join(f"{alone[k]:.1%}" for k in rule) + f" with {' / '.join(rule)} "
            "reference repetitions): its new people may not shift its scores")


def decide(log_probs: np.ndarray, classes: Seq[Class], exercises: Seq[str],
           reference: Reference, cut: float) -> tuple[np.ndarray, np.ndarray]:
    """The decided class of each row and its redistributed log-probabilities (see above)."""
    log_probs = np.asarray(log_probs, np.float64)
    decided, adjusted = log_probs.argmax(axis=1), log_probs.copy()
    for exercise, offset in reference.offsets.items():
        rows = np.flatnonzero([e == exercise for e in exercises])
        columns = [k for k, c in enumerate(classes) if c[0] == exercise]
        correct = list(classes).index((exercise, CORRECT))
        mistakes = [k for k in columns if k != correct]
        if rows.size == 0 or not mistakes:
            continue
        lp = log_probs[rows]
        relative = log_odds(lp, correct) - offset - cut
        total = logsumexp(lp[:, columns], axis=1)
        within = lp[:, mistakes] - logsumexp(lp[:, mistakes], axis=1, keepdims=True)
        adjusted[rows, correct] = total - np.logaddexp(0.0, -relative)
        adjusted[np.ix_(rows, mistakes)] = (total - np.logaddexp(0.0, relative))[:, None] + within
        decided[rows] = np.where(relative > 0, correct,
                                 np.asarray(mistakes)[lp[:, mistakes].argmax(axis=1)])
    return decided, adjusted
