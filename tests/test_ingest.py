"""The ingest flow and its verbs: every input ends as a row or a quarantined error record;
re-ingest adds nothing; fixed files leave quarantine; the CLI's JSON and exit codes; the demo."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from flows.cli import app
from flows.ingest import ingest_flow, quarantine_dir, read_errors
from model.data.dataset import Dataset
from model.data.formats import write_sequence_csv, write_sequence_npz, write_sequences_json
from model.data.sequence import Sequence
from model.data.synth import make_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seqs() -> list[Sequence]:
    """Five good squat repetitions of one subject (one per label)."""
    return make_dataset(n_subjects=1, reps=1, seed=3, exercises=("squat",))


def _json(seq: Sequence, path: Path) -> None:
    write_sequences_json([seq], path)


def bad_inputs(folder: Path, seq: Sequence) -> dict[str, str]:
    """Write one file per kind of bad input; return file name -> expected rejection kind."""
    nan = seq.poses.copy()
    nan[::2] = np.nan
    inf = seq.poses.copy()
    inf[3, 4, 1] = np.inf
    _json(replace(seq, poses=nan), folder / "nan_heavy.json")
    write_sequence_npz(replace(seq, poses=inf), folder / "inf.npz")
    _json(replace(seq, poses=seq.poses[:5]), folder / "few_frames.json")
    _json(replace(seq, poses=seq.poses * 1000), folder / "absurd.json")
    write_sequence_npz(replace(seq, poses=seq.poses[:, :17]), folder / "joints.npz")
    _json(replace(seq, units="furlong"), folder / "units.json")
    _json(replace(seq, skeleton="alien"), folder / "skeleton.json")
    _json(replace(seq, exercise="Yoga Pose!"), folder / "exercise.json")  # not a plain name
    _json(replace(seq, label="bad/<script>"), folder / "label.json")  # nor this label
    (folder / "broken.json").write_text('{"format": "posecoach-sequence", "poses": [[[0.1, ')
    good_npz = write_sequence_npz(seq, folder / "tmp.npz").read_bytes()
    (folder / "tmp.npz").unlink()
    (folder / "truncated.npz").write_bytes(good_npz[: len(good_npz) // 2])
    (folder / "disguised.npz").write_bytes(pickle.dumps({"poses": [1, 2, 3]}))
    (folder / "empty.csv").write_bytes(b"")
    (folder / "notes.xyz").write_text("not a pose file")
    return {
        "nan_heavy.json": "non_finite", "inf.npz": "non_finite",
        "few_frames.json": "too_few_frames", "absurd.json": "absurd_coordinates",
        "joints.npz": "wrong_joint_count", "units.json": "unknown_units",
        "skeleton.json": "unknown_skeleton", "exercise.json": "unknown_exercise",
        "label.json": "bad_label", "broken.json": "bad_json", "truncated.npz": "unreadable",
        "disguised.npz": "unreadable", "empty.csv": "bad_csv", "notes.xyz": "unknown_format",
    }


def good_inputs(folder: Path, seqs: list[Sequence]) -> int:
    """Good files in each format, and one JSON file holding a good and a bad sequence."""
    _json(seqs[0], folder / "good.json")
    write_sequence_npz(seqs[1], folder / "good.npz")
    write_sequence_csv(seqs[2], folder / "good.csv")
    write_sequences_json([seqs[3], replace(seqs[4], poses=seqs[4].poses[:3])],
                         folder / "mixed.json")
    return 4


def test_every_input_ingested_or_quarantined_and_fixed_files_leave(
        prefect_api: str, tmp_path: Path, seqs: list[Sequence]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    expected = bad_inputs(folder, seqs[0])
    n_good = good_inputs(folder, seqs)
    expected["mixed.json"] = "too_few_frames"

    report = ingest_flow([str(folder)], "bad")
    assert report.accounted
    assert report.files == len(expected) + n_good - 1
    assert (report.inserted, report.duplicates, report.rejected) == (n_good, 0, len(expected))
    assert report.inputs == n_good + len(expected)
    assert Dataset("bad").count() == n_good

    qdir = quarantine_dir("bad")
    records = read_errors(qdir)
    got = {Path(r["file"]).name: r["kind"] for r in records}
    assert got == expected
    assert all(r["reason"] and r["time"] and r["original"] for r in records)
    label = next(r for r in records if r["kind"] == "bad_label")
    assert Path(label["original"]).name == "label.json" and "'bad/<script>'" in label["reason"]
    assert sorted(p.name for p in qdir.iterdir() if not p.name.startswith("_")) == sorted(expected)

    again = ingest_flow([str(folder)], "bad")
    assert (again.inserted, again.duplicates, again.rejected) == (0, n_good, len(expected))
    assert len(read_errors(qdir)) == len(records)
    assert len(list(qdir.iterdir())) == len(expected) + 1

    _json(replace(seqs[0], units="cm", poses=seqs[0].poses * 100), qdir / "units.json")
    fixed = ingest_flow([str(qdir)], "bad")
    assert fixed.inserted == 1 and fixed.accounted
    assert [Path(p).name for p in fixed.released] == ["units.json"]
    assert not (qdir / "units.json").exists()
    left = {Path(r["file"]).name for r in read_errors(qdir)}
    assert left == set(expected) - {"units.json"}
    assert Dataset("bad").count() == n_good + 1


def test_quarantined_file_keeps_the_fields_it_was_read_with(
        prefect_api: str, tmp_path: Path, seqs: list[Sequence]) -> None:
    folder = tmp_path / "declared"
    folder.mkdir()
    short = replace(seqs[1], poses=seqs[1].poses[:4])
    write_sequence_npz(short, folder / "short.npz")
    with np.load(folder / "short.npz") as z:
        np.savez(folder / "short.npz", poses=z["poses"])  # fields only declared, not in the file
    report = ingest_flow([str(folder)], "decl", skeleton="ec3d19", units="m", fps=30.0,
                         subject="s7", exercise="squat", label="correct")
    assert report.rejected_by_kind == {"too_few_frames": 1}
    qcopy = quarantine_dir("decl") / "short.npz"
    np.savez(qcopy, poses=seqs[1].poses)
    fixed = ingest_flow([str(quarantine_dir("decl"))], "decl")
    assert (fixed.inserted, fixed.rejected) == (1, 0)
    [row] = Dataset("decl").read()
    assert (row.subject, row.label) == ("s7", "correct")


def _with_scores(path: Path) -> list[str]:
    """A posecoach CSV given a `<joint>_score` column after each joint's z; the new columns."""
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    header = lines[at].split(",")
    added = [f"{c[:-2]}_score" for c in header[2::3]]

    def widened(cells: list[str], extra: list[str]) -> str:
        return ",".join(c for k, e in enumerate(extra) for c in (*cells[3 * k:3 * k + 3], e))

    lines[at:] = [widened(header, added),
                  *(widened(line.split(","), ["0.9"] * len(added)) for line in lines[at + 1:])]
    path.write_text("\n".join(lines) + "\n")
    return added


