"""`posecoach paper-protocol` on a small synthetic EC3D-format pickle (test profile)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from flows.paper import read_split
from model.data.ec3d_pickle import safe_load, write_ec3d_pickle
from model.data.sequence import SequenceError
from model.data.synth import make_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def pickle_path(tmp_path_factory):
    torch.set_num_threads(1)
    seqs = make_dataset(n_subjects=4, reps=1, seed=11)
    return write_ec3d_pickle(seqs, tmp_path_factory.mktemp("ec3d") / "data_3D.pickle"), seqs


def run(*args: str):
    return runner.invoke(app, ["paper-protocol", "--profile", "test", *args])


def test_json_table_for_two_variants(pickle_path, tmp_path):
    path, seqs = pickle_path
    out = []
    for variant in ("full", "separated_corrector"):
        result = run("--ec3d", str(path), "--variant", variant, "--workdir", str(tmp_path),
                     "--synthetic", "--json")
        assert result.exit_code == 0, result.output
        out.append(json.loads(result.stdout))
    full, corrector = (d["variants"][v] for d, v in zip(out, ("full", "separated_corrector"),
                                                         strict=True))
    doc = out[0]
    assert doc["data"]["synthetic"] is True
    assert doc["n_test"] == sum(s.subject == "s4" for s in seqs)
    assert doc["n_train"] == sum(s.subject in ("s1", "s2", "s3") for s in seqs)
    assert doc["paper_reference"]["macro_classification"] == 0.909
    assert {r["class"] for r in full["per_class"]} == {
        f"{s.exercise}/{s.label}" for s in seqs if s.subject == "s4"
    }
    assert sum(r["n"] for r in full["per_class"]) == doc["n_test"]
    assert 0 <= full["macro"] <= 1 and 0 <= full["correction"]["self"]["macro"] <= 1
    assert full["correction"]["independent"]["all"] is not None
    assert (tmp_path / "confusion-full.png").is_file()
    # a separated corrector does not classify: no accuracy, judged by the independent judge only
    assert corrector["macro"] is None and corrector["correction"]["self"]["all"] is None
    assert corrector["correction"]["independent"]["all"] is not None


def test_human_table_marks_synthetic_and_keeps_the_paper_apart(pickle_path, tmp_path):
    path, _ = pickle_path
    result = run("--ec3d", str(path), "--workdir", str(tmp_path), "--synthetic",
                 "--variant", "separated_classifier")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "synthetic data, not EC3D's figures" in text
    assert "macro" in text and "micro" in text and "squat/knees_inward" in text
    assert "paper (real EC3D, as published" in text and "90.9" in text


def test_a_pickle_without_the_test_subject_fails_with_the_reason(tmp_path):
    path = write_ec3d_pickle(make_dataset(n_subjects=2, reps=1, seed=2), tmp_path / "two.pickle")
    result = run("--ec3d", str(path), "--workdir", str(tmp_path / "w"))
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "two.pickle" in text and "subject keys in the file: 1, 2" in text
    assert "--test-subjects" in text


def _named_pickle(path, names: dict[str, object]):
    """An EC3D pickle whose subjects are the given keys (numbers or names)."""
    seqs = make_dataset(n_subjects=len(names), reps=1, seed=3, exercises=("squat",))
    data = safe_load(write_ec3d_pickle(seqs, path))
    data["labels"] = data["labels"].astype(object)
    data["labels"][:, 1] = [names[f"s{n}"] for n in data["labels"][:, 1]]
    path.write_bytes(pickle.dumps(data))
    return path, seqs


@pytest.mark.parametrize("keys,train,test", [
    ({"s1": "dave", "s2": "alice", "s3": "carol", "s4": "bob"}, ["alice", "bob", "carol"],
     ["dave"]),
    ({"s1": 10, "s2": 2, "s3": 3, "s4": 1}, ["1", "2", "3"], ["10"]),
])
def test_subject_keys_are_sorted_and_taken_by_position(tmp_path, keys, train, test):
    path, seqs = _named_pickle(tmp_path / "named.pickle", keys)
    split = read_split(path)
    assert (split.train_keys, split.test_keys) == (train, test)
    per_subject = len(seqs) // len(keys)
    assert (len(split.train), len(split.test)) == (3 * per_subject, per_subject)
    chosen = read_split(path, train_subjects=[test[0]], test_subjects=train[:2])
    assert (chosen.train_keys, chosen.test_keys, chosen.unused_keys) == (
        [test[0]], train[:2], [train[2]])
    with pytest.raises(SequenceError, match="zoe: no such subject"):
        read_split(path, test_subjects=["zoe"])
    with pytest.raises(SequenceError, match="both train and test"):
        read_split(path, train_subjects=train, test_subjects=train[:1])


def test_padded_text_keys_stay_as_written_and_sort_as_text(tmp_path):
    keys = {"s1": "01", "s2": "1", "s3": "02", "s4": "10"}
    path, seqs = _named_pickle(tmp_path / "padded.pickle", keys)
    split = read_split(path)
    assert (split.order, split.train_keys, split.test_keys) == (
        ["01", "02", "1", "10"], ["01", "02", "1"], ["10"])
    per_subject = len(seqs) // len(keys)
    assert {s.subject for s in split.train} == {"01", "02", "1"}
    assert len(split.train) == 3 * per_subject  # "01" and "1" are two people, never one


@pytest.mark.parametrize("one,other", [(1, "s1"), (1, "1")])
def test_distinct_keys_that_would_read_alike_are_an_error(tmp_path, one, other):
    path, _ = _named_pickle(tmp_path / "clash.pickle", {"s1": one, "s2": other, "s3": 3, "s4": 4})
    with pytest.raises(SequenceError, match="subject keys 1 and '(s1|1)' are distinct") as err:
        read_split(path)
    assert err.value.kind == "subject_collision" and str(path) in str(err.value)


def test_the_cli_prints_which_keys_train_and_test(tmp_path):
    path, _ = _named_pickle(tmp_path / "named.pickle",
                            {"s1": "dave", "s2": "alice", "s3": "carol", "s4": "bob"})
    result = run("--ec3d", str(path), "--workdir", str(tmp_path / "w"), "--variant",
                 "separated_classifier", "--train-subjects", "alice,bob",
                 "--test-subjects", "dave")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "training alice, bob; test dave; unused carol" in text


def test_unknown_variant_and_missing_file(tmp_path):
    result = run("--ec3d", str(tmp_path / "nope.pickle"))
    assert result.exit_code != 0 and "no such file" in " ".join(result.output.split())
    result = run("--ec3d", str(tmp_path / "nope.pickle"), "--variant", "bigger")
    assert result.exit_code != 0 and "'bigger'" in result.output
