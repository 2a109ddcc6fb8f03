"""`posecoach retrain`: the retrain flow for one dataset, with a summary or --json."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from flows.options import DatasetOpt, JsonOpt, ProfileOpt
from flows.output import console, emit, fail, work
from model.evaluate.summary import figure_at

KEY_FIGURES = {
    "micro": "accuracy (micro)",
    "macro": "accuracy (macro)",
    "correction.independent.all": "correction (judge)",
    "correction.self.all": "correction (self)",
}


def show(result: dict[str, Any]) -> None:
    head = f"{result['model']}: dataset {result['dataset']} v{result['dataset_version']}"
    if result["status"] == "skipped":
        console.print(f"{head}: skipped, {result['decision']['reason']}")
        return
    table = Table(title=f"{head}, profile {result['profile']}")
    for column in ("figure", "CV mean ± std", "gate: new", "gate: champion"):
        table.add_column(column)
    for key, label in KEY_FIGURES.items():
        mean, std = result["cv_mean"].get(f"evaluation.{key}"), result["cv_std"].get(
            f"evaluation.{key}")
        cand, champ = figure_at(result["gate"], key), figure_at(result["champion_gate"] or {}, key)
        table.add_row(label, "-" if mean is None else f"{mean:.1%} ± {std:.1%}",
                      "-" if cand is None else f"{cand:.1%}",
                      "-" if champ is None else f"{champ:.1%}")
    console.print(table)
    cv = (result.get("reference") or {}).get("cv", {})
    if cv.get("reference"):
        sizes = " / ".join(cv["reference"])
        alone = ("" if cv.get("network") is None else "the network alone "
                 + " / ".join(f"{a:.1%}" for a in cv["network"].values()) + ", ")
        console.print(f"correct repetitions told from mistakes on the CV's held-out people, "
                      f"outside {sizes} of their own known correct: {alone}against those (score "
                      f"--reference) {' / '.join(f'{a:.1%}' for a in cv['reference'].values())}")
    d = result["decision"]
    console.print(f"v{result['version']}: [bold]{result['status']}[/bold] ({d['rule']}: "
                  f"{d['reason']}) in {result['seconds']:.0f} s")


def retrain(
    dataset: str = DatasetOpt,
    profile: str = ProfileOpt,
    seed: int = typer.Option(0, "--seed", help="Training seed."),
    actor: str = typer.Option(None, "--actor", help="Who asks (default: the user)."),
    as_json: bool = JsonOpt,
) -> None:
    """Cross-validate, train, register and (through the gate) promote a dataset's model."""
    from flows.retrain import RetrainError, retrain_flow
    from registry.gate import default_actor
    from registry.versions import RegistryError

    try:
        with work(as_json):
            result = retrain_flow(dataset=dataset, profile=profile, seed=seed,
                                  actor=actor or default_actor())
    except (RetrainError, RegistryError, KeyError) as exc:
        fail(str(exc))
    emit(result, as_json, show)
