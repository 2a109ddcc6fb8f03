"""Dataset cards: defaults from the data, stored beside the table, checked against it, read by
training (the recipe), the CLI, segmentation and scoring; older models and datasets still work."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.retrain import RetrainError, check_card
from model.data.card import (
    CARD_FILE,
    CardError,
    DatasetCard,
    configure,
    data_problems,
    default_card,
    default_gate,
    ensure_card,
    load_card,
    read_card,
    write_card,
)
from model.data.dataset import Dataset
from model.data.sequence import Sequence, SequenceError, validate
from model.data.synth import make_dataset, make_session
from model.learn.recipe import choose_motion_only
from model.learn.saved import CARD, TrainedModel
from model.learn.train import train
from model.serve.scoring import cut_session, score
from model.serve.segment import segment
from model.settings import PROFILES, environment, run_config

TINY = replace(PROFILES["test"].train, epochs=1, hidden=16, n_dct=10, batch_size=8, threads=1)


@pytest.fixture
def lake(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("POSECOACH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("POSECOACH_LAKE", str(tmp_path / "lake"))
    return tmp_path / "lake"


@pytest.fixture(scope="module")
def seqs() -> list[Sequence]:
    return make_dataset(n_subjects=3, reps=1, seed=5, exercises=("squat",))


@pytest.fixture(scope="module")
def model(seqs) -> TrainedModel:
    return train(seqs, TINY, progress=False)


def test_the_default_gate_is_the_last_fifth_of_the_subjects_in_natural_order():
    assert default_gate({"s1", "s2", "s3", "s4"}) == ("s4",)
    assert default_gate({f"s{k:02d}" for k in range(1, 11)}) == ("s09", "s10")
    assert default_gate({f"p{k}" for k in range(1, 11)}) == ("p9", "p10")
    assert default_gate({"a", "b"}) == ()


def test_a_dataset_gets_its_default_card_at_first_ingest_and_keeps_a_changed_one(lake, seqs):
    ds = Dataset("mine")
    assert not load_card(ds).stored and read_card("mine", ds.uri) is None
    ds.write(seqs)
    card = ensure_card(ds)
    assert card.stored and card == default_card("mine", {"s1", "s2", "s3"})
    assert (card.gate_subjects, card.motion_only, card.beta) == (("s3",), "auto", 0.1)
    assert json.loads((lake / "mine" / CARD_FILE).read_text())["gate_subjects"] == ["s3"]
    changed = configure(ds, gate_subjects=("s2",), motion_only=True, beta=0.5)
    more = make_dataset(n_subjects=4, reps=1, seed=6, exercises=("squat",))
    ds.write(more)
    assert ensure_card(ds) == changed and load_card(ds).gate_subjects == ("s2",)
    assert Dataset("mine").count() == len(seqs) + len(more)  # the card is no part of the table


def test_a_card_naming_a_gate_subject_without_data_is_refused_naming_it(lake, seqs):
    ds = Dataset("mine")
    ds.write(seqs)
    with pytest.raises(CardError, match=r"gate subjects \['nobody'\] that have no data"):
        configure(ds, gate_subjects=("s1", "nobody"))
    with pytest.raises(CardError, match=r"also holds \['squat'\]"):
        configure(ds, exercises=("arm_raise",))
    assert read_card("mine", ds.uri) is None  # nothing written


def test_a_skeleton_the_stored_rows_cannot_be_mapped_onto_is_refused(lake, seqs):
    ds = Dataset("mine")
    ds.write(seqs)
    with pytest.raises(CardError, match=r"holds rows in skeleton\(s\) \['ec3d19'\], which have "
                       r"no joint map onto skeleton 'kinect2'.*: set --skeleton ec3d19"):
        configure(ds, skeleton="kinect2")
    assert read_card("mine", ds.uri) is None


def _fix_command(message: str) -> list[str]:
    """The arguments of the one command an error says fixes every problem."""
    assert "with: posecoach data configure " in message, message
    return message.split("with: posecoach ", 1)[1].split()


def test_every_card_problem_is_named_with_its_fix_and_one_command_fixes_all(lake, seqs):
    ds = Dataset("mine")
    ds.write(seqs)  # subjects s1-s3, squats only
    write_card(DatasetCard("mine", gate_subjects=("p9", "p10"), exercises=("squat", "sit_to_stand"),
                           segmentation={"sit_to_stand": "excursion"}), ds.uri)
    with pytest.raises(CardError) as one:
        configure(ds, gate_subjects=("s3",))
    message = str(one.value)
    assert "lists exercises ['sit_to_stand'] that the data does not hold" in message
    assert ": set --exercises squat. Fix it with" in message and "gate subjects" not in message
    assert _fix_command(message) == ["data", "configure", "mine", "--gate-subjects", "s3",
                                     "--exercises", "squat"]
    with pytest.raises(CardError) as both:
        configure(ds, beta=0.2)
    said = str(both.value)
    assert "(2 problems): (1) it names gate subjects ['p9', 'p10'] that have no data" in said
    assert ": set --gate-subjects s3; (2) it lists exercises" in said
    assert ": set --exercises squat. Fix them all with" in said
    assert _fix_command(str(both.value))[3:] == ["--beta", "0.2", "--gate-subjects", "s3",
                                                 "--exercises", "squat"]
    with pytest.raises(RetrainError) as retrain:
        check_card(load_card(ds), seqs, 1)
    assert "v1" in str(retrain.value) and "--exercises squat" in str(retrain.value)
    shown = CliRunner().invoke(app, ["data", "show", "mine", "--json"])
    assert shown.exit_code == 0, shown.output
    assert _fix_command(json.loads(shown.stdout)["problems"])[3:] == [
        "--gate-subjects", "s3", "--exercises", "squat"]
    fixed = CliRunner().invoke(app, _fix_command(message))
    assert fixed.exit_code == 0, fixed.output
    card = load_card(ds)
    assert (card.gate_subjects, card.exercises) == (("s3",), ("squat",))
    assert data_problems(ds, card) == []
    check_card(replace(card, exercises=("squat", "lunge")), seqs, 1)  # trains all the same


def test_an_exercise_the_data_does_not_hold_is_refused(lake, seqs):
    ds = Dataset("mine")
    ds.write(seqs)
    with pytest.raises(CardError, match=r"exercises \['arm_raise'\] that the data does not hold"):
        configure(ds, exercises=("arm_raise", "squat"))
    assert configure(ds, exercises=("squat",)).exercises == ("squat",)


def test_a_dataset_without_data_or_card_is_named_not_given_a_card(lake):
    ds = Dataset("nosuch")
    with pytest.raises(CardError, match=r"dataset 'nosuch' does not exist.*data create nosuch"):
        configure(ds, beta=0.2)
    assert read_card("nosuch", ds.uri) is None
    runner = CliRunner()
    for args in (["show", "nosuch"], ["configure", "nosuch", "--beta", "0.2"]):
        out = runner.invoke(app, ["data", *args])
        assert out.exit_code == 1 and "does not exist" in out.output, out.output
    made = runner.invoke(app, ["data", "create", "nosuch", "--exercises", "arm_raise"])
    assert made.exit_code == 0, made.output
    assert configure(ds, beta=0.2).exercises == ("arm_raise",)  # a created card, before data


def test_a_cards_fingerprint_follows_its_content():
    card = DatasetCard("mine", gate_subjects=("s3",))
    assert card.fingerprint() == DatasetCard("mine", gate_subjects=("s3",)).fingerprint()
    changed = [replace(card, segmentation={"arm_raise": "hold"}), replace(card, beta=0.2),
               replace(card, gate_subjects=("s2",)), replace(card, motion_only=True)]
    assert len({c.fingerprint() for c in (card, *changed)}) == 1 + len(changed)


@pytest.mark.parametrize("field, value, message", [
    ("motion_only", "sometimes", "motion_only must be"),
    ("beta", -1.0, "beta must be"),
    ("average_tail", 1.5, "average_tail must be"),
    ("label_smoothing", 1.0, "label_smoothing must be"),
    ("skeleton", "openpose_99", "unknown skeleton"),
    ("exercises", ("Arm Raise",), "not a plain name"),
    ("segmentation", {"arm_raise": "wave"}, "segmentation"),
])
def test_bad_card_fields_are_refused_naming_the_dataset(field, value, message):
    with pytest.raises(CardError, match=f"dataset 'mine' card: .*{message}"):
        DatasetCard("mine", **{field: value})


def test_a_broken_stored_card_is_an_error_naming_its_file(lake, seqs):
    ds = Dataset("mine")
    ds.write(seqs)
    (lake / "mine" / CARD_FILE).write_text('{"format": 1, "name": "mine", "colour": "red"}')
    with pytest.raises(CardError, match=r"unknown fields \['colour'\]"):
        load_card(ds)
    (lake / "mine" / CARD_FILE).write_text("{not json")
    with pytest.raises(CardError, match=CARD_FILE):
        load_card(ds)


def test_the_environment_still_overrides_the_gate(lake, seqs, monkeypatch):
    ds = Dataset("mine")
    ds.write(seqs)
    ensure_card(ds)
    monkeypatch.setenv("POSECOACH_GATE_SUBJECTS_MINE", "s1, s2")
    assert load_card(ds).gate_subjects == ("s1", "s2")


def test_run_config_takes_the_cards_recipe():
    card = DatasetCard("mine", motion_only=True, beta=0.3, average_tail=0.2, label_smoothing=0.05)
    config = run_config(PROFILES["demo"], card, seed=4, threads=2, epochs=1)
    assert (config.motion_only, config.beta, config.average_tail, config.label_smoothing,
            config.seed, config.epochs) == (True, 0.3, 0.2, 0.05, 4, 1)
    default = run_config(PROFILES["demo"], DatasetCard("other"))
    assert (default.motion_only, default.average_tail, default.label_smoothing) == (
        "auto", 0.5, 0.1)
    paper = run_config(PROFILES["demo"])  # no card: the paper's settings
    assert (paper.motion_only, paper.average_tail, paper.label_smoothing) == (False, 0.0, 0.0)


def _two_class_data(rng, mean_pose_is_the_class: bool) -> tuple[list[np.ndarray], list]:
    """Six subjects, each with their own build (a random offset of every joint). Either the
    class is a stance (every joint shifted sideways: the mean pose), or it is how far the body
    moves while each person's posture also shifts with it, one way for half of them and the
    other way for the rest (the mean pose misleads across people)."""
    poses, seqs = [], []
    wave = np.cos(np.linspace(0, 2 * np.pi, 40))[:, None]
    for k in range(6):
        build = rng.normal(0, 0.3, (1, 19, 3))
        for label in ("correct", "wrong") * 4:
            bad = label == "wrong"
            p = build + rng.normal(0, 0.01, (40, 19, 3))
            if mean_pose_is_the_class:
                p[:, :, 1] += 0.15 * bad + rng.normal(0, 0.03)
                p[:, :, 2] += wave * rng.normal(0.4, 0.1)
            else:
                p[:, :, 1] += (1 if k % 2 else -1) * 0.3 * bad
                p[:, :, 2] += wave * ((0.5 if bad else 0.4) + rng.normal(0, 0.03))
            poses.append(p.astype(np.float32))
            seqs.append(Sequence(poses=p, subject=f"s{k}", exercise="squat",
                                 skeleton="ec3d19", fps=30.0, label=label))
    return poses, seqs


@pytest.mark.parametrize("mean_pose_is_the_class", [False, True])
def test_auto_hides_the_mean_pose_only_where_it_carries_the_person(mean_pose_is_the_class):
    poses, seqs = _two_class_data(np.random.default_rng(0), mean_pose_is_the_class)
    chosen, figures = choose_motion_only(poses, seqs, n_dct=10)
    assert chosen is (not mean_pose_is_the_class)
    assert figures["subjects"] == [f"s{k}" for k in range(6)]


def test_training_resolves_auto_and_the_saved_model_keeps_the_choice(seqs, tmp_path):
    trained = train(seqs, replace(TINY, motion_only="auto"), progress=False)
    assert isinstance(trained.config.motion_only, bool)
    assert trained.meta["recipe"]["motion_only"]["motion_only"] is trained.config.motion_only
    assert TrainedModel.load(trained.save(tmp_path / "m")).config == trained.config


def test_an_exercise_posecoach_does_not_name_is_cut_as_excursions_unless_a_card_says():
    poses = np.zeros((90, 19, 3), np.float32)
    assert segment(poses, "arm_raise", 30.0, hold_window=30) == []
    assert segment(poses, "arm_raise", 30.0, hold_window=30,
                   declared={"arm_raise": "hold"}) == [(0, 30), (30, 60), (60, 90)]


def test_any_plain_exercise_is_valid_data_and_gets_the_per_joint_words(seqs):
    raises = [replace(s, exercise="arm_raise", label="correct" if s.rep % 2 else "elbow_bent")
              for s in make_dataset(n_subjects=2, reps=2, seed=7, exercises=("squat",))]
    assert validate(raises[0]).exercise == "arm_raise"
    with pytest.raises(SequenceError, match="not a plain name"):
        validate(replace(raises[0], exercise="../arm"))
    model = train(raises, TINY, progress=False)
    results = score(model, raises)
    assert all(r.ok for r in results)
    cues = [r.cues[0] for r in results if r.label == "elbow_bent"]
    assert all(c.startswith(("elbow bent: move your", "not sure, possibly elbow bent: move"))
               for c in cues)
    session, bounds = make_session("u1", "squat", ["correct", "correct"], seed=1)
    assert len(cut_session(model, replace(session, exercise="arm_raise"))) == len(bounds)


def test_scoring_refuses_an_exercise_the_model_never_saw(model, seqs):
    [result] = score(model, [replace(seqs[0], exercise="burpee")])
    assert result.error_kind == "unknown_exercise" and "squat" in result.error


def test_a_model_saved_before_cards_loads_and_scores(model, seqs, tmp_path):
    """model.json as written before: motion_only a plain bool, no recipe, card or
    segmentation in the meta."""
    folder = model.save(tmp_path / "old")
    card = json.loads((folder / CARD).read_text())
    card["train"]["motion_only"] = False
    for key in ("recipe", "card", "segmentation"):
        card["meta"].pop(key, None)
    (folder / CARD).write_text(json.dumps(card))
    old = TrainedModel.load(folder)
    assert [r.ok for r in score(old, seqs)] == [True] * len(seqs)
    session, _ = make_session("u1", "squat", ["correct", "correct"], seed=1)
    assert len(cut_session(old, session)) == 2


def test_data_create_configure_show_through_the_cli(lake, seqs):
    Dataset("mine").write(seqs)
    runner = CliRunner()
    shown = runner.invoke(app, ["data", "show", "mine", "--json"])
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert not doc["stored"] and doc["card"]["gate_subjects"] == ["s3"]
    made = runner.invoke(app, ["data", "create", "mine", "--beta", "0.2", "--json"])
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["card"]["beta"] == 0.2
    again = runner.invoke(app, ["data", "create", "mine"])
    assert again.exit_code == 1 and "already has a card" in again.output
    bad = runner.invoke(app, ["data", "configure", "mine", "--gate-subjects", "s1,ghost"])
    assert bad.exit_code == 1 and "ghost" in bad.output
    good = runner.invoke(app, ["data", "configure", "mine", "--motion-only", "true",
                               "--segmentation", "squat=hold", "--average-tail", "0.3",
                               "--label-smoothing", "0", "--json"])
    assert good.exit_code == 0, good.output
    card = json.loads(good.stdout)["card"]
    assert (card["motion_only"], card["segmentation"], card["beta"], card["average_tail"],
            card["label_smoothing"]) == (True, {"squat": "hold"}, 0.2, 0.3, 0.0)
    assert runner.invoke(app, ["data", "configure", "mine"]).exit_code == 2


def test_the_cli_refuses_a_bad_setting_before_any_verb(tmp_path):
    with environment({"POSECOACH_HOME": str(tmp_path), "POSECOACH_FPS": "fast"}):
        result = CliRunner().invoke(app, ["data", "show", "ec3d"])
    assert result.exit_code == 2
    assert "POSECOACH_FPS='fast' is not a finite number" in result.output
    assert not (tmp_path / "lake").exists()


def test_the_cli_refuses_a_lake_deltalake_cannot_take(tmp_path):
    home = tmp_path / "home[1]"
    with environment({"POSECOACH_HOME": str(home), "POSECOACH_LAKE": None}):
        result = CliRunner().invoke(app, ["data", "show", "ec3d"])
    assert result.exit_code == 2
    said = "".join(result.output.split())
    assert "".join(f"error: the lake {home / 'lake'}".split()) in said
    assert "cannotholdDeltatables:itspathholds'['" in said
    assert not home.exists()
