"""The one scoring path: sequences -> validate -> normalise -> classify and correct (batched) ->
feedback in words -> one RepResult per repetition. Every other path calls it: Ray Data scoring,
the MLflow pyfunc and the score flow.

A sequence that cannot be scored (invalid, or a skeleton that neither matches nor maps onto the
model's) gets a RepResult with its error and nothing else; nothing is dropped. Corrected motions
are in the model's normalised frame (DESIGN.md: facing +x, left +y, up +z, centred on the mid-hip);
displacements in the feedback are in real centimetres.

Continuous sessions are cut into repetitions first by `score_session`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from model.collector import collector_paused
from model.data.formats import SEGMENTED
from model.data.labels import Class, class_name, without_correct
from model.data.normalize import Normalization, normalize, normalize_many
from model.data.sequence import Sequence, SequenceError, validate, validate_many
from model.data.skeletons import SkeletonError, get_skeleton, joint_map
from model.learn.gcn import get_variant
from model.learn.saved import Inference, TrainedModel
from model.serve.feedback import (
    Deviation,
    coach_cue,
    cue_joints,
    implausible,
    joint_words,
    many_joint_deviations,
)
from model.serve.reference import References, decide, reference_cut
from model.serve.segment import HOLD_EXERCISES, segment, segmenter
from model.settings import get_settings

BATCH_SIZE = 512
HOLD_KEY = "hold_seconds"
DEFAULT_HOLD_SECONDS = 3.0
SEGMENTATION_KEY = "segmentation"  # the dataset card's map, in the model's meta


@dataclass
class RepResult:
    """What scoring says about one repetition (or, with `error`, why it could not)."""

    sequence_id: str
    source: str
    subject: str
    exercise: str
    rep: int
    predicted: str | None = None
    label: str | None = None
    confidence: float | None = None
    unsure: bool | None = None
    exercise_mismatch: bool | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    cues: list[str] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)
    corrected: np.ndarray | None = None
    original: np.ndarray | None = None
    scale: float = 1.0
    frames: tuple[int, int] | None = None
    reference: str | None = None  # the digest of the reference it was judged against, if any
    note: str | None = None  # why no correction is shown, when none is
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self, include_motion: bool = False) -> dict:
        """JSON-safe; the corrected motion (nested lists, normalised frame) only on request."""
        out = {
            "sequence_id": self.sequence_id,
            "source": self.source,
            "subject": self.subject,
            "exercise": self.exercise,
            "rep": self.rep,
            "predicted": self.predicted,
            "label": self.label,
            "confidence": self.confidence,
            "unsure": self.unsure,
            "exercise_mismatch": self.exercise_mismatch,
            "probabilities": self.probabilities,
            "cues": self.cues,
            "deviations": [d.to_dict() for d in self.deviations],
            "scale": self.scale,
            "frames": None if self.frames is None else list(self.frames),
            "reference": self.reference,
            "note": self.note,
            "error": self.error,
            "error_kind": self.error_kind,
        }
        if include_motion:
            out["corrected"] = None if self.corrected is None else self.corrected.tolist()
        return out


def has_classifier(model: TrainedModel) -> bool:
    return get_variant(model.config.variant).classifies


def prepare(seq: Sequence, norm: Normalization) -> tuple[np.ndarray, float]:
    """Validate and normalise one sequence; SequenceError names it when it can't be."""
    return _normalized(validate(seq), norm)


def _normalized(seq: Sequence, norm: Normalization) -> tuple[np.ndarray, float]:
    """Normalise a validated sequence; SequenceError when its skeleton does not map."""
    error = _unmapped(seq, norm)
    if error is not None:
        raise error
    return normalize(seq, norm)


def _unmapped(seq: Sequence, norm: Normalization) -> SequenceError | None:
    """The error for a sequence whose skeleton does not map onto the model's; None if it does."""
    try:
        joint_map(seq.skeleton, norm.skeleton)
    except SkeletonError as exc:
        src = seq.source or f"{seq.subject}/{seq.exercise}/{seq.rep}"
        return SequenceError(
            src, f"skeleton {seq.skeleton!r} cannot be scored by a model trained on "
            f"{norm.skeleton!r}: {exc}", "skeleton_mismatch",
        )
    return None


def _unknown_exercise(seq: Sequence, model: TrainedModel) -> SequenceError | None:
    """The error for a sequence of an exercise the model was not trained on; None if it was."""
    known = sorted({c[0] for c in model.classes})
    if seq.exercise in known:
        return None
    return SequenceError(seq.source or f"{seq.subject}/{seq.exercise}/{seq.rep}",
                         f"exercise {seq.exercise!r} is not one this model was trained on "
                         f"({', '.join(known)})", "unknown_exercise")


