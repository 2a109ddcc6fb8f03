"""`posecoach data create | configure | show NAME`: a dataset's card (model.data.card).

`create` writes a dataset's card (its default card, from the data it holds, with the options
given); `configure` changes a stored card (or the default one) field by field; `show` prints
the card retrain, cross-validation and scoring use, whether it is stored or the default, and
what in it does not fit the data. Every change is checked against the data: a gate subject or
an exercise the data does not hold, or a skeleton its rows cannot be mapped onto, is refused,
every such problem named with the option that fixes it and one command fixing them all.
`configure` and `show` of a dataset with neither data nor a card are errors (a typo's card is
never stored). Exit status 1 for a card that cannot be written.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from flows.options import JsonOpt
from flows.output import console, emit, fail
from model.data.names import terminal_text

NameArg = typer.Argument(..., help="The dataset's name, e.g. ec3d or uiprmd.")
SkeletonOpt = typer.Option(None, "--skeleton", help="The skeleton its models train on.")
GateOpt = typer.Option(None, "--gate-subjects",
                       help="Subjects kept for the promotion gate only, comma-separated.")
MotionOpt = typer.Option(None, "--motion-only",
                         help="true | false | auto (chosen per training on its subjects).")
BetaOpt = typer.Option(None, "--beta", help="The correction term's weight in the loss.")
TailOpt = typer.Option(None, "--average-tail",
                       help="Share of the last epochs whose weights are averaged (0: the last).")
SmoothOpt = typer.Option(None, "--label-smoothing",
                         help="Share of each label spread over all classes in the class loss.")
ExercisesOpt = typer.Option(None, "--exercises",
                            help="The exercises it may hold, comma-separated (empty: any).")
SegmentOpt = typer.Option(None, "--segmentation",
                          help="How sessions are cut: EXERCISE=cycle|excursion|hold, "
                          "comma-separated.")


def _changes(**raw: str | None) -> dict[str, Any]:
    from model.data.card import parse_value

    return {key: parse_value(key, value) for key, value in raw.items() if value is not None}


def show_card(result: dict[str, Any]) -> None:
    where = "stored" if result["stored"] else "default (not stored: posecoach data create)"
    table = Table(title=f"dataset {result['card']['name']!r}: card, {where}")
    table.add_column("field")
    table.add_column("value")
    for key, value in result["card"].items():
        if key not in ("format", "name"):
            table.add_row(key, str(value))
    console.print(table)
    if result.get("problems"):
        console.print(f"[yellow]warning[/yellow]: {terminal_text(result['problems'])}")


def _answer(card: Any, as_json: bool, problems: str | None = None) -> None:
    """The card; `problems`: what does not fit the data, and the command that fixes it."""
    emit({"card": card.to_dict(), "stored": card.stored, "problems": problems}, as_json,
         show_card)


def create(name: str = NameArg, skeleton: str = SkeletonOpt, gate_subjects: str = GateOpt,
           motion_only: str = MotionOpt, beta: str = BetaOpt, average_tail: str = TailOpt,
           label_smoothing: str = SmoothOpt, exercises: str = ExercisesOpt,
           segmentation: str = SegmentOpt, as_json: bool = JsonOpt) -> None:
    """Write a dataset's card: its default card with the options given."""
    from model.data.card import CardError, create_card
    from model.data.dataset import Dataset

    try:
        card = create_card(Dataset(name), **_changes(
            skeleton=skeleton, gate_subjects=gate_subjects, motion_only=motion_only, beta=beta,
            average_tail=average_tail, label_smoothing=label_smoothing, exercises=exercises,
            segmentation=segmentation))
    except CardError as exc:
        fail(str(exc))
    _answer(card, as_json)


def configure_card(name: str = NameArg, skeleton: str = SkeletonOpt,
                   gate_subjects: str = GateOpt, motion_only: str = MotionOpt,
                   beta: str = BetaOpt, average_tail: str = TailOpt,
                   label_smoothing: str = SmoothOpt, exercises: str = ExercisesOpt,
                   segmentation: str = SegmentOpt, as_json: bool = JsonOpt) -> None:
    """Change fields of a dataset's card (stored, or its default) and store it."""
    from model.data.card import CardError, configure
    from model.data.dataset import Dataset

    try:
        changes = _changes(skeleton=skeleton, gate_subjects=gate_subjects,
                           motion_only=motion_only, beta=beta, average_tail=average_tail,
                           label_smoothing=label_smoothing, exercises=exercises,
                           segmentation=segmentation)
        if not changes:
            fail("nothing to change: give at least one option (see --help)", code=2)
        card = configure(Dataset(name), **changes)
    except CardError as exc:
        fail(str(exc))
    _answer(card, as_json)


def show(name: str = NameArg, as_json: bool = JsonOpt) -> None:
    """Print the card retrain, cross-validation and scoring use for a dataset."""
    from model.data.card import (
        CardError,
        data_problems,
        load_card,
        no_dataset,
        problems_error,
        read_card,
    )
    from model.data.dataset import Dataset

    ds = Dataset(name)
    try:
        if read_card(name, ds.uri) is None and not ds.exists():
            fail(no_dataset(name))
        card = load_card(ds)
        problems = data_problems(ds, card)
    except CardError as exc:
        fail(str(exc))
    _answer(card, as_json, str(problems_error(name, problems)) if problems else None)
