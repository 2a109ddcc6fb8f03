"""Real recordings: UI-PRMD deep squats (correct vs incorrect), the whole pipeline.

Ingest ../shared/data/ui-prmd through the generic reader into the `uiprmd` dataset (the ingest
flow, which gives it the default card every new dataset gets) -> leave-one-subject-out
cross-validation on Ray at the `nightly` profile with the card's recipe, assembled as the
retrain flow assembles it (model.settings.run_config(profile, card)): 10 folds, each trains the
full model and its independent judge, a separated classifier, on nine subjects; the last epoch
is kept; the card's `motion_only` "auto" is chosen inside each fold by an inner
leave-one-subject-out over its nine training subjects (model.learn.recipe), never on the
held-out subject; the card's correction weight beta (0.1 by default). No setting exists only
here: a card written by hand (posecoach data configure uiprmd ...) is what this measures too.
-> one MLflow run
(registry.tracking.log_training_run, plus the judge's and the baselines' figures). In the same
run, on the same sequences and folds: the plain baselines of
SOURCE.md (bench/uiprmd_baseline.py).

Figures per model: mean accuracy over folds with its spread (standard deviation), balanced
accuracy (mean of the per-class accuracies), AUC of P(incorrect); for the full model also the
share of the held-out incorrect repetitions the independent judge calls correct once corrected,
and the ECE (15 bins) of its held-out confidences before and after temperature scaling, the
calibrated figure cross-fitted (each fold scaled by the temperature of the other folds). Beside
them, in another protocol, what a person's own reference squats would give the full model
(model/evaluate/reference.py: the per-person best threshold, an upper bound, and a threshold
relative to one to three of the person's correct squats, as `posecoach score --reference`
decides).
One corrected held-out squat is drawn (original red, corrected green) under
$POSECOACH_HOME/bench/; every figure goes to $POSECOACH_HOME/bench/uiprmd.json.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from bench import Row
from bench.uiprmd_baseline import CLASSIFIERS, loso
from flows.ingest import ingest_flow
from model.data.card import load_card
from model.data.dataset import Dataset
from model.data.sequence import Sequence
from model.data.skeletons import get_skeleton
from model.evaluate.calibration import calibrate_folds
from model.evaluate.folds import held_out_predictions
from model.evaluate.metrics import judged_correct
from model.evaluate.plots import plot_correction
from model.evaluate.reference import held_out_people, reference_figures
from model.learn.saved import TrainedModel
from model.serve.scoring import normalize_valid
from model.settings import get_settings, run_config
from registry.tracking import client, log_training_run
from workers.cv import CVResult, cross_validate

DATASET = "uiprmd"
SOURCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ui-prmd"
PROFILE = "nightly"
INCORRECT = "incorrect"


def held_out_figures(model: TrainedModel, seqs: list[Sequence]) -> dict[str, float]:
    """Accuracy, balanced accuracy and AUC of P(incorrect) of one model on one subject."""
    poses, _ = normalize_valid(model, seqs)
    log_probs = model.infer(poses).log_probs
    classes = [tuple(c) for c in model.classes]
    bad = classes.index(("squat", INCORRECT))
    truth = np.array([s.label == INCORRECT for s in seqs])
    pred = log_probs.argmax(axis=1) == bad
    per_class = [float((pred == truth)[truth == k].mean()) for k in (False, True)]
    return {"accuracy": float((pred == truth).mean()), "balanced": float(np.mean(per_class)),
            "auc": float(roc_auc_score(truth, np.exp(log_probs[:, bad])))}


def spread(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation over folds of each figure."""
    out = {}
    for key in per_fold[0]:
        values = [f[key] for f in per_fold]
        out[key] = float(np.mean(values))
        out[f"{key}_std"] = float(np.std(values))
    return out


