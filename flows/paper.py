"""The paper's protocol on EC3D's data_3D.pickle (`posecoach paper-protocol`).

Subjects s1-s3 train, s4 tests (Zhao et al., ACCV 2022). Every variant asked for is trained on
the training subjects and evaluated on s4; one independent judge (a separated classifier, its
own seed) is trained once and judges the corrections of every variant. The figures per variant
are the paper's (per class: classification accuracy, correction success; macro and micro), with
the independent judge's correction success beside the self-judged one, and the paper's own
figures on real EC3D apart, as a reference; figures from synthetic data are marked as such.

With a saved model (`--model`, e.g. one imported from the paper's released weights) nothing is
trained: that model is evaluated on s4, judged by the saved judge given (`--judge`) if any.
"""

from __future__ import annotations

from pathlib import Path

from model.data.readers import iter_sequences
from model.data.sequence import Sequence, SequenceError, validate
from model.evaluate.folds import fit, judge_config_for
from model.evaluate.metrics import evaluate
from model.evaluate.plots import plot_confusion
from model.learn.saved import TrainedModel
from model.settings import Profile, run_config

DATASET = "ec3d"
TRAIN_SUBJECTS = ("s1", "s2", "s3")
TEST_SUBJECTS = ("s4",)
PAPER_REFERENCE = {
    "data": "real EC3D, as published (Zhao et al., ACCV 2022)",
    "macro_classification": 0.909,
    "macro_correction_self": 0.942,
}


def read_split(path: Path) -> tuple[list[Sequence], list[Sequence], list[SequenceError]]:
    """The pickle's valid sequences of the training and test subjects, and what was refused."""
    train, test, refused = [], [], []
    for item in iter_sequences(path):
        if isinstance(item, SequenceError):
            refused.append(item)
            continue
        try:
            seq = validate(item)
        except SequenceError as exc:
            refused.append(exc)
            continue
        if seq.subject in TRAIN_SUBJECTS:
            train.append(seq)
        elif seq.subject in TEST_SUBJECTS:
            test.append(seq)
    return train, test, refused


def _checked_split(path: Path) -> tuple[list[Sequence], list[Sequence], list[SequenceError]]:
    train, test, refused = read_split(path)
    if not train or not test:
        raise SequenceError(str(path), f"{len(train)} sequences of {', '.join(TRAIN_SUBJECTS)} "
                            f"and {len(test)} of {', '.join(TEST_SUBJECTS)}; the protocol "
                            "needs both", "bad_split")
    return train, test, refused


def run_protocol(path: Path, variants: list[str], profile: Profile, workdir: Path,
                 synthetic: bool = False, progress: bool = True) -> dict:
    """Train every variant and the judge on s1-s3, evaluate on s4; the figures as one dict."""
    train, test, refused = _checked_split(path)
    judge = fit(train, judge_config_for(run_config(profile)), workdir, "judge",
                progress=progress)
    figures = {}
    for variant in variants:
        config = run_config(profile, variant=variant)
        model = fit(train, config, workdir, variant, progress=progress)
        ev = evaluate(model, test, judge)
        plot = plot_confusion(ev, workdir / f"confusion-{variant}.png", synthetic=synthetic)
        figures[variant] = {**ev.to_dict(), "confusion_png": str(plot),
                            "model_dir": str(workdir / variant)}
    return _result(path, synthetic, profile.name, train, test, refused, figures,
                   workdir / "judge")


def run_saved(path: Path, model_dir: Path, judge_dir: Path | None, workdir: Path,
              synthetic: bool = False) -> dict:
    """Evaluate a saved model on s4 (judged by the saved judge, if given); nothing trained."""
    train, test, refused = _checked_split(path)
    model = TrainedModel.load(model_dir)
    judge = None if judge_dir is None else TrainedModel.load(judge_dir)
    ev = evaluate(model, test, judge)
    plot = plot_confusion(ev, workdir / "confusion-model.png", synthetic=synthetic)
    figures = {"model": {**ev.to_dict(), "confusion_png": str(plot), "model_dir": str(model_dir)}}
    return _result(path, synthetic, "saved", train, test, refused, figures, judge_dir)


def _result(path: Path, synthetic: bool, profile: str, train: list[Sequence],
            test: list[Sequence], refused: list[SequenceError], figures: dict,
            judge_dir: Path | None) -> dict:
    return {
        "data": {"path": str(path), "synthetic": synthetic},
        "profile": profile,
        "train_subjects": list(TRAIN_SUBJECTS),
        "test_subjects": list(TEST_SUBJECTS),
        "n_train": len(train),
        "n_test": len(test),
        "refused": [{"source": e.source, "reason": e.reason, "kind": e.kind} for e in refused],
        "variants": figures,
        "judge_dir": None if judge_dir is None else str(judge_dir),
        "paper_reference": PAPER_REFERENCE,
    }