def normalize_valid(model: TrainedModel, seqs: list[Sequence]) -> tuple[list[np.ndarray],
                                                                      list[float]]:
    """Normalise sequences known to be valid (training or test data); raises on the first bad."""
    checked = [validate(s) for s in seqs]
    for seq in checked:
        error = _unmapped(seq, model.normalization)
        if error is not None:
            raise error
    pairs = normalize_many(checked, model.normalization)
    return [p for p, _ in pairs], [s for _, s in pairs]


def _error_result(seq: Sequence, exc: SequenceError) -> RepResult:
    try:
        sequence_id = seq.sequence_id
    except (TypeError, ValueError, AttributeError):
        sequence_id = ""
    return RepResult(sequence_id=sequence_id, source=exc.source, subject=str(seq.subject),
                     exercise=str(seq.exercise), rep=int(seq.rep), error=str(exc),
                     error_kind=exc.kind)


def score(model: TrainedModel, sequences: Iterable[Sequence], batch_size: int = BATCH_SIZE,
          references: References | None = None) -> list[RepResult]:
    """Score repetitions; one RepResult per input, in order, errors included; with
    `references` (model.serve.reference), each decided relative to its person's.

    Inputs go through in batches of `batch_size`: validated and normalised, classified and
    corrected, then put in words, one batch at a time."""
    sequences = list(sequences)
    results: list[RepResult] = []
    for start in range(0, len(sequences), batch_size):
        with collector_paused():
            results += _score_batch(model, sequences[start : start + batch_size], references)
    return results


def _score_batch(model: TrainedModel, sequences: list[Sequence],
                 references: References | None = None) -> list[RepResult]:
    """score() of one batch: validated together (model.data.sequence.validate_many), normalised
    together, classified and corrected together, deviations measured together, then words."""
    results: list[RepResult | None] = [None] * len(sequences)
    ready, valid = [], []
    for i, (seq, checked) in enumerate(zip(sequences, validate_many(sequences), strict=True)):
        error = (checked if isinstance(checked, SequenceError)
                 else _unmapped(checked, model.normalization)
                 or _unknown_exercise(checked, model))
        if error is not None:
            results[i] = _error_result(seq, error)
            continue
        ready.append(i)
        valid.append(checked)
    normalised = normalize_many(valid, model.normalization)
    poses, scales = [p for p, _ in normalised], [s for _, s in normalised]
    inference = model.infer(poses, batch_size=max(1, len(poses)))
    classes: list[Class] = [tuple(c) for c in model.classes]
    names = [class_name(c) for c in classes]
    classifies = has_classifier(model)
    ready_seqs = [sequences[i] for i in ready]
    log_probs, best = inference.log_probs, inference.log_probs.argmax(axis=1)
    if references is not None and classifies:
        log_probs, best = _relative(model, inference, poses, ready_seqs, references)
    probs = model.probabilities(log_probs)
    rounded = probs.round(6).tolist()
    threshold = threshold_of()
    labels = [classes[b][1] for b in best.tolist()] if classifies else [None] * len(ready)
    deviations = many_joint_deviations(
        poses, inference.corrected, get_skeleton(model.normalization.skeleton),
        [seq.exercise for seq in ready_seqs], model.normalization.fps, scales,
        [cue_joints(label or "") for label in labels],
    )
    uncorrectable = set(without_correct(classes))
    for k, (i, seq) in enumerate(zip(ready, ready_seqs, strict=True)):
        exercise, label = classes[best[k]][0] if classifies else seq.exercise, labels[k]
        confidence = float(probs[k, best[k]]) if classifies else None
        unsure = bool(confidence < threshold) if classifies else None
        note = no_correction(exercise, uncorrectable, deviations[k])
        if note is not None:
            deviations[k] = []
        results[i] = RepResult(
            sequence_id=seq.sequence_id,
            source=seq.source,
            subject=seq.subject,
            exercise=seq.exercise,
            rep=seq.rep,
            predicted=class_name((exercise, label)) if classifies else None,
            label=label,
            confidence=confidence,
            unsure=unsure,
            exercise_mismatch=bool(exercise != seq.exercise) if classifies else None,
            probabilities=dict(zip(names, rounded[k], strict=True)),
            cues=[coach_cue(label, deviations[k], bool(unsure))] if classifies else [],
            deviations=deviations[k],
            corrected=None if note else inference.corrected[k],
            original=poses[k],
            scale=scales[k],
            frames=seq.meta.get("frames"),
            reference=_judged_by(references, seq) if classifies else None,
            note=note,
        )
    return results


def no_correction(exercise: str, uncorrectable: set[str],
                  deviations: list[Deviation]) -> str | None:
    """Why a repetition's correction is not shown, or None when it is: the model saw no correct
    repetitions of the exercise (nothing to correct towards), or the correction moves a joint
    further than a body could (feedback.implausible)."""
    if exercise in uncorrectable:
        return (f"no correct repetitions of {exercise} in the training data, so no correction "
                "is shown")
    broken = implausible(deviations)
    if broken is not None:
        return (f"the correction moves the {joint_words(broken.joint)} {broken.cm / 100:.1f} m, "
                "more than a body could: it is broken, so it is not shown")
    return None


