"""workers.cv fault tolerance: a fold's worker process killed mid-training (SIGKILL) is retried
from its last checkpoint and the cross-validation completes with every fold; with no retries
left the cross-validation fails naming the fold."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from model.data.synth import make_dataset
from model.learn.config import TrainConfig
from model.learn.train import CHECKPOINT
from model.settings import PROFILES, run_config
from workers.cv import PID_FILE, FoldError, cross_validate

torch.set_num_threads(1)
EPOCHS = 40


@pytest.fixture(scope="module")
def sequences():
    return make_dataset(n_subjects=2, reps=1, seed=4, exercises=("squat",))


@pytest.fixture(scope="module")
def config() -> TrainConfig:
    return run_config(PROFILES["test"], seed=1, threads=1, epochs=EPOCHS)


def kill_after_first_checkpoint(fold_dir: Path, timeout: float = 300) -> tuple[int, dict]:
    """SIGKILL the fold's worker process once its first training checkpoint exists; return the
    pid and the checkpoint it left."""
    ckpt = fold_dir / "checkpoints" / "model" / CHECKPOINT
    deadline = time.monotonic() + timeout
    while not (ckpt.exists() and (fold_dir / PID_FILE).exists()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no checkpoint at {ckpt}")
        time.sleep(0.02)
    pid = int((fold_dir / PID_FILE).read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    return pid, torch.load(ckpt, weights_only=True)


def test_killed_fold_resumes_from_its_checkpoint(ray_local, sequences, config, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="workers.cv")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(cross_validate, sequences, config, workdir=tmp_path,
                              max_retries=2, progress=False)
        pid, ckpt = kill_after_first_checkpoint(tmp_path / "fold-s1")
        result = running.result(timeout=600)
    assert 1 <= ckpt["epoch"] < EPOCHS, "the kill must land mid-training"
    by_fold = {f.held_out: f for f in result.folds}
    assert sorted(by_fold) == ["s1", "s2"]
    assert by_fold["s1"].attempts == 2
    assert by_fold["s1"].pid != pid
    assert by_fold["s2"].attempts == 1
    assert "fold s1: worker lost" in caplog.text
    card = json.loads((Path(by_fold["s1"].model_dir) / "model.json").read_text())
    history = card["meta"]["history"]
    assert len(history) == EPOCHS
    # epochs done before the kill come from the checkpoint, wall-clock figures included
    assert history[: ckpt["epoch"]] == ckpt["history"]
    macro = [by_fold[k].metrics["evaluation"]["macro"] for k in ("s1", "s2")]
    assert result.mean["evaluation.macro"] == pytest.approx(sum(macro) / 2)


def test_fold_out_of_retries_fails_naming_it(ray_local, sequences, config, tmp_path):
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(cross_validate, sequences, config, workdir=tmp_path,
                              max_retries=0, progress=False)
        kill_after_first_checkpoint(tmp_path / "fold-s2")
        with pytest.raises(FoldError, match=r"fold held_out='s2' failed after 1 attempt.*worker"):
            running.result(timeout=600)
