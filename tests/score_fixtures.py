"""What the score-flow tests share: a tiny calibrated model saved to a folder, a folder of
synthetic uploads (JSON, NPZ and Parquet, some broken on purpose) and the model's ModelInfo."""

from __future__ import annotations

from pathlib import Path

import torch

from flows.reports import ModelInfo
from flows.synth import write_sessions
from model.data.synth import make_dataset, write_broken_sessions
from model.learn.train import train
from model.serve.scoring import calibrate
from model.settings import PROFILES, run_config

INFO = ModelInfo(name="posecoach-scoretest", version="1", dataset="scoretest",
                 dataset_version=1, code_version="test")


def save_tiny_model(folder: Path) -> Path:
    torch.set_num_threads(1)
    data = make_dataset(n_subjects=2, reps=1, seed=3)
    model = train(data, run_config(PROFILES["test"], seed=0, threads=1, epochs=1),
                  progress=False)
    calibrate(model, data)
    return model.save(folder)


def write_uploads(folder: Path, sessions: int, broken: int = 0, seed: int = 0) -> Path:
    """`sessions` good uploads and `broken` bad ones under folder/sessions; returns that."""
    write_sessions(folder, sessions, seed, None)
    if broken:
        write_broken_sessions(folder / "sessions", broken, seed)
    return folder / "sessions"
