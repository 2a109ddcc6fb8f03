"""`posecoach demo`: the README's main command (see flows/demo.py)."""

from __future__ import annotations

from typing import Any

import typer

from flows import cmd_ingest, cmd_retrain, cmd_score
from flows.options import DatasetOpt, JsonOpt, ProfileOpt
from flows.output import console, emit, fail, work


def show(result: dict[str, Any]) -> None:
    synth = result["synth"]
    console.rule("1. synthetic data")
    console.print(f"{synth['sequences']} repetitions of {synth['subjects']} subjects "
                  f"(synthetic, EC3D-like; not EC3D) in {synth['pickle']}")
    console.rule("2. ingest")
    cmd_ingest.show_report(result["ingest"])
    console.rule("3. retrain")
    cmd_retrain.show(result["retrain"])
    console.rule("4. score uploads")
    console.print(f"scored with {result['scored_with']}")
    cmd_score.show(result["score"])
    review = result["review"]
    console.rule("5. review, labelled, ingested")
    if review["rows"]:
        console.print(f"{review['rows']} repetitions to review; the synthetic labeller filled in "
                      f"{review['labelled_by_truth']} from the sessions' truth ({review['file']})")
        console.print(f"ingested: {review['inserted']} new, {review['duplicates']} already "
                      f"there, {len(review['errors'])} errors; the next retrain pins dataset "
                      f"version {review['version']}, which holds them")
    else:
        console.print("nothing to review")
    console.rule("where things are")
    for key, value in result["where"].items():
        console.print(f"{key}: {value}")
    console.print(f"demo finished in {result['seconds']:.0f} s")


def demo(
    profile: str = ProfileOpt,
    dataset: str = DatasetOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic data."),
    as_json: bool = JsonOpt,
) -> None:
    """Synthesise, ingest, retrain and promote, then score uploaded sessions (all local)."""
    from flows.demo import demo_flow

    try:
        with work(as_json):
            result = demo_flow(profile=profile, dataset=dataset, seed=seed,
                               progress=not as_json)
    except KeyError as exc:
        fail(str(exc.args[0]), 2)
    emit(result, as_json, show)
    if not (result["ingest"]["accounted"] and result["score"]["accounted"]):
        fail("some inputs ended neither as results nor as error records")