def gcn_figures(cv: CVResult, seqs: list[Sequence]) -> dict[str, dict]:
    """Per fold and over folds: the full model and its judge (the classification branch)."""
    full, judge, corrected, epochs = [], [], [], {"full": [], "judge": []}
    chosen = []
    for fold in cv.folds:
        test = [s for s in seqs if s.subject == fold.held_out]
        models = {"full": TrainedModel.load(fold.model_dir),
                  "judge": TrainedModel.load(Path(fold.model_dir).parent / "judge")}
        full.append(held_out_figures(models["full"], test))
        judge.append(held_out_figures(models["judge"], test))
        corrected.append(fold.metrics["evaluation"]["correction"]["independent"]["incorrect"])
        chosen.append({"held_out": fold.held_out, **models["full"].meta.get("recipe", {})})
        for key, model in models.items():
            epochs[key] += [row["seconds"] for row in model.meta["history"]]
    return {
        "full": {**spread(full), "folds": full,
                 "corrected_judged_correct": float(np.mean(corrected)),
                 "corrected_judged_correct_std": float(np.std(corrected)),
                 "epoch_seconds": float(np.mean(epochs["full"])), "recipe": chosen},
        "separated_classifier": {**spread(judge), "folds": judge,
                                 "epoch_seconds": float(np.mean(epochs["judge"]))},
    }


def draw_correction(cv: CVResult, seqs: list[Sequence], path: Path) -> dict:
    """Draw the first held-out incorrect squat that the judge calls correct once corrected
    (the first incorrect one when there is none); returns which one."""
    for fold in cv.folds:
        model = TrainedModel.load(fold.model_dir)
        judge = TrainedModel.load(Path(fold.model_dir).parent / "judge")
        bad = [s for s in seqs if s.subject == fold.held_out and s.label == INCORRECT]
        poses, _ = normalize_valid(model, bad)
        corrected = model.infer(poses).corrected
        ok = judged_correct(judge, corrected, [s.exercise for s in bad])
        if ok.any() or fold is cv.folds[-1]:
            k = int(np.argmax(ok)) if ok.any() else 0
            title = (f"UI-PRMD (real Vicon data), held-out subject {bad[k].subject}, incorrect "
                     f"squat rep {bad[k].rep}: {'judged correct' if ok[k] else 'still incorrect'}"
                     " after correction")
            plot_correction(poses[k], corrected[k], get_skeleton(model.normalization.skeleton),
                            path, title=title)
            return {"subject": bad[k].subject, "rep": bad[k].rep, "judged_correct": bool(ok[k]),
                    "path": str(path)}
    raise ValueError("no fold to draw from")


def baseline_figures(seqs: list[Sequence]) -> dict[str, dict]:
    out = {}
    for name in CLASSIFIERS:
        began = time.perf_counter()
        result = loso(seqs, name)
        folds = [{"accuracy": result.accuracy[s], "balanced": result.balanced[s],
                  "auc": result.auc[s]} for s in sorted(result.accuracy)]
        out[name] = {**spread(folds), "folds": folds, "seconds": time.perf_counter() - began}
    return out


def log_extra(run_id: str, figures: dict[str, dict]) -> None:
    """The judge's and baselines' mean figures on the run, as `bench.<model>.<figure>`."""
    c = client()
    for model, values in figures.items():
        key = "".join(ch if ch.isalnum() else "_" for ch in model)
        for name, value in values.items():
            if isinstance(value, float):
                c.log_metric(run_id, f"bench.{key}.{name}", value)


def note(f: dict) -> str:
    return (f"LOSO accuracy {f['accuracy']:.1%} ± {f['accuracy_std']:.1%}, balanced "
            f"{f['balanced']:.1%}, AUC {f['auc']:.3f}")


def run(threads: int, seed: int = 0) -> list[Row]:
    with contextlib.redirect_stdout(sys.stderr):  # progress bars; stdout stays for --json
        return measure(threads, seed)