def _judged_by(references: References | None, seq: Sequence) -> str | None:
    """The digest of the reference a repetition is judged against, if any."""
    mine = None if references is None else references.of(str(seq.subject))
    return mine.digest if mine is not None and seq.exercise in mine.offsets else None


def _relative(model: TrainedModel, inference: Inference, poses: list[np.ndarray],
              seqs: list[Sequence], references: References) -> tuple[np.ndarray, np.ndarray]:
    """The log-probabilities and classes decided relative to each person's reference; the
    repetitions whose class changes are corrected again with that class fed back, in
    `inference`."""
    classes = [tuple(c) for c in model.classes]
    cut = reference_cut(model.meta)
    network = inference.log_probs.argmax(axis=1)
    best, log_probs = network.copy(), inference.log_probs.astype(np.float64)
    people: dict[str, list[int]] = {}
    for k, seq in enumerate(seqs):
        people.setdefault(str(seq.subject), []).append(k)
    for subject, rows in people.items():
        mine = references.of(subject)
        if mine is not None:
            best[rows], log_probs[rows] = decide(inference.log_probs[rows], classes,
                                                 [seqs[k].exercise for k in rows], mine, cut)
    changed = np.flatnonzero(best != network)
    if changed.size:
        again = model.infer([poses[k] for k in changed], batch_size=max(1, changed.size),
                            fed_classes=best[changed].tolist())
        for k, corrected in zip(changed.tolist(), again.corrected, strict=True):
            inference.corrected[k] = corrected
    return log_probs, best


def score_session(model: TrainedModel, session: Sequence, hold_window: int | None = None,
                  batch_size: int = BATCH_SIZE) -> list[RepResult]:
    """Cut a continuous session into repetitions (`cut_session`) and score each one.
    Raises SequenceError when the session itself is unusable or holds no repetition."""
    return score(model, cut_session(model, session, hold_window), batch_size)


def cut_session(model: TrainedModel, session: Sequence,
                hold_window: int | None = None) -> list[Sequence]:
    """A continuous session's repetitions (model.serve.segment), each with meta["frames"]; a
    session marked segmented (meta["segmented"]) is one repetition, whole.

    A hold (plank) is cut into windows of `hold_window` frames at the session's rate; by default
    as long as the model's training holds (meta["hold_seconds"], set by `calibrate`), else 3 s.
    Raises SequenceError when the session itself is unusable, is of an exercise the model was
    not trained on, or holds no repetition.
    """
    poses, _ = prepare(session, replace(model.normalization, fps=session.fps))
    unknown = _unknown_exercise(session, model)
    if unknown is not None:
        raise unknown
    if session.meta.get(SEGMENTED):
        cuts = [(0, len(poses))]
    else:
        seconds = model.meta.get(HOLD_KEY) or DEFAULT_HOLD_SECONDS
        window = hold_window or max(1, int(round(seconds * session.fps)))
        declared = model.meta.get(SEGMENTATION_KEY)
        cuts = segment(poses, session.exercise, session.fps, window, declared=declared)
        if not cuts:
            raise _no_repetitions(session, segmenter(session.exercise, declared))
    return [replace(session, poses=session.poses[a:b], rep=n, source=f"{session.source}#{n}",
                    meta={**session.meta, "frames": (a, b)})
            for n, (a, b) in enumerate(cuts)]


_CUT_BY = {"cycle": "the up-down cycle of the hips (their height above the feet)",
           "excursion": "moves away from the session's resting posture and back"}


def _no_repetitions(session: Sequence, how: str) -> SequenceError:
    """The error for a session in which no repetition was found, saying how it was cut."""
    return SequenceError(
        session.source or session.subject,
        f"no {session.exercise} repetition found in the session, cut as {how!r} "
        f"({_CUT_BY.get(how, how)}); declare another way to cut it (posecoach data configure "
        f"DATASET --segmentation {session.exercise}=cycle|excursion|hold, then retrain), or mark "
        f"a file that is one repetition \"segmented\": true", "no_repetitions")


def threshold_of() -> float:
    """The "unsure" threshold on calibrated confidence (settings: POSECOACH_UNSURE_THRESHOLD)."""
    return get_settings().unsure_threshold


def calibrate(model: TrainedModel, train_seqs: list[Sequence]) -> float | None:
    """What scoring learns from the model's training data besides its temperature (fitted on
    held-out predictions by model.evaluate.calibration): the median length of its holds in
    seconds, stored in meta["hold_seconds"] and returned (None without holds)."""
    holds = [len(s.poses) / s.fps for s in train_seqs if s.exercise in HOLD_EXERCISES]
    if holds:
        model.meta[HOLD_KEY] = float(np.median(holds))
    return model.meta.get(HOLD_KEY)
