"""Leave-one-subject-out folds and the unit of work of cross-validation: one fold.

`run_fold` trains the model under evaluation and its independent judge (the same configuration
as a separated classifier, another seed) on the training subjects and evaluates on the held-out
subject(s), keeping the model's held-out log-probabilities for calibration (`held_out_predictions`
gathers them over folds). With a
workdir, both models are saved there and training checkpoints under it, so a killed fold
resumes where it stopped. Deterministic for a fixed seed and thread count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model.data.labels import class_name
from model.data.normalize import Normalization
from model.data.sequence import Sequence
from model.evaluate.calibration import Held
from model.evaluate.metrics import Evaluation, evaluate
from model.learn.config import TrainConfig
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.serve.scoring import calibrate

JUDGE_VARIANT = "separated_classifier"
JUDGE_SEED_OFFSET = 1000


def loso_folds(subjects: list[str]) -> list[tuple[str, list[str]]]:
    """(held-out subject, training subjects) for every subject, in sorted order."""
    unique = sorted(set(subjects))
    if len(unique) < 2:
        raise ValueError(f"leave-one-subject-out needs at least 2 subjects, got {unique}")
    return [(s, [t for t in unique if t != s]) for s in unique]


def judge_config_for(config: TrainConfig) -> TrainConfig:
    """The independent judge's configuration: a separated classifier with another seed."""
    return replace(config, variant=JUDGE_VARIANT, seed=config.seed + JUDGE_SEED_OFFSET)


@dataclass
class FoldResult:
    held_out: str
    evaluation: dict
    model_dir: str | None = None
    judge_dir: str | None = None
    n_train: int = 0
    n_test: int = 0
    held: dict | None = None  # held_dict(): the model's held-out predictions, JSON-safe

    def to_dict(self) -> dict:
        return {
            "held_out": self.held_out,
            "evaluation": self.evaluation,
            "model_dir": self.model_dir,
            "judge_dir": self.judge_dir,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "held": self.held,
        }

    @property
    def figures(self) -> Evaluation:
        return Evaluation.from_dict(self.evaluation)


def fit(train_seqs: list[Sequence], config: TrainConfig, workdir: Path | None, name: str,
        norm: Normalization = Normalization(), progress: bool = True) -> TrainedModel:
    """Train one model (checkpoints under workdir/checkpoints/name), measure its holds on its
    training data (model.serve.scoring.calibrate), and save it to workdir/name when there is one."""
    ckpt = None if workdir is None else workdir / "checkpoints" / name
    model = train(train_seqs, config, norm=norm, checkpoint_dir=ckpt, progress=progress)
    calibrate(model, train_seqs)
    if workdir is not None:
        model.save(workdir / name)
    return model


def run_fold(train_seqs: list[Sequence], test_seqs: list[Sequence], config: TrainConfig,
             workdir: str | Path | None = None, judge_config: TrainConfig | None = None,
             norm: Normalization = Normalization(), progress: bool = True) -> FoldResult:
    """Train the model and its independent judge on train_seqs, evaluate on test_seqs."""
    if not train_seqs or not test_seqs:
        raise ValueError(f"a fold needs training and test sequences, got {len(train_seqs)} "
                         f"and {len(test_seqs)}")
    overlap = {s.subject for s in train_seqs} & {s.subject for s in test_seqs}
    if overlap:
        raise ValueError(f"subjects {sorted(overlap)} are in both training and test sequences")
    held_out = ",".join(sorted({s.subject for s in test_seqs}))
    root = Path(workdir) if workdir is not None else None
    model = fit(train_seqs, config, root, "model", norm, progress)
    judge = fit(train_seqs, judge_config or judge_config_for(config), root, "judge", norm,
                progress)
    evaluation = evaluate(model, test_seqs, judge)
    return FoldResult(
        held_out=held_out,
        evaluation=evaluation.to_dict(),
        model_dir=None if root is None else str(root / "model"),
        judge_dir=None if root is None else str(root / "judge"),
        n_train=len(train_seqs),
        n_test=len(test_seqs),
        held=None if evaluation.held is None else held_dict(evaluation.held, model.classes),
    )


def held_dict(held: Held, classes: list) -> dict:
    """Held-out predictions as plain lists, with the class names their columns stand for."""
    return {"classes": [class_name(tuple(c)) for c in classes],
            "log_probs": held.log_probs.tolist(), "true": held.true.tolist()}


def held_out_predictions(folds: list[dict]) -> list[Held]:
    """Each fold's held-out predictions (FoldResult.to_dict()["held"]), their columns laid out
    on the classes of all folds together (a class a fold's model lacks: probability 0)."""
    parts = [f["held"] for f in folds if f.get("held")]
    names = sorted({c for p in parts for c in p["classes"]})
    out = []
    for p in parts:
        log_probs = np.asarray(p["log_probs"], np.float64).reshape(-1, len(p["classes"]))
        wide = np.full((len(log_probs), len(names)), -np.inf)
        wide[:, [names.index(c) for c in p["classes"]]] = log_probs
        true = np.array([names.index(p["classes"][t]) for t in p["true"]], np.int64)
        out.append(Held(wide, true))
    return out
