"""Registering a model that was not trained here (the paper's released weights,
model.learn.paper): a run of its own in its dataset's experiment, the saved folder packaged and
registered as every trained model is (registry/pyfunc.py, registry/versions.py), where it came
from in the run's and the version's tags."""

from __future__ import annotations

import json
from pathlib import Path

from model.data.sequence import Sequence
from model.learn.saved import TrainedModel
from registry.access import server_errors
from registry.pyfunc import log_packaged_model
from registry.tracking import code_version, log_training_run
from registry.versions import model_name, register_candidate

PROFILE = "imported"


def origin_tags(trained: TrainedModel) -> dict[str, str]:
    """The tags that say where an imported model came from and how it reads its inputs."""
    origin = trained.meta.get("origin") or {}
    return {
        "origin": str(origin.get("kind", "imported")),
        "origin.file": str(origin.get("file", "")),
        "origin.sha256": str(origin.get("sha256", "")),
        "origin.repository": str(origin.get("repository", "")),
        "origin.network": str(origin.get("network", "")),
        "normalization": json.dumps(trained.normalization.to_dict()),
    }


@server_errors()
def register_imported(model_dir: str | Path, trained: TrainedModel, name: str,
                      example: Sequence) -> tuple[str, str, str]:
    """Log, package and register the saved model at `model_dir` as a new version of
    `posecoach-<name>` (alias challenger); `example`, a session of its skeleton, becomes the
    input example. Returns the registered name, the run id and the version."""
    dataset = str(trained.meta.get("dataset") or name)
    tags = origin_tags(trained)
    run_id = log_training_run(
        dataset=dataset, dataset_version=None, profile=PROFILE,
        params={**trained.config.to_dict(), "attention": trained.gcn_config.attention},
        skeleton=trained.normalization.skeleton, classes=trained.classes,
        run_name=f"import-{name}", tags=tags,
    )
    info = log_packaged_model(run_id, model_dir, example)
    registered = model_name(name)
    version = register_candidate(
        info.model_uri, dataset, dataset_version=None, code_version=code_version(),
        skeleton=trained.normalization.skeleton, classes=trained.classes,
        tags={**tags, "profile": PROFILE, "run_id": run_id}, name=registered,
    )
    return registered, run_id, version
