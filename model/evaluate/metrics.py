"""The metrics of DESIGN.md ("Metrics and protocols"), from a trained model and test sequences.

- Mistake identification: micro accuracy (per sequence), macro accuracy (mean of the per-class
  accuracies over the classes present in the test set), the per-class table and the confusion
  matrix (rows: true class, columns: predicted class).
- Correction success: the share of sequences whose corrected motion is classified as the
  exercise's correct class, judged by the model's own classifier ("self", the paper's way) and by
  an independent judge ("independent": a separated classifier trained on the same subjects), over
  all test sequences ("all", correct ones included; "macro" is the mean over classes) and over the
  incorrect ones alone ("incorrect").
- The mean soft-DTW divergence to the target before and after correction, targets paired within
  the test set as in training, over all sequences with a target (a correct one is its own
  target: 0 before) and over the incorrect ones alone.

A figure that cannot be computed (no judge, a model without a classifier, no incorrect sequence)
is NaN, and None in `to_dict()`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from model.data.labels import Class, class_name, classes_from
from model.data.sequence import Sequence
from model.evaluate.calibration import Held
from model.learn.saved import TrainedModel
from model.learn.softdtw import soft_dtw_divergence
from model.learn.targets import NO_TARGET, pair_targets
from model.serve.scoring import BATCH_SIZE, has_classifier, normalize_valid
from model.settings import CORRECT

JUDGES = ("self", "independent")
NAN = float("nan")


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _share(mask: np.ndarray, among: np.ndarray) -> float:
    """Mean of the boolean `mask` over the rows selected by `among`; NaN when none."""
    return float(mask[among].mean()) if among.any() else NAN


@dataclass
class ClassRow:
    cls: Class
    n: int
    accuracy: float
    correction_self: float
    correction_independent: float

    def to_dict(self) -> dict:
        return {
            "class": class_name(self.cls),
            "exercise": self.cls[0],
            "label": self.cls[1],
            "n": self.n,
            "accuracy": _num(self.accuracy),
            "correction_self": _num(self.correction_self),
            "correction_independent": _num(self.correction_independent),
        }


@dataclass
class Evaluation:
    n: int
    classes: list[Class]
    confusion: np.ndarray
    per_class: list[ClassRow]
    micro: float
    macro: float
    correction: dict[str, dict[str, float]]
    sdtw: dict[str, dict[str, float]]
    held: Held | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """The figures; the held-out predictions (`held`) stay out."""
        return {
            "n": self.n,
            "micro": _num(self.micro),
            "macro": _num(self.macro),
            "classes": [class_name(c) for c in self.classes],
            "per_class": [row.to_dict() for row in self.per_class],
            "confusion": self.confusion.astype(int).tolist(),
            "correction": {
                judge: {k: _num(v) for k, v in figures.items()}
                for judge, figures in self.correction.items()
            },
            "sdtw_before": _num(self.sdtw["all"]["before"]),
            "sdtw_after": _num(self.sdtw["all"]["after"]),
            "sdtw_before_incorrect": _num(self.sdtw["incorrect"]["before"]),
            "sdtw_after_incorrect": _num(self.sdtw["incorrect"]["after"]),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Evaluation:
        """Rebuild an evaluation from `to_dict()` (e.g. returned by a Ray task)."""

        def f(x: float | None) -> float:
            return NAN if x is None else float(x)

        return cls(
            n=int(d["n"]),
            classes=[tuple(c.split("/", 1)) for c in d["classes"]],
            confusion=np.asarray(d["confusion"], dtype=np.int64),
            per_class=[
                ClassRow((r["exercise"], r["label"]), r["n"], f(r["accuracy"]),
                         f(r["correction_self"]), f(r["correction_independent"]))
                for r in d["per_class"]
            ],
            micro=f(d["micro"]),
            macro=f(d["macro"]),
            correction={j: {k: f(v) for k, v in fig.items()} for j, fig in d["correction"].items()},
            sdtw={part: {when: f(d[f"sdtw_{when}{suffix}"]) for when in ("before", "after")}
                  for part, suffix in (("all", ""), ("incorrect", "_incorrect"))},
        )


def summarize(classes: list[Class], true: np.ndarray, pred: np.ndarray | None,
              judged: dict[str, np.ndarray | None],
              sdtw: tuple[np.ndarray, np.ndarray] | None = None,
              uncorrected: np.ndarray | None = None) -> Evaluation:
    """The figures from class indices (true, predicted: None for a model that does not
    classify), per judge whether each corrected motion was classified as its exercise's correct
    class (None: that judge is missing or does not classify), and each sequence's soft-DTW
    divergence to its target before and after correction (NaN: no target); `uncorrected`, per
    sequence whether the independent judge calls the input itself correct — the baseline that
    correction has to improve on (correction["uncorrected"])."""
    true = np.asarray(true, dtype=np.int64)
    n_cls = len(classes)
    confusion = np.zeros((n_cls, n_cls), dtype=np.int64)
    if pred is not None:
        np.add.at(confusion, (true, np.asarray(pred, dtype=np.int64)), 1)
    hit = None if pred is None else true == np.asarray(pred, dtype=np.int64)
    incorrect = np.array([classes[t][1] != CORRECT for t in true], dtype=bool)
    everyone = np.ones(true.shape, dtype=bool)
    ok = {j: None if judged.get(j) is None else np.asarray(judged[j], dtype=bool) for j in JUDGES}
    rows = []
    for c in np.unique(true):
        mine = true == c
        rows.append(ClassRow(
            cls=classes[c],
            n=int(mine.sum()),
            accuracy=NAN if hit is None else _share(hit, mine),
            correction_self=NAN if ok["self"] is None else _share(ok["self"], mine),
            correction_independent=(
                NAN if ok["independent"] is None else _share(ok["independent"], mine)
            ),
        ))
    correction = {}
    for j in JUDGES:
        per_class = [getattr(r, f"correction_{j}") for r in rows]
        correction[j] = {
            "all": NAN if ok[j] is None else _share(ok[j], everyone),
            "macro": float(np.mean(per_class)) if rows else NAN,
            "incorrect": NAN if ok[j] is None else _share(ok[j], incorrect),
        }
    if uncorrected is not None:
        base = np.asarray(uncorrected, dtype=bool)
        correction["uncorrected"] = {"all": _share(base, everyone),
                                     "incorrect": _share(base, incorrect)}
    return Evaluation(
        classes=list(classes),
        confusion=confusion,
        per_class=rows,
        n=int(true.size),
        micro=NAN if hit is None else _share(hit, everyone),
        macro=float(np.mean([r.accuracy for r in rows])) if rows else NAN,
        correction=correction,
        sdtw={part: _mean_divergence(sdtw, among)
              for part, among in (("all", everyone), ("incorrect", incorrect))},
    )


def _mean_divergence(sdtw: tuple[np.ndarray, np.ndarray] | None,
                     among: np.ndarray) -> dict[str, float]:
    """Mean divergence before and after correction over the selected sequences with a target."""
    if sdtw is None:
        return {"before": NAN, "after": NAN}
    before, after = (np.asarray(x, dtype=np.float64) for x in sdtw)
    keep = among & ~np.isnan(before)
    if not keep.any():
        return {"before": NAN, "after": NAN}
    return {"before": float(before[keep].mean()), "after": float(after[keep].mean())}


def evaluate(model: TrainedModel, test_seqs: list[Sequence], judge: TrainedModel | None = None,
             batch_size: int = BATCH_SIZE) -> Evaluation:
    """Classify and correct `test_seqs` with `model` and compute every figure of DESIGN.md;
    `held` keeps its raw log-probabilities and true class indices (classes it knows) for
    calibration.

    A model without a classifier (separated_corrector) is fed the judge's predictions, as the
    paper pairs its separated corrector with a separate classifier; its accuracy is NaN.
    """
    if not test_seqs:
        raise ValueError("evaluate: no test sequences")
    if judge is not None and judge.normalization != model.normalization:
        raise ValueError(
            f"the judge normalises as {judge.normalization}, the model as {model.normalization}"
        )
    poses, _ = normalize_valid(model, test_seqs)
    known = [tuple(c) for c in model.classes]
    extra = [c for c in classes_from((s.exercise, s.label) for s in test_seqs) if c not in known]
    classes = known + extra
    true = np.array([classes.index((s.exercise, s.label)) for s in test_seqs])
    exercises = [s.exercise for s in test_seqs]
    if has_classifier(model):
        inference = model.infer(poses, batch_size=batch_size)
        pred = inference.log_probs.argmax(axis=1)
    else:
        fed = None if judge is None else judge_predictions(judge, model, poses, batch_size)
        inference = model.infer(poses, batch_size=batch_size, fed_classes=fed)
        pred = None
    judged = {
        "self": judged_correct(model, inference.corrected, exercises, batch_size),
        "independent": (
            None if judge is None
            else judged_correct(judge, inference.corrected, exercises, batch_size)
        ),
    }
    sdtw = divergence_to_targets(poses, inference.corrected, test_seqs)
    uncorrected = None if judge is None else judged_correct(judge, poses, exercises, batch_size)
    result = summarize(classes, true, pred, judged, sdtw, uncorrected)
    if pred is not None:
        seen = true < len(known)  # a class the model never saw has no probability to calibrate
        result.held = Held(inference.log_probs[seen].astype(np.float64), true[seen])
    return result


def judge_predictions(judge: TrainedModel, model: TrainedModel, poses: list[np.ndarray],
                      batch_size: int = BATCH_SIZE) -> list[int]:
    """The judge's predicted class of each input, as an index into the model's classes."""
    index = {tuple(c): i for i, c in enumerate(model.classes)}
    pred = judge.infer(poses, batch_size=batch_size).log_probs.argmax(axis=1)
    return [index[tuple(judge.classes[k])] for k in pred]


def judged_correct(judge: TrainedModel, corrected: list[np.ndarray], exercises: list[str],
                   batch_size: int = BATCH_SIZE) -> np.ndarray | None:
    """Whether `judge` classifies each corrected motion as its exercise's correct class
    (None when the judge has no classifier)."""
    if not has_classifier(judge):
        return None
    classes = [tuple(c) for c in judge.classes]
    correct_idx = {ex: classes.index((ex, CORRECT)) if (ex, CORRECT) in classes else -1
                   for ex in set(exercises)}
    pred = judge.infer(corrected, batch_size=batch_size).log_probs.argmax(axis=1)
    return pred == np.array([correct_idx[ex] for ex in exercises])


def divergence_to_targets(inputs: list[np.ndarray], corrected: list[np.ndarray],
                          seqs: list[Sequence]) -> tuple[np.ndarray, np.ndarray]:
    """Each input's and each correction's soft-DTW divergence to the input's paired target
    (NaN where there is no target)."""
    targets = pair_targets(inputs, seqs)
    keep = [i for i, t in enumerate(targets) if t != NO_TARGET]
    before = np.full(len(inputs), NAN)
    after = np.full(len(inputs), NAN)
    if not keep:
        return before, after
    y, y_lens = _padded([inputs[targets[i]] for i in keep])
    for source, out in ((inputs, before), (corrected, after)):
        x, x_lens = _padded([source[i] for i in keep])
        with torch.no_grad():
            out[keep] = soft_dtw_divergence(x, y, x_lens, y_lens).numpy()
    return before, after


def _padded(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(frames, joints, 3) arrays -> (B, T_max, joints * 3) float64, zero-padded, and lengths."""
    flat = [torch.from_numpy(np.asarray(a, dtype=np.float64)).flatten(1) for a in arrays]
    return (torch.nn.utils.rnn.pad_sequence(flat, batch_first=True),
            torch.tensor([len(a) for a in arrays]))