def measure(threads: int, seed: int = 0) -> list[Row]:
    torch.set_num_threads(threads)
    settings = get_settings()
    out_dir = settings.home / "bench"
    if not SOURCE.is_dir():
        raise FileNotFoundError(f"no UI-PRMD recordings at {SOURCE.resolve()} (the benchmark "
                                "reads ../shared/data/ui-prmd next to the repository)")
    report = ingest_flow([str(SOURCE.resolve())], dataset=DATASET)
    if not report.accounted or report.rejected:
        raise RuntimeError(f"UI-PRMD ingest rejected inputs: {report.rejected_by_kind}")
    version = Dataset(DATASET).version()
    seqs = Dataset(DATASET).read(version=version)
    card = load_card(Dataset(DATASET))
    config = run_config(settings.get_profile(PROFILE), card, seed=seed, threads=1)  # as retrain
    began = time.perf_counter()
    cv = cross_validate(seqs, config, threads_per_fold=1)  # a fresh workdir: nothing reused
    cv_seconds = time.perf_counter() - began
    gcn = gcn_figures(cv, seqs)
    calibration = calibrate_folds(held_out_predictions([f.metrics for f in cv.folds]))
    reference = reference_figures(held_out_people([f.metrics for f in cv.folds]))
    baselines = baseline_figures(seqs)
    picture = draw_correction(cv, seqs, out_dir / "uiprmd_correction.png")
    first = TrainedModel.load(cv.folds[0].model_dir)
    run_id = log_training_run(
        dataset=DATASET, dataset_version=version, profile=PROFILE, params=config.to_dict(),
        skeleton=first.normalization.skeleton, classes=first.classes,
        folds=[f.metrics["evaluation"] for f in cv.folds], run_name="bench-uiprmd-loso",
        tags={"bench": "uiprmd"},
    )
    log_extra(run_id, {"gcn_full": gcn["full"],
                       "gcn_separated_classifier": gcn["separated_classifier"], **baselines})
    doc = {"dataset_version": version, "sequences": len(seqs), "profile": PROFILE,
           "card": card.to_dict(), "motion_only": config.motion_only, "beta": config.beta,
           "seed": seed,
           "cv_seconds": cv_seconds, "gcn": gcn, "calibration": calibration.to_dict(),
           "reference": reference,
           "baselines": baselines, "picture": picture,
           "mlflow_run": run_id, "ingest": report.to_dict()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "uiprmd.json").write_text(json.dumps(doc, indent=2, default=str))
    name = f"UI-PRMD deep squat LOSO, {len(cv.folds)} folds, {len(seqs)} reps"
    full = gcn["full"]
    picked = sum(bool(f["motion_only"]["motion_only"]) for f in full["recipe"]
                 if "motion_only" in f)
    blind = (f", motion only in {picked} of {len(cv.folds)} folds"
             if config.motion_only == "auto" else ", motion only" if config.motion_only else "")
    rows = [
        Row(name, f"GCN full (nightly, seed {seed}, card: beta {config.beta}{blind}, "
            f"average_tail {config.average_tail})",
            cv_seconds, 1.0,
            f"{note(full)}; corrected incorrect judged correct "
            f"{full['corrected_judged_correct']:.1%}; ECE {calibration.before['ece']:.1%} "
            f"uncalibrated, {calibration.after['ece']:.1%} calibrated (temperature fitted on "
            f"the other folds' held-out subjects; a perfectly calibrated model would show "
            f"{calibration.after['ece_floor']:.1%}, {calibration.after['ece_floor_p10']:.1%}-"
            f"{calibration.after['ece_floor_p90']:.1%}); {full['epoch_seconds']:.1f} s/epoch; "
            "time: the CV of model + judge on Ray"),
        Row(name, "GCN classification branch (separated_classifier)", cv_seconds, 1.0,
            f"{note(gcn['separated_classifier'])}; the judge, trained in the same folds; "
            f"{gcn['separated_classifier']['epoch_seconds']:.1f} s/epoch"),
    ]
    sizes = " / ".join(reference["reference"])
    accuracies = " / ".join(f"{acc:.1%}" for acc in reference["reference"].values())
    rows.append(Row(name, "GCN full, the person's own reference squats (another protocol)",
                    cv_seconds, 1.0,
                    f"accuracy on the person's other squats with {sizes} of their squats known "
                    f"correct: {accuracies} (threshold cross-fitted on the other people); the "
                    f"best threshold for each person, on their own labels (an upper bound): "
                    f"{reference['best_threshold']:.1%}"))
    rows += [Row(name, f"baseline: {b}", f["seconds"], f["seconds"] / cv_seconds, note(f))
             for b, f in baselines.items()]
    return rows