def test_per_joint_confidence_columns_are_read_past_and_reported(
        prefect_api: str, tmp_path: Path, seqs: list[Sequence]) -> None:
    scored = write_sequence_csv(seqs[0], tmp_path / "in" / "scored.csv")
    added = _with_scores(scored)
    write_sequence_csv(seqs[1], tmp_path / "in" / "plain.csv")
    report = ingest_flow([str(tmp_path / "in")], "conf")
    assert (report.inserted, report.rejected) == (2, 0)
    assert report.ignored_columns == {str(scored): added}
    rows = {Path(r.source).name: r for r in Dataset("conf").read()}
    assert rows["scored.csv"].meta["ignored_columns"] == added
    assert "ignored_columns" not in rows["plain.csv"].meta
    np.testing.assert_allclose(rows["scored.csv"].poses, seqs[0].poses, atol=1e-5,
                               equal_nan=True)


def test_cli_ingest_json_and_data_verbs(prefect_api: str, tmp_path: Path,
                                        seqs: list[Sequence]) -> None:
    folder = tmp_path / "cli"
    folder.mkdir()
    for i, seq in enumerate(seqs):
        _json(seq, folder / f"{i}.json")
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "ingest", str(folder), "--dataset", "cli", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert (doc["inserted"], doc["rejected"], doc["accounted"]) == (len(seqs), 0, True)

    runner = CliRunner()
    versions = json.loads(runner.invoke(app, ["data", "versions", "--dataset", "cli",
                                              "--json"]).stdout)
    assert versions["rows"] == len(seqs)
    assert (versions["history"][0]["operation"], versions["history"][0]["inserted"]) == (
        "WRITE", len(seqs))
    v_full = versions["version"]
    deleted = runner.invoke(app, ["data", "delete-subject", "s1", "--dataset", "cli", "--json"])
    assert json.loads(deleted.stdout)["deleted"] == len(seqs)
    assert Dataset("cli").count() == 0
    restored = runner.invoke(app, ["data", "restore", str(v_full), "--dataset", "cli", "--json"])
    assert restored.exit_code == 0 and Dataset("cli").count() == len(seqs)
    assert json.loads(restored.stdout)["inserted"] == len(seqs)
    history = json.loads(runner.invoke(app, ["data", "versions", "--dataset", "cli",
                                             "--json"]).stdout)["history"]
    assert [history[0][k] for k in ("operation", "inserted", "deleted")] == [
        "RESTORE", len(seqs), 0]
    assert runner.invoke(app, ["data", "compact", "--dataset", "cli"]).exit_code == 0
    assert runner.invoke(app, ["data", "restore", "99", "--dataset", "cli"]).exit_code != 0

    def refused(version: int, why: str) -> None:
        out = runner.invoke(app, ["data", "restore", str(version), "--dataset", "cli"])
        text = " ".join(out.output.split())
        assert out.exit_code == 1 and why in text, text

    current = Dataset("cli").version()
    refused(current, f"version {current} is the current version of dataset 'cli'")
    runner.invoke(app, ["data", "delete-subject", "s1", "--purge", "--dataset", "cli"])
    refused(v_full, f"version {v_full} of dataset 'cli' cannot be restored: its files were purged")
    ds = Dataset("cli")
    DeltaTable(ds.uri).restore(ds.version() - 1)  # a restore that recorded no figures
    shown = runner.invoke(app, ["data", "versions", "--dataset", "cli"], env={"COLUMNS": "200"})
    assert "RESTORE" in shown.output and "None" not in shown.output and "?" in shown.output
    assert runner.invoke(app, ["data", "versions", "--dataset", "nothing"]).exit_code != 0
    missing = runner.invoke(app, ["ingest", str(tmp_path / "nope"), "--dataset", "cli"])
    assert missing.exit_code != 0 and "no such file or folder" in " ".join(missing.output.split())
