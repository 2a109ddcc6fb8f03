"""`posecoach models list | promote VERSION [--force --reason TEXT] | rollback |
import-paper PATH [--name NAME]`.

Exit status: 0 when done (listed, promoted, forced, rolled back); 1 when the gate refused the
version or the registry could not do it (unknown model or version, no previous champion);
2 for a request that is wrong as asked (--force without --reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from flows.options import DatasetOpt, JsonOpt
from flows.output import console, emit, fail

if TYPE_CHECKING:
    from registry.gate import Decision


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def show_listing(result: dict[str, Any]) -> None:
    table = Table(title=f"{result['model']} (champion: {result['champion'] or 'none'})")
    for column in ("version", "aliases", "created", "dataset v", "code", "macro",
                   "correction (indep.)", "last decision"):
        table.add_column(column)
    for row in result["versions"]:
        table.add_row(row["version"], ", ".join(row["aliases"]), row["created"],
                      row["dataset_version"], row["code_version"],
                      _figure(row["figures"]["macro"]),
                      _figure(row["figures"]["correction_independent"]), row["decision"])
    console.print(table)


def show_decision(result: dict[str, Any]) -> None:
    colour = {"refused": "red", "forced": "yellow"}.get(result["decision"], "green")
    console.print(f"{result['name']} version {result['version']}: "
                  f"[{colour}]{result['decision']}[/{colour}] ({result['rule']}): "
                  f"{result['reason']}")
    console.print(f"champion: {result['champion_before'] or 'none'} -> "
                  f"{result['champion_after'] or 'none'}; asked by {result['actor']} "
                  f"at {result['time']}")
    skipped = result["figures"].get("skipped_deleted")
    if skipped:
        console.print(f"skipped earlier champions deleted from the registry: "
                      f"{', '.join(skipped)}")


def _answer(decision: Decision, as_json: bool) -> None:
    emit(decision.to_dict(), as_json, show_decision)
    if decision.decision == "refused":
        fail(f"version {decision.version} not promoted: {decision.reason} (to promote it "
             "anyway, add --force --reason TEXT)")


def list_models(dataset: str = DatasetOpt, as_json: bool = JsonOpt) -> None:
    """Versions, aliases and key gate figures of the dataset's registered model."""
    from flows.models import listing
    from registry.versions import RegistryError

    try:
        result = listing(dataset)
    except RegistryError as exc:
        fail(str(exc))
    emit(result, as_json, show_listing)


def promote_model(
    version: str = typer.Argument(..., help="The version to make champion."),
    dataset: str = DatasetOpt,
    force: bool = typer.Option(False, "--force", help="Promote even if the gate refuses."),
    reason: str = typer.Option(None, "--reason", help="Why (required with --force)."),
    as_json: bool = JsonOpt,
) -> None:
    """Make VERSION the champion if the gate lets it, or regardless with --force --reason.
    A version the gate refused stays refused; any other is judged on the gate-subject figures
    recorded on it and on the champion at registration."""
    from registry.gate import default_actor, promote
    from registry.versions import RegistryError
    from registry.versions import model_name as registered_name

    if force and not (reason and reason.strip()):
        fail("--force needs --reason TEXT saying why", code=2)
    try:
        decision = promote(registered_name(dataset), version, force=force, reason=reason,
                           actor=default_actor())
    except RegistryError as exc:
        fail(str(exc))
    _answer(decision, as_json)


def rollback_model(
    dataset: str = DatasetOpt,
    reason: str = typer.Option(None, "--reason", help="Why the champion goes back."),
    as_json: bool = JsonOpt,
) -> None:
    """Give the champion alias back to the previous champion."""
    from registry.gate import default_actor, rollback
    from registry.versions import RegistryError
    from registry.versions import model_name as registered_name

    try:
        decision = rollback(registered_name(dataset), actor=default_actor(), reason=reason)
    except RegistryError as exc:
        fail(str(exc))
    _answer(decision, as_json)


def show_import(result: dict[str, Any]) -> None:
    origin = result["origin"]
    console.print(f"{origin['file']} ({origin['network']}, sha256 {origin['sha256'][:12]}) -> "
                  f"{result['model']} version {result['version']} (challenger): "
                  f"{result['variant']}{', attention' if result['attention'] else ''}, "
                  f"{len(result['classes'])} classes, normalisation "
                  f"{result['normalization']['mode']} ({result['normalization']['units']}); "
                  f"saved in {result['model_dir']}")
    layers = dict.fromkeys(_layer(key) for key in origin["unused_tensors"])
    if layers:
        console.print(f"left out (the seed's forward pass does not use them): "
                      f"{', '.join(layers)}")


def _layer(key: str) -> str:
    """The layer a state-dict key belongs to: `gcbs.0` of `gcbs.0.bn1.weight`, `gcin2` of
    `gcin2.adj`."""
    parts = key.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 and parts[1].isdigit() else parts[0]


def import_paper_model(
    path: Path = typer.Argument(..., help="A state dict of the paper's released weights (.pt)."),
    name: str = typer.Option(None, "--name", help="Registered as posecoach-NAME (default: "
                             "paper-<file stem>)."),
    classifier_only: bool = typer.Option(False, "--classifier-only", help="Keep only the trunk "
                                         "and classification branch (e.g. a judge)."),
    units: str = typer.Option("m", "--units", help="Units of the coordinates the weights were "
                              "trained on (m, cm, mm)."),
    as_json: bool = JsonOpt,
) -> None:
    """Import the paper's released weights (Ours.pt, Classifer.pt, classifer_for_eval.pt),
    save them as a posecoach model with the paper's preprocessing and register them."""
    from flows.models import import_paper
    from model.learn.paper import PaperWeightsError
    from registry.versions import RegistryError

    if not path.is_file():
        fail(f"{path}: no such file")
    try:
        result = import_paper(path, name, classifier_only, units)
    except (PaperWeightsError, ValueError, RegistryError) as exc:
        fail(str(exc))
    emit(result, as_json, show_import)
