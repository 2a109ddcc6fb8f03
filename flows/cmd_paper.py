"""`posecoach paper-protocol --ec3d PATH`: the paper's protocol on EC3D's data_3D.pickle.

Subjects s1-s3 train, s4 tests (Zhao et al., ACCV 2022). Every variant asked for is trained on
the training subjects and evaluated on s4; one independent judge (a separated classifier, its
own seed) is trained once and judges the corrections of every variant. The table per variant is
the paper's (per class: classification accuracy, correction success; macro and micro), with the
independent judge's correction success beside the self-judged one. The paper's own figures on
real EC3D are printed apart, as a reference; figures from synthetic data are marked as such.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from flows.app import app
from flows.options import JsonOpt, ProfileOpt
from flows.output import console, emit, fail
from model.data.ec3d_pickle import read_ec3d_pickle
from model.data.sequence import Sequence, SequenceError, validate
from model.evaluate.folds import fit, judge_config_for
from model.evaluate.metrics import Evaluation, evaluate
from model.evaluate.plots import plot_confusion
from model.learn.gcn import VARIANTS
from model.learn.train import TrainConfig
from model.settings import Profile, get_settings

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
    for item in read_ec3d_pickle(path):
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


def run_protocol(path: Path, variants: list[str], profile: Profile, workdir: Path,
                 synthetic: bool = False, progress: bool = True) -> dict:
    """Train every variant and the judge on s1-s3, evaluate on s4; the figures as one dict."""
    train, test, refused = read_split(path)
    if not train or not test:
        raise SequenceError(str(path), f"{len(train)} sequences of {', '.join(TRAIN_SUBJECTS)} "
                            f"and {len(test)} of {', '.join(TEST_SUBJECTS)}; the protocol "
                            "needs both", "bad_split")
    base = TrainConfig.from_profile(profile)
    judge = fit(train, judge_config_for(base), workdir, "judge", progress=progress)
    figures = {}
    for variant in variants:
        config = TrainConfig.from_profile(profile, variant=variant)
        model = fit(train, config, workdir, variant, progress=progress)
        ev = evaluate(model, test, judge)
        plot = plot_confusion(ev, workdir / f"confusion-{variant}.png", synthetic=synthetic)
        figures[variant] = {**ev.to_dict(), "confusion_png": str(plot),
                            "model_dir": str(workdir / variant)}
    return {
        "data": {"path": str(path), "synthetic": synthetic},
        "profile": profile.name,
        "train_subjects": list(TRAIN_SUBJECTS),
        "test_subjects": list(TEST_SUBJECTS),
        "n_train": len(train),
        "n_test": len(test),
        "refused": [{"source": e.source, "reason": e.reason, "kind": e.kind} for e in refused],
        "variants": figures,
        "judge_dir": str(workdir / "judge"),
        "paper_reference": PAPER_REFERENCE,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def show(result: dict) -> None:
    """The paper's table for every variant, then the paper's own figures for reference."""
    marker = " [yellow](synthetic data, not EC3D's figures)[/yellow]" if (
        result["data"]["synthetic"]) else ""
    for variant, d in result["variants"].items():
        ev = Evaluation.from_dict(d)
        table = Table(title=f"{variant}: train {'+'.join(result['train_subjects'])}, test "
                            f"{'+'.join(result['test_subjects'])} ({ev.n} sequences){marker}")
        table.add_column("class", no_wrap=True, min_width=max(len(c) for c in d["classes"]))
        for col in ("n", "identified %", "corrected % self", "corrected % indep."):
            table.add_column(col, justify="right")
        for row in d["per_class"]:
            table.add_row(row["class"], str(row["n"]), _pct(row["accuracy"]),
                          _pct(row["correction_self"]), _pct(row["correction_independent"]))
        corr = d["correction"]
        table.add_section()
        table.add_row("macro", "", _pct(d["macro"]), _pct(corr["self"]["macro"]),
                      _pct(corr["independent"]["macro"]), style="bold")
        table.add_row("micro", str(ev.n), _pct(d["micro"]), _pct(corr["self"]["all"]),
                      _pct(corr["independent"]["all"]), style="bold")
        table.add_row("incorrect only", "", "", _pct(corr["self"]["incorrect"]),
                      _pct(corr["independent"]["incorrect"]))
        console.print(table)
        console.print(f"mean soft-DTW divergence to the target, before -> after correction: "
                      f"all {_num(d['sdtw_before'])} -> {_num(d['sdtw_after'])}, incorrect "
                      f"{_num(d['sdtw_before_incorrect'])} -> {_num(d['sdtw_after_incorrect'])}; "
                      f"confusion matrix: {d['confusion_png']}")
    ref = result["paper_reference"]
    console.print(f"paper ({ref['data']}): macro classification "
                  f"{_pct(ref['macro_classification'])} %, macro correction "
                  f"{_pct(ref['macro_correction_self'])} % (self-judged)")
    if result["refused"]:
        console.print(f"[red]{len(result['refused'])} sequences refused[/red], e.g. "
                      f"{result['refused'][0]['source']}: {result['refused'][0]['reason']}")


@app.command("paper-protocol")
def paper_protocol(
    ec3d: Path = typer.Option(..., "--ec3d", help="EC3D's data_3D.pickle (read restricted)."),
    variant: str = typer.Option(
        "full", "--variant", help=f"{' | '.join(VARIANTS)} | all (every one of them)."
    ),
    profile: str = ProfileOpt,
    workdir: Path = typer.Option(None, "--workdir", help="Where models and checkpoints go "
                                 "(default: a new folder under $POSECOACH_HOME/paper)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Mark the figures as synthetic "
                                   "(the pickle came from posecoach's generator)."),
    as_json: bool = JsonOpt,
) -> None:
    """The paper's protocol: train on EC3D subjects 1-3, test on subject 4, print its table."""
    settings = get_settings()
    variants = list(VARIANTS) if variant == "all" else [variant]
    if variant != "all" and variant not in VARIANTS:
        fail(f"--variant {variant!r}: known are {', '.join(VARIANTS)} and all")
    try:
        chosen = settings.get_profile(profile)
    except KeyError as exc:
        fail(str(exc.args[0]))
    if not ec3d.is_file():
        fail(f"--ec3d {ec3d}: no such file")
    workdir = workdir or settings.home / "paper" / time.strftime("%Y%m%d-%H%M%S")
    try:
        result = run_protocol(ec3d, variants, chosen, workdir, synthetic)
    except SequenceError as exc:
        fail(str(exc))
    emit(result, as_json, show)
