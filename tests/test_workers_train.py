"""workers.train: the final training as one Ray worker process, and data-parallel with Ray Train
(2 CPU workers on gloo)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.data.normalize import normalize
from model.data.synth import make_dataset
from model.learn.config import TrainConfig
from model.learn.train import train
from model.serve.scoring import calibrate
from model.settings import PROFILES, run_config
from workers.train import state_checksum, train_final

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sequences():
    return make_dataset(n_subjects=2, reps=1, seed=3)


@pytest.fixture(scope="module")
def config() -> TrainConfig:
    return run_config(PROFILES["test"], seed=5, threads=1, epochs=2)


def test_one_worker_gives_the_in_process_model(ray_local, sequences, config):
    on_ray = train_final(sequences, config, workers=1, progress=False)
    here = train(sequences, config, progress=False)
    calibrate(here, sequences)
    assert state_checksum(on_ray.module) == state_checksum(here.module)
    assert on_ray.meta.get("hold_seconds") == pytest.approx(here.meta.get("hold_seconds"))
    assert on_ray.config.device == "cpu"


def test_two_workers_train_one_model_data_parallel(ray_local, sequences, config):
    trained = train_final(sequences, config, workers=2, progress=False)
    dp = trained.meta["data_parallel"]
    assert dp["world_size"] == 2
    assert len(dp["replica_checksums"]) == 2
    assert dp["replica_checksums"][0] == dp["replica_checksums"][1]
    assert dp["replica_checksums"][0] == state_checksum(trained.module)
    assert trained.meta["train_workers"] == 2
    assert len(trained.meta["history"]) == config.epochs
    poses = [normalize(s, trained.normalization)[0] for s in sequences[:3]]
    log_probs = trained.infer(poses).log_probs
    assert log_probs.shape == (3, len(trained.classes))
    assert np.allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-4)


def test_zero_workers_is_refused(sequences, config):
    with pytest.raises(ValueError, match="workers must be at least 1"):
        train_final(sequences, config, workers=0)
