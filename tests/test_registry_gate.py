"""The promotion gate as rules over figures, and promote / force / rollback on a registry
(the run's sqlite store): decisions move the aliases and leave their tags; the CLI answers
with the documented exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from model.data.synth import make_dataset, make_session
from model.learn.train import train
from model.settings import get_settings, run_config
from registry.gate import GateFigures, GatePolicy, champion_history, promote, rollback, verdict
from registry.pyfunc import log_packaged_model
from registry.tracking import code_version, log_training_run
from registry.versions import (
    CHALLENGER,
    CHAMPION,
    RegistryError,
    alias_version,
    client,
    get_version,
    list_versions,
    model_name,
    register_candidate,
)

DATASET = "gatetest"
CLASSES = ("squat/correct", "squat/knees_inward", "plank/correct")


def figures(macro: float | None, correction: float | None,
            per_class: tuple[float | None, ...] = (0.8, 0.7, 0.9)) -> dict:
    """Gate figures shaped like model.evaluate.metrics' Evaluation.to_dict()."""
    return {
        "micro": macro,
        "macro": macro,
        "per_class": [{"class": c, "n": 4, "accuracy": a} for c, a in
                      zip(CLASSES, per_class, strict=True)],
        "correction": {"self": {"all": correction}, "independent": {"all": correction}},
    }


def test_better_candidate_passes_and_worse_is_refused() -> None:
    champ = GateFigures.from_evaluation(figures(0.80, 0.90))
    better = verdict(GateFigures.from_evaluation(figures(0.85, 0.91)), champ)
    assert better.passed and better.rule == "not_worse"
    within = verdict(GateFigures.from_evaluation(figures(0.79, 0.89)), champ)
    assert within.passed
    worse_macro = verdict(GateFigures.from_evaluation(figures(0.70, 0.95)), champ)
    assert not worse_macro.passed and worse_macro.rule == "macro_accuracy"
    worse_corr = verdict(GateFigures.from_evaluation(figures(0.90, 0.80)), champ)
    assert not worse_corr.passed and worse_corr.rule == "independent_correction"
    loose = verdict(GateFigures.from_evaluation(figures(0.70, 0.95)), champ,
                    GatePolicy(macro_margin=0.2))
    assert loose.passed


def test_nan_and_collapsed_classes_are_refused() -> None:
    champ = GateFigures.from_evaluation(figures(0.80, 0.90))
    no_judge = verdict(GateFigures.from_evaluation(figures(0.9, None)), champ)
    assert not no_judge.passed and no_judge.rule == "no_nan"
    assert "correction" in no_judge.reason
    nan_macro = verdict(GateFigures.from_evaluation(figures(math.nan, 0.9)), champ)
    assert not nan_macro.passed and nan_macro.rule == "no_nan"
    zero = verdict(GateFigures.from_evaluation(figures(0.9, 0.95, (1.0, 0.0, 1.0))), champ)
    assert not zero.passed and zero.rule == "class_collapse"
    assert "squat/knees_inward" in zero.reason
    far_below = verdict(GateFigures.from_evaluation(figures(0.85, 0.95, (1.0, 0.3, 1.0))),
                        champ)
    assert not far_below.passed and far_below.rule == "class_collapse"


def test_first_model_needs_the_floors() -> None:
    low = verdict(GateFigures.from_evaluation(figures(0.3, 0.9)), None)
    assert not low.passed and low.rule == "floor_macro"
    low_corr = verdict(GateFigures.from_evaluation(figures(0.9, 0.2)), None)
    assert not low_corr.passed and low_corr.rule == "floor_correction"
    ok = verdict(GateFigures.from_evaluation(figures(0.9, 0.9)), None)
    assert ok.passed and ok.rule == "above_floors"
    assert verdict(GateFigures.from_evaluation(figures(0.3, 0.2)), None,
                   GatePolicy(floor_macro=0.0, floor_correction=0.0)).passed


