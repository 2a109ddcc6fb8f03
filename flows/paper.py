"""The paper's protocol on EC3D's data_3D.pickle (`posecoach paper-protocol`).

Subjects 1-3 train, subject 4 tests (Zhao et al., ACCV 2022): the subject keys of the labels,
numbers or names, sorted, and taken by position, as the seed's loader does; --train-subjects
and --test-subjects name others. Every variant asked for is trained on the training subjects
and evaluated on the test subjects; one independent judge (a separated classifier, its
own seed) is trained once and judges the corrections of every variant. The figures per variant
are the paper's (per class: classification accuracy, correction success; macro and micro), with
the independent judge's correction success beside the self-judged one, and the paper's own
figures on real EC3D apart, as a reference; figures from synthetic data are marked as such.

With a saved model (`--model`, e.g. one imported from the paper's released weights) nothing is
trained: that model is evaluated on the test subjects, judged by the saved judge given
(`--judge`) if any.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model.data.readers import iter_sequences
from model.data.sequence import Sequence, SequenceError, validate
from model.evaluate.folds import fit, judge_config_for
from model.evaluate.metrics import evaluate
from model.evaluate.plots import plot_confusion
from model.learn.saved import TrainedModel
from model.settings import Profile, run_config

DATASET = "ec3d"
TRAIN_POSITIONS = 3  # the first three subjects by sorted key train, the fourth tests
PAPER_REFERENCE = {
    "data": "real EC3D, as published (Zhao et al., ACCV 2022)",
    "macro_classification": 0.909,
    "macro_correction_self": 0.942,
}


@dataclass
class Split:
    """The protocol's sequences: which subject keys train, which test, and what was refused."""

    train: list[Sequence]
    test: list[Sequence]
    refused: list[SequenceError]
    order: list[str]  # every subject key, sorted as the seed's loader sorts them
    train_keys: list[str]
    test_keys: list[str]

    @property
    def unused_keys(self) -> list[str]:
        return [k for k in self.order if k not in (*self.train_keys, *self.test_keys)]


def _key(seq: Sequence) -> object:
    """The subject as the file holds it (a number or a name), else the subject's name."""
    return seq.meta.get("subject_key", seq.subject)


def _sort_key(key: object) -> tuple:
    """Numbers in numeric order, then names in text order (sorted() of the labels' keys)."""
    number = isinstance(key, int | float) and not isinstance(key, bool)
    return (0, key, "") if number else (1, 0, str(key))


def _chosen(names: list[str] | None, keys: dict[str, set[str]], path: Path, what: str
            ) -> list[str] | None:
    """The subject keys a --train-subjects / --test-subjects list names (a key as printed, or
    the subject's name); SequenceError naming an unknown one."""
    if names is None:
        return None
    by_name = {alias: key for key, aliases in keys.items() for alias in aliases}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SequenceError(str(path), f"{what} {', '.join(unknown)}: no such subject (the "
                            f"file's subject keys: {', '.join(keys)})", "bad_split")
    return list(dict.fromkeys(by_name[n] for n in names))


def read_split(path: Path, train_subjects: list[str] | None = None,
               test_subjects: list[str] | None = None, declared: dict | None = None) -> Split:
    """The pickle's valid sequences split by subject: by default the first three subject keys
    in sorted order train and the fourth tests (the seed's loader: sorted keys, by position,
    whether the keys are numbers or names); `train_subjects` and `test_subjects` override.
    `declared`: up and units given as options (model.data.conventions)."""
    valid, refused = [], []
    for item in iter_sequences(path, **(declared or {})):
        if isinstance(item, SequenceError):
            refused.append(item)
            continue
        try:
            valid.append(validate(item))
        except SequenceError as exc:
            refused.append(exc)
    raw = sorted({_key(s) for s in valid}, key=_sort_key)
    keys = {str(k): {str(k)} | {s.subject for s in valid if _key(s) == k} for k in raw}
    order = list(keys)
    train_keys = _chosen(train_subjects, keys, path, "--train-subjects")
    test_keys = _chosen(test_subjects, keys, path, "--test-subjects")
    train_keys = train_keys if train_keys is not None else [
        k for k in order[:TRAIN_POSITIONS] if k not in (test_keys or ())]
    test_keys = test_keys if test_keys is not None else [
        k for k in order[TRAIN_POSITIONS:TRAIN_POSITIONS + 1] if k not in train_keys]
    both = sorted(set(train_keys) & set(test_keys))
    if both:
        raise SequenceError(str(path), f"subjects {', '.join(both)} both train and test",
                            "bad_split")
    train = [s for s in valid if str(_key(s)) in train_keys]
    test = [s for s in valid if str(_key(s)) in test_keys]
    return Split(train, test, refused, order, train_keys, test_keys)


def _checked_split(path: Path, **choice: object) -> Split:
    split = read_split(path, **choice)
    if not split.train or not split.test:
        raise SequenceError(
            str(path), f"{len(split.train)} sequences of training subjects "
            f"{', '.join(split.train_keys) or 'none'} and {len(split.test)} of test subjects "
            f"{', '.join(split.test_keys) or 'none'} (subject keys in the file: "
            f"{', '.join(split.order) or 'none'}); the protocol needs both: name them with "
            "--train-subjects and --test-subjects", "bad_split")
    return split


def run_protocol(path: Path, variants: list[str], profile: Profile, workdir: Path,
                 synthetic: bool = False, progress: bool = True, **choice: object) -> dict:
    """Train every variant and the judge on the training subjects, evaluate on the test ones;
    the figures as one dict. `choice`: read_split's subjects and declared options."""
    split = _checked_split(path, **choice)
    train, test = split.train, split.test
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
    return _result(path, synthetic, profile.name, split, figures, workdir / "judge")


def run_saved(path: Path, model_dir: Path, judge_dir: Path | None, workdir: Path,
              synthetic: bool = False, **choice: object) -> dict:
    """Evaluate a saved model on the test subjects (judged by the saved judge, if given);
    nothing trained."""
    split = _checked_split(path, **choice)
    test = split.test
    model = TrainedModel.load(model_dir)
    judge = None if judge_dir is None else TrainedModel.load(judge_dir)
    ev = evaluate(model, test, judge)
    plot = plot_confusion(ev, workdir / "confusion-model.png", synthetic=synthetic)
    figures = {"model": {**ev.to_dict(), "confusion_png": str(plot), "model_dir": str(model_dir)}}
    return _result(path, synthetic, "saved", split, figures, judge_dir)


def _result(path: Path, synthetic: bool, profile: str, split: Split, figures: dict,
            judge_dir: Path | None) -> dict:
    return {
        "data": {"path": str(path), "synthetic": synthetic},
        "profile": profile,
        "subject_order": split.order,
        "train_subjects": split.train_keys,
        "test_subjects": split.test_keys,
        "unused_subjects": split.unused_keys,
        "n_train": len(split.train),
        "n_test": len(split.test),
        "refused": [{"source": e.source, "reason": e.reason, "kind": e.kind}
                    for e in split.refused],
        "variants": figures,
        "judge_dir": None if judge_dir is None else str(judge_dir),
        "paper_reference": PAPER_REFERENCE,
    }
