"""The whole nightly retrain, wall time, on the EC3D-sized synthetic dataset (long: minutes).

model.data.synth.make_dataset(4, 8) (352 sequences; s4 is the gate subject) is written into the
`ec3d` dataset of a scratch POSECOACH_HOME (its own lake and MLflow store), then
flows.retrain.retrain_flow(profile="nightly") runs as the nightly job does: leave-one-subject-
out cross-validation over s1-s3 on Ray (3 folds, each a full model and its judge, 50 epochs),
the final model and judge on s1-s3, gate figures, MLflow run, registration, gate.
Variants, from the same run: the sum of every epoch the final model and judge trained (their
per-epoch times are in the saved model.json), and one epoch of each.
Target: under 10 minutes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench import Row
from flows.retrain import retrain_flow
from model.data.dataset import Dataset
from model.data.synth import make_dataset
from model.settings import environment, get_settings

DATASET, PROFILE, TARGET_S = "ec3d", "nightly", 600.0


@contextmanager
def scratch_home() -> Iterator[Path]:
    """POSECOACH_HOME (and the default sqlite MLflow store under it) in a temporary folder."""
    home = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    try:
        with environment({"POSECOACH_HOME": str(home), "MLFLOW_TRACKING_URI": None}):
            yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def epoch_seconds(models: Path) -> dict[str, list[float]]:
    """Per-epoch seconds of the final model and judge, from their model.json."""
    out = {}
    for card in sorted(models.rglob("model.json")):
        meta = json.loads(card.read_text())["meta"]
        out[card.parent.name] = [row["seconds"] for row in meta["history"]]
    return out


def run(threads: int) -> list[Row]:
    with contextlib.redirect_stdout(sys.stderr):  # progress bars; stdout stays for --json
        return measure()


def measure() -> list[Row]:
    with scratch_home() as home:
        Dataset(DATASET).write(make_dataset(4, 8, seed=0))
        began = time.perf_counter()
        result = retrain_flow(dataset=DATASET, profile=PROFILE)
        wall = time.perf_counter() - began
        epochs = epoch_seconds(get_settings().models)
    if not epochs:
        raise RuntimeError(f"the retrain saved no model under {home}: {result}")
    name = "nightly retrain, make_dataset(4, 8): 3-fold LOSO + final model and judge"
    cv = result["cv_mean"].get("evaluation.micro", float("nan"))
    rows = [Row(name, "retrain_flow wall time", wall, 1.0,
                f"{'meets' if wall < TARGET_S else 'misses'} the {TARGET_S:.0f} s target; "
                f"{result['status']}; CV micro {cv:.1%}")]
    for model, seconds in epochs.items():
        total = sum(seconds)
        rows.append(Row(name, f"final {model}: all {len(seconds)} epochs", total, total / wall,
                        f"{total / len(seconds):.2f} s per epoch (mean)"))
    return rows
