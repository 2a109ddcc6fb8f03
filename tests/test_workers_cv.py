"""workers.cv: leave-one-subject-out folds as Ray tasks give the figures of the same folds run
in-process; a fold that fails names itself; the mean and spread over folds; a run's folder under
$POSECOACH_HOME/cv replaces earlier ones beyond keep_cv, never one in use."""

from __future__ import annotations

import fcntl
from pathlib import Path

import numpy as np
import pytest
import torch

from model.data.synth import make_dataset
from model.evaluate.folds import loso_folds, run_fold
from model.evaluate.summary import scalar_figures, summarise
from model.learn.config import TrainConfig
from model.settings import PROFILES, run_config
from workers.cv import (
    HELD_FILE,
    CVResult,
    FoldError,
    FoldOutcome,
    cross_validate,
    fresh_workdir,
    prune_workdirs,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sequences():
    return make_dataset(n_subjects=3, reps=1, seed=11, exercises=("squat",))


@pytest.fixture(scope="module")
def config() -> TrainConfig:
    return run_config(PROFILES["test"], seed=2, threads=1, epochs=2)


def test_ray_folds_give_the_in_process_figures(ray_local, sequences, config, tmp_path):
    result = cross_validate(sequences, config, threads_per_fold=1, workdir=tmp_path / "ray",
                            progress=False)
    assert [f.held_out for f in result.folds] == ["s1", "s2", "s3"]
    here = {}
    for held_out, train_subjects in loso_folds([s.subject for s in sequences]):
        train = [s for s in sequences if s.subject in train_subjects]
        test = [s for s in sequences if s.subject == held_out]
        fold = run_fold(train, test, config, workdir=tmp_path / "here" / held_out,
                        progress=False)
        here[held_out] = fold.evaluation
    for fold in result.folds:
        assert fold.metrics["evaluation"] == here[fold.held_out]
        assert fold.attempts == 1
        assert fold.train_subjects == sorted({"s1", "s2", "s3"} - {fold.held_out})
        assert (tmp_path / "ray" / f"fold-{fold.held_out}" / "model" / "model.json").is_file()
    macro = [here[k]["macro"] for k in sorted(here)]
    assert result.mean["evaluation.macro"] == pytest.approx(np.mean(macro))
    assert result.std["evaluation.macro"] == pytest.approx(np.std(macro))


def test_a_fold_that_raises_fails_the_cross_validation_naming_it(ray_local, sequences, config,
                                                                  tmp_path):
    broken = [s.with_label(None) if s.subject == "s2" else s for s in sequences]
    with pytest.raises(FoldError, match=r"fold held_out='s[13]'.*no label") as err:
        cross_validate(broken, config, subjects=["s1", "s2", "s3"], workdir=tmp_path,
                       progress=False)
    assert err.value.attempts == 1


def _earlier_runs(root: Path, n: int) -> list[Path]:
    folders = [root / f"20260101-00000{i}-abcde{i}" for i in range(n)]
    for folder in folders:
        (folder / "fold-s1").mkdir(parents=True)
        (folder / "fold-s1" / "worker.pid").write_text("1")
    return folders


def _in_use(folder: Path) -> bool:
    with open(folder / HELD_FILE, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def test_a_new_cv_folder_removes_earlier_ones_beyond_keep_but_none_in_use(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("POSECOACH_HOME", str(tmp_path))
    root = tmp_path / "cv"
    earlier = _earlier_runs(root, 5)
    (root / "notes").mkdir()  # not a run's folder: never touched
    with open(earlier[1] / HELD_FILE, "ab") as other:  # a retrain of another dataset, running
        fcntl.flock(other, fcntl.LOCK_EX)
        with fresh_workdir(keep=2) as new:
            assert new.parent == root and _in_use(new)
            assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(
                [earlier[1].name, earlier[3].name, earlier[4].name, new.name, "notes"])
            assert prune_workdirs(root, 0) == earlier[3:]  # the two held stay
        assert not _in_use(new)  # released at the end, like a killed run's
    assert prune_workdirs(root, 1) == [earlier[1]] and new.is_dir() and (root / "notes").is_dir()


def test_a_failed_cross_validation_leaves_its_folder_and_keep_cv_earlier_ones(
        ray_local, sequences, config, tmp_path, monkeypatch):
    monkeypatch.setenv("POSECOACH_HOME", str(tmp_path))
    monkeypatch.setenv("POSECOACH_KEEP_CV", "1")
    earlier = _earlier_runs(tmp_path / "cv", 3)
    broken = [s.with_label(None) if s.subject == "s2" else s for s in sequences]
    with pytest.raises(FoldError):
        cross_validate(broken, config, subjects=["s1", "s2", "s3"], progress=False)
    left = sorted(p for p in (tmp_path / "cv").iterdir() if p.is_dir())
    assert left[0] == earlier[-1] and len(left) == 2
    assert (left[1] / "fold-s1").is_dir() and not _in_use(left[1])


def test_subjects_without_sequences_are_refused(sequences, config):
    with pytest.raises(ValueError, match=r"\['s9'\] have no sequences"):
        cross_validate(sequences, config, subjects=["s1", "s9"])


def _outcome(held_out: str, macro: float | None, extra: dict) -> FoldOutcome:
    return FoldOutcome(held_out=held_out, train_subjects=[], model_dir="", node_id="", pid=0,
                       attempts=1, metrics={"evaluation": {"macro": macro, **extra}})


def test_summary_covers_the_figures_every_fold_has():
    folds = [_outcome("a", 0.5, {"sdtw_after": 2.0, "confusion": [[1]]}),
             _outcome("b", 1.0, {"sdtw_after": None}),
             _outcome("c", 0.0, {"sdtw_after": 4.0, "flag": True})]
    mean, std = summarise([f.metrics for f in folds])
    assert mean == {"evaluation.macro": 0.5}
    assert std["evaluation.macro"] == pytest.approx(np.std([0.5, 1.0, 0.0]))
    assert scalar_figures({"a": {"b": 1, "c": [1, 2]}, "d": np.float32(2.5)}) == \
        {"a.b": 1.0, "d": 2.5}
    as_dict = CVResult(folds, mean, std).to_dict()
    assert [f["held_out"] for f in as_dict["folds"]] == ["a", "b", "c"]