def test_a_correction_that_does_not_help_is_refused() -> None:
    def with_baseline(correction: float, uncorrected: float) -> GateFigures:
        figs = figures(0.9, correction)
        figs["correction"]["uncorrected"] = {"all": uncorrected}
        return GateFigures.from_evaluation(figs)

    idle = verdict(with_baseline(0.30, 0.30), None)
    assert not idle.passed and idle.rule == "correction_helps"
    assert "0.300" in idle.reason
    assert verdict(with_baseline(0.40, 0.30), None).passed
    champ = GateFigures.from_evaluation(figures(0.80, 0.30))
    assert verdict(with_baseline(0.30, 0.35), champ).rule == "correction_helps"


@pytest.fixture(scope="module")
def model_uri(mlflow_uri: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """One packaged model (a tiny one-epoch training) logged to the run's store."""
    torch.set_num_threads(1)
    seqs = make_dataset(n_subjects=2, reps=1, seed=3)
    config = run_config(get_settings().get_profile("test"), threads=1, epochs=1)
    trained = train(seqs, config, progress=False)
    folder = trained.save(tmp_path_factory.mktemp("gate-model") / "model")
    run_id = log_training_run(dataset=DATASET, dataset_version=1, profile="test",
                              params={"epochs": 1}, skeleton="ec3d19", classes=trained.classes)
    session, _ = make_session("u1", "squat", ["correct", "knees_inward"], seed=1)
    return log_packaged_model(run_id, folder, session).model_uri


def register(model_uri: str, gate: dict) -> str:
    return register_candidate(model_uri, DATASET, dataset_version=1, code_version=code_version(),
                              skeleton="ec3d19", classes=CLASSES, gate=gate)


def cli(*args: str) -> tuple[int, str, str]:
    """Exit status, stdout and stderr (where the human summary and errors go)."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_promote_refuse_force_and_rollback(model_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    name = model_name(DATASET)
    v1 = register(model_uri, figures(0.80, 0.90))
    assert alias_version(name, CHALLENGER) == v1
    first = promote(name, v1, actor="nightly flow")
    assert first.decision == "promoted" and first.rule == "above_floors"
    assert alias_version(name, CHAMPION) == v1
    tags = get_version(name, v1).tags
    assert tags["gate.decision"] == "promoted" and tags["gate.actor"] == "nightly flow"
    assert tags["gate.rule"] == "above_floors" and tags["gate.time"]
    assert json.loads(tags["gate.figures"])["candidate"]["macro"] == 0.80

    v2 = register(model_uri, figures(0.60, 0.90))
    assert alias_version(name, CHALLENGER) == v2
    refused = promote(name, v2, actor="ana")
    assert refused.decision == "refused" and refused.rule == "macro_accuracy"
    assert alias_version(name, CHAMPION) == v1
    assert get_version(name, v2).tags["gate.decision"] == "refused"

    v3 = register(model_uri, figures(0.95, None))
    nan = promote(name, v3, actor="ana")
    assert nan.decision == "refused" and nan.rule == "no_nan"
    assert alias_version(name, CHAMPION) == v1

    with pytest.raises(ValueError, match="reason"):
        promote(name, v2, force=True, actor="ana")
    forced = promote(name, v2, force=True, reason="hotfix for a broken joint map", actor="ana")
    assert forced.decision == "forced" and forced.rule == "refused_before"
    assert forced.figures["gate_reason"].startswith("macro accuracy 0.600")
    assert alias_version(name, CHAMPION) == v2
    tags = get_version(name, v2).tags
    assert tags["gate.decision"] == "forced"
    assert tags["gate.reason"] == "hotfix for a broken joint map"
    assert [d["decision"] for d in json.loads(tags["gate.log"])] == ["refused", "forced"]

    v4 = register(model_uri, figures(0.50, 0.50))
    caller = promote(name, v4, candidate=figures(0.85, 0.95), champion=figures(0.60, 0.90),
                     actor="nightly flow")
    assert caller.decision == "promoted", "figures given by the caller take precedence"
    assert alias_version(name, CHAMPION) == v4
    assert champion_history(name) == [v1, v2, v4]

    back = rollback(name, actor="ana", reason="complaints about v4")
    assert (back.champion_before, back.champion_after) == (v4, v2)
    assert alias_version(name, CHAMPION) == v2
    for version in (v4, v2):
        tags = get_version(name, version).tags
        assert tags["gate.decision"] == "rolled_back"
        assert tags["gate.reason"] == "complaints about v4"
    rollback(name, actor="ana")
    assert alias_version(name, CHAMPION) == v1
    with pytest.raises(RegistryError, match="no previous"):
        rollback(name, actor="ana")

    listed = {s.version: s for s in list_versions(name)}
    assert set(listed) == {v1, v2, v3, v4}
    assert CHAMPION in listed[v1].aliases and CHALLENGER in listed[v4].aliases

    code, out, _ = cli("models", "list", "--dataset", DATASET, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["champion"] == v1 and doc["challenger"] == v4
    by_version = {row["version"]: row for row in doc["versions"]}
    assert by_version[v1]["figures"] == {"macro": 0.8, "correction_independent": 0.9}
    assert by_version[v3]["figures"]["correction_independent"] is None

    code, out, _ = cli("models", "promote", v3, "--dataset", DATASET, "--json")
    assert code == 1 and json.loads(out)["decision"] == "refused"
    assert alias_version(name, CHAMPION) == v1
    code, _, _ = cli("models", "promote", v3, "--dataset", DATASET, "--force")
    assert code == 2
    monkeypatch.setenv("USER", "bob")
    monkeypatch.setenv("LOGNAME", "bob")
    code, out, _ = cli("models", "promote", v3, "--dataset", DATASET, "--force",
                    "--reason", "judge missing, checked by hand", "--json")
    assert code == 0 and json.loads(out)["decision"] == "forced"
    assert get_version(name, v3).tags["gate.actor"] == "bob"
    code, out, _ = cli("models", "rollback", "--dataset", DATASET, "--json")
    assert code == 0 and json.loads(out)["champion_after"] == v1
    code, _, _ = cli("models", "list", "--dataset", "nosuch")
    assert code == 1


def registered(model_uri: str, dataset: str, gate: dict) -> str:
    """A new version of `dataset`'s model with `gate` as the figures recorded at registration."""
    return register_candidate(model_uri, dataset, dataset_version=1, code_version=code_version(),
                              skeleton="ec3d19", classes=CLASSES, gate=gate)


def test_a_refusal_stands_against_the_recorded_figures(model_uri: str) -> None:
    """The retrain's gate refuses v2 on like-for-like figures; the figures recorded at
    registration (other gate data, other judge) would pass it, yet a plain promote restates
    the refusal, also after forcing and rolling back: only --force --reason overrides it."""
    dataset = "gaterefused"
    name = model_name(dataset)

    v1 = registered(model_uri, dataset, figures(0.80, 0.773))
    promote(name, v1, actor="nightly flow")
    v2 = registered(model_uri, dataset, figures(0.80, 0.761))
    nightly = promote(name, v2, candidate=figures(0.80, 0.761), champion=figures(0.80, 0.818),
                      actor="nightly flow")
    assert nightly.decision == "refused" and nightly.rule == "independent_correction"

    for extra in ((), ("--reason", "looks fine")):
        code, _, said = cli("models", "promote", v2, "--dataset", dataset, *extra)
        said = " ".join(said.split())
        assert code == 1 and "refused_before" in said
        assert "independent_correction" in said and "0.818" in said and "nightly flow" in said
        assert f"against champion version {v1}" in said and "--force --reason" in said
    assert alias_version(name, CHAMPION) == v1
    again = promote(name, v2, actor="ana")
    assert again.rule == "refused_before" and again.reason.count("refused by the gate") == 1
    assert again.figures["champion"]["correction"] == 0.818, "the like-for-like figures"

    code, out, _ = cli("models", "promote", v2, "--dataset", dataset, "--force",
                       "--reason", "judged by hand", "--json")
    assert code == 0 and json.loads(out)["decision"] == "forced"
    assert alias_version(name, CHAMPION) == v2
    rollback(name, actor="ana")
    assert promote(name, v2, actor="ana").decision == "refused"
    assert alias_version(name, CHAMPION) == v1


def test_rollback_skips_champions_deleted_from_the_registry(model_uri: str) -> None:
    """champion.history keeps versions deleted since: rollback steps past them, naming them,
    and says so clearly when no earlier champion is left."""
    dataset = "gatedeleted"
    name = model_name(dataset)
    v1, v2, v3 = (register_candidate(model_uri, dataset, dataset_version=1,
                                     code_version=code_version(), skeleton="ec3d19",
                                     classes=CLASSES, gate=figures(macro, macro))
                  for macro in (0.80, 0.82, 0.84))
    for version in (v1, v2, v3):
        promote(name, version, actor="nightly flow")
    assert champion_history(name) == [v1, v2, v3]
    client().delete_model_version(name, v2)

    code, _, said = cli("models", "rollback", "--dataset", dataset)
    assert code == 0 and f"deleted from the registry: {v2}" in " ".join(said.split())
    assert alias_version(name, CHAMPION) == v1 and champion_history(name) == [v1]
    assert json.loads(get_version(name, v1).tags["gate.figures"])["skipped_deleted"] == [v2]

    promote(name, v3, actor="ana")
    client().delete_model_version(name, v1)
    code, _, said = cli("models", "rollback", "--dataset", dataset)
    said = " ".join(said.split())
    assert code == 1 and "Traceback" not in said
    assert f"champion.history (versions {v1})" in said and "deleted from the registry" in said
    assert alias_version(name, CHAMPION) == v3


def test_tags_and_run_record(model_uri: str) -> None:
    version = register(model_uri, figures(0.7, 0.8))
    mv = get_version(model_name(DATASET), version)
    assert mv.tags["dataset_version"] == "1" and mv.tags["skeleton"] == "ec3d19"
    assert json.loads(mv.tags["classes"]) == list(CLASSES)
    assert json.loads(mv.tags["per_class"])[1]["class"] == "squat/knees_inward"
    assert mv.tags["code_version"].startswith("0.")
    home = get_settings().home
    assert Path(home, "mlartifacts", f"posecoach-{DATASET}").is_dir(), \
        "a local store keeps artifacts under POSECOACH_HOME"


def test_decision_is_tagged_before_the_champion_moves(model_uri: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure while moving the alias leaves the decision tagged and the champion unchanged
    (promotion and rollback alike): no champion is ever without its decision record."""
    from mlflow.tracking import MlflowClient

    dataset = "gatecrash"
    name = model_name(dataset)

    v1 = registered(model_uri, dataset, figures(0.80, 0.90))
    promote(name, v1, actor="ana")
    v2 = registered(model_uri, dataset, figures(0.85, 0.92))

    def crash(self, name: str, alias: str, version: str) -> None:
        raise RuntimeError("killed while moving the alias")

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "set_registered_model_alias", crash)
        with pytest.raises(RuntimeError, match="killed"):
            promote(name, v2, actor="nightly flow")
    assert alias_version(name, CHAMPION) == v1
    assert get_version(name, v2).tags["gate.decision"] == "promoted"
    assert champion_history(name) == [v1]

    promote(name, v2, actor="nightly flow")
    assert alias_version(name, CHAMPION) == v2
    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "set_registered_model_alias", crash)
        with pytest.raises(RuntimeError, match="killed"):
            rollback(name, actor="ana", reason="crash test")
    assert alias_version(name, CHAMPION) == v2
    for version in (v1, v2):
        assert get_version(name, version).tags["gate.decision"] == "rolled_back"
