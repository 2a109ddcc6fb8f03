"""One trained model, the same figures whatever the axes, units and handedness of the files.

`python -m bench.conventions_figures [--profile test] [--out FILE.json]`

EC3D format: posecoach's synthetic EC3D-format pickle (4 subjects, 4 repetitions of each
class) is written z-up in metres, and again in each of the six up conventions, mirrored or not,
in m, cm and mm, each repetition turned to a new random heading (36 files); nothing about the
axes or units is declared. One
model is trained by the paper's protocol on the z-up metres file (`flows.paper.run_protocol`,
variant full) and evaluated on every file's test subject (`flows.paper.run_saved`); once more
on the y-up file forced to be read z-up, to show what a misread axis costs.

UI-PRMD: the real Vicon deep squats (../shared/data/ui-prmd) read through their layout; one
model trained on subjects s01-s07 and evaluated on s08-s10, in the original files and in a
copy turned to y-up (z forward), mirrored and rescaled to metres, read with nothing but the
skeleton, rate and file-name pattern declared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from flows.paper import run_protocol, run_saved
from model.data.conventions import UP_AXES
from model.data.ec3d_pickle import write_ec3d_pickle
from model.data.formats import write_sequence_csv
from model.data.normalize import UP_ROTATIONS
from model.data.readers import LAYOUTS, iter_sequences
from model.data.sequence import Sequence, SequenceError, validate_many
from model.data.synth import make_dataset
from model.evaluate.folds import fit
from model.evaluate.metrics import evaluate
from model.settings import PROFILES, run_config

UIPRMD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ui-prmd" / "vicon"
UIPRMD_TEST = ("s08", "s09", "s10")
REPS = 4  # repetitions of each class and subject in the synthetic file


def moved(seq: Sequence, up: str, mirrored: bool, rng: np.random.Generator) -> Sequence:
    """A z-up sequence at a new random heading, its up along `up`, mirrored or not."""
    a = rng.uniform(0, 2 * np.pi)
    turn = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0, 0, 1.0]])
    poses = np.asarray(seq.poses, np.float64) @ turn.T @ UP_ROTATIONS[up]
    if mirrored:
        poses[..., "xyz".index(next(c for c in "xyz" if c != up[1]))] *= -1.0
    return replace(seq, poses=poses.astype(np.float32))


def _figures(doc: dict) -> dict:
    d = next(iter(doc["variants"].values()))
    return {"micro": d["micro"], "macro": d["macro"],
            "correction_self": d["correction"]["self"]["all"], "n_test": doc["n_test"]}


def ec3d_figures(profile: str, work: Path) -> list[dict]:
    seqs = make_dataset(n_subjects=4, reps=REPS, seed=0)
    ref = write_ec3d_pickle(seqs, work / "z_up_m.pickle")
    trained = run_protocol(ref, ["full"], PROFILES[profile], work / "model", synthetic=True,
                           progress=False)
    rows = [{"file": "+z, right-handed, m (trained on)", **_figures(trained)}]
    for k, (up, mirrored, units) in enumerate(product(UP_AXES, (False, True), ("m", "cm", "mm"))):
        rng = np.random.default_rng(k)
        path = write_ec3d_pickle([moved(s, up, mirrored, rng) for s in seqs],
                                 work / f"conv{k}.pickle", units=units)
        got = run_saved(path, work / "model" / "full", None, work / f"eval{k}", synthetic=True)
        rows.append({"file": f"{up}, {'mirrored' if mirrored else 'right-handed'}, {units}",
                     **_figures(got)})
        if (up, mirrored, units) == ("+y", False, "m"):  # what reading it as z-up costs
            wrong = run_saved(path, work / "model" / "full", None, work / f"wrong{k}",
                              synthetic=True, declared={"up": "+z"})
            rows.append({"file": "+y, right-handed, m, read with --up +z (wrong)",
                         **_figures(wrong)})
    return rows


def _uiprmd(folder: Path, **declared: object) -> list[Sequence]:
    read = list(iter_sequences(folder, **declared))
    out = validate_many([s for s in read if not isinstance(s, SequenceError)])
    refused = [s for s in [*read, *out] if isinstance(s, SequenceError)]
    if refused:
        raise SystemExit(f"{len(refused)} UI-PRMD sequences refused, e.g. {refused[0]}")
    return sorted(out, key=lambda s: (s.subject, s.label, s.rep))


def uiprmd_figures(profile: str, work: Path) -> list[dict]:
    original = _uiprmd(UIPRMD, layout="uiprmd")
    copy = work / "uiprmd-copy"
    rng = np.random.default_rng(7)
    for seq in original:
        poses = moved(replace(seq, poses=np.asarray(seq.poses) / 1000.0), "+y", True, rng).poses
        name = Path(seq.source).name.removesuffix(".txt.gz") + ".csv"
        write_sequence_csv(replace(seq, poses=poses, units=None, meta={}),
                           copy / seq.label / name)
    spec = LAYOUTS["uiprmd"]
    (copy / "posecoach.json").write_text(json.dumps({
        "skeleton": "vicon39", "fps": spec["fps"], "exercise": "squat",
        "pattern": r"/(?P<label>correct|incorrect)/m\d+_(?P<subject>s\d+)_e(?P<rep>\d+)"}))
    turned = _uiprmd(copy)
    train = [s for s in original if s.subject not in UIPRMD_TEST]
    model = fit(train, run_config(PROFILES[profile], motion_only=True), None, "uiprmd",
                progress=False)
    rows = []
    for name, seqs in (("original (mm, +z, declared by the layout)", original),
                       ("copy: y-up, mirrored, metres, nothing declared", turned)):
        test = [s for s in seqs if s.subject in UIPRMD_TEST]
        ev = evaluate(model, test)
        rows.append({"file": name, "micro": ev.micro, "macro": ev.macro, "n_test": ev.n,
                     "up": sorted({s.meta["up"] for s in test}),
                     "units": sorted({s.units for s in test}),
                     "mirrored": sorted({s.meta["mirrored"] for s in test})})
    return rows


def show(title: str, rows: list[dict]) -> None:
    table = Table(title=title)
    for col in ("file", "n_test", "micro", "macro"):
        table.add_column(col, justify="left" if col == "file" else "right")
    for r in rows:
        table.add_row(r["file"], str(r["n_test"]), f"{100 * r['micro']:.1f}",
                      f"{100 * r['macro']:.1f}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="test")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"profile": args.profile, "ec3d_synthetic": ec3d_figures(args.profile, work),
                  "uiprmd": uiprmd_figures(args.profile, work) if UIPRMD.is_dir() else []}
    show("synthetic EC3D-format file (synthetic data, not EC3D's figures)",
         result["ec3d_synthetic"])
    show("UI-PRMD deep squats, test subjects s08-s10", result["uiprmd"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
