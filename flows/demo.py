"""`posecoach demo`: the main job end to end on embedded defaults, nothing to start by hand.

Synthesise an EC3D-like dataset (EC3D's data_3D.pickle layout) -> ingest it -> retrain
(cross-validation on local Ray, MLflow on sqlite, register, gate, promote) -> synthesise
uploaded sessions, a few broken on purpose -> score them with the champion (or, when the gate
refused the very first model, with that version pinned, and the summary says so) -> the run's
review queue filled in by a synthetic labeller from the sessions' truth -> ingested, so the
dataset version the next retrain pins holds the reviewed repetitions. The same
seed gives the same data, so a second run ingests nothing new and the retrain skips the known
version.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows.ingest import ingest_flow
from flows.retrain import retrain_flow
from flows.review import fill_from_truth, ingest_review
from flows.score import score_flow
from flows.synth import synthesize
from model.settings import get_settings
from registry.versions import CHAMPION, alias_version, model_name

UPLOADS = 6
BROKEN = 3


@flow(name="demo")
def demo_flow(profile: str | None = None, dataset: str = "ec3d", seed: int = 0,
              progress: bool = True) -> dict[str, Any]:
    """Run the whole service once on synthetic data; returns what each stage reported."""
    began = time.perf_counter()
    settings = get_settings()
    prof = settings.get_profile(profile)
    synth = synthesize(settings.home / "synth", prof.synth_subjects, prof.synth_reps, seed,
                       "pickle", progress=progress)
    ingest = ingest_flow([synth["pickle"]], dataset).to_dict()
    retrain = retrain_flow(dataset=dataset, profile=prof.name, seed=seed)
    uploads = synthesize(settings.home / "uploads", 1, 1, seed + 1, "json", sessions=UPLOADS,
                         broken=BROKEN, progress=progress)
    pinned = None
    if alias_version(model_name(dataset), CHAMPION) is None:
        pinned = retrain["version"]
    score = score_flow(path=str(settings.home / "uploads" / "sessions"), dataset=dataset,
                       version=pinned)
    review = review_loop(score, uploads["sessions"], dataset)
    return {
        "profile": prof.name,
        "synth": {k: synth[k] for k in ("out", "sequences", "subjects", "pickle")},
        "ingest": ingest,
        "retrain": retrain,
        "uploads": {"sessions": len(uploads["sessions"]), "broken": len(uploads["broken"])},
        "score": score,
        "review": review,
        "scored_with": (f"version {pinned}, pinned: the gate refused it and there is no "
                        "champion yet") if pinned else "the champion",
        "where": {
            "data": settings.lake,
            "reports": score["out"],
            "mlflow_ui": f"mlflow ui --backend-store-uri {settings.mlflow_uri}",
        },
        "seconds": time.perf_counter() - began,
    }


def review_loop(score: dict, truth: list[dict], dataset: str) -> dict:
    """The score run's review file labelled from the uploads' truth and ingested."""
    if not score.get("review"):
        return {"rows": 0}
    filled = Path(str(score["review"]["csv"]).removesuffix(".csv") + ".labelled.csv")
    labelled = fill_from_truth(score["review"]["csv"], truth, filled)
    report = ingest_review(filled, dataset).to_dict()
    return {"rows": score["review"]["rows"], "labelled_by_truth": labelled, "file": str(filled),
            **{k: report[k] for k in ("inserted", "duplicates", "updated", "errors", "version")}}
