"""`posecoach paper-protocol --ec3d PATH`: the paper's protocol (flows/paper.py) and its table
per variant: per class, classification accuracy and correction success, self-judged and by the
independent judge; macro and micro; then the paper's own figures, as a reference."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from flows.options import JsonOpt, ProfileOpt
from flows.output import console, emit, fail
from model.data.names import terminal_text
from model.data.sequence import SequenceError
from model.learn.config import VARIANTS
from model.settings import get_settings


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def show(result: dict) -> None:
    """The paper's table for every variant, then the paper's own figures for reference."""
    from model.evaluate.metrics import Evaluation

    marker = " [yellow](synthetic data, not EC3D's figures)[/yellow]" if (
        result["data"]["synthetic"]) else ""
    keys = {k: ", ".join(map(terminal_text, result[k]))
            for k in ("subject_order", "train_subjects", "test_subjects", "unused_subjects")}
    console.print(f"subject keys, sorted: {keys['subject_order']}; training "
                  f"{keys['train_subjects']}; test {keys['test_subjects']}"
                  + (f"; unused {keys['unused_subjects']}" if result["unused_subjects"] else ""))
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
        first = result["refused"][0]
        console.print(f"[red]{len(result['refused'])} sequences refused[/red], e.g. "
                      + terminal_text(f"{first['source']}: {first['reason']}"))


def _keys(text: str | None) -> list[str] | None:
    return None if text is None else [k.strip() for k in text.split(",") if k.strip()]


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
    train_subjects: str = typer.Option(None, "--train-subjects", help="Comma-separated subject "
                                       "keys that train (default: the first three, sorted)."),
    test_subjects: str = typer.Option(None, "--test-subjects", help="Comma-separated subject "
                                      "keys that test (default: the fourth, sorted)."),
    up: str = typer.Option(None, "--up", help="Up axis (+x ... -z), over what the data says."),
    units: str = typer.Option(None, "--units", help="m, cm or mm, over what the data says."),
    model: Path = typer.Option(None, "--model", help="A saved model folder to evaluate instead "
                               "of training (e.g. one imported by `models import-paper`)."),
    judge: Path = typer.Option(None, "--judge", help="With --model: the saved judge."),
    as_json: bool = JsonOpt,
) -> None:
    """The paper's protocol: train on EC3D subjects 1-3, test on subject 4, print its table."""
    from flows.paper import run_protocol, run_saved

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
    choice = {"train_subjects": _keys(train_subjects), "test_subjects": _keys(test_subjects),
              "declared": {k: v for k, v in (("up", up), ("units", units)) if v is not None}}
    try:
        result = (run_protocol(ec3d, variants, chosen, workdir, synthetic, **choice)
                  if model is None else run_saved(ec3d, model, judge, workdir, synthetic,
                                                  **choice))
    except (SequenceError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    emit(result, as_json, show)
