"""Re-ingesting the quarantine: options go over the recorded fields, the layout file is recorded
as an absolute path and a pattern as the fields it gave (a re-ingest works from any folder, the
copy's path unmatched), and a reason names what failed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from flows.ingest import ingest_flow, quarantine_dir, read_errors
from model.data.dataset import Dataset
from model.data.sequence import Sequence
from model.data.skeletons import EC3D_JOINTS
from model.data.synth import make_dataset

PATTERN = r"/(?P<label>\w+)/(?P<subject>[a-z]+)_rep(?P<rep>\d+)\.csv$"


@pytest.fixture(scope="module")
def seqs() -> list[Sequence]:
    return [s for s in make_dataset(n_subjects=1, reps=2, seed=5, exercises=("squat",))
            if s.label == "correct"]


def _layout(path: Path) -> Path:
    """A layout file of EC3D's joints under another name (a source posecoach has no layout for)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": "posecoach-layout", "name": "myrig",
                                "joints": list(EC3D_JOINTS), "map": {j: [j] for j in EC3D_JOINTS}}))
    return path


def _csv(seq: Sequence, path: Path) -> None:
    """A bare CSV: a header and metres, every field left to the manifest and the pattern."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ",".join(f"{j}_{a}" for j in EC3D_JOINTS for a in "xyz")
    np.savetxt(path, seq.poses.reshape(seq.n_frames, -1), delimiter=",", header=header,
               comments="", fmt="%.6f")


def _source(tmp_path: Path, seqs: list[Sequence]) -> Path:
    """Two files whose manifest declares centimetres on metre data, through a layout file in the
    manifest's folder, named relative to it."""
    data = tmp_path / "data" / "rig"
    for seq in seqs:
        _csv(seq, data / "correct" / f"alice_rep{seq.rep}.csv")
    _layout(data / "_layouts" / "_myrig.json")
    (data / "posecoach.json").write_text(json.dumps({
        "units": "cm", "fps": 30, "exercise": "squat", "pattern": PATTERN,
        "layout_file": "_layouts/_myrig.json"}))
    return data


def test_options_go_over_the_recorded_fields_from_any_folder(
        prefect_api: str, tmp_path: Path, seqs: list[Sequence],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _source(tmp_path, seqs)
    monkeypatch.chdir(tmp_path)
    first = ingest_flow(["data/rig"], "rig")
    assert first.rejected_by_kind == {"contradicts_data": len(seqs)}
    assert all("pass --units m to take the data's, or --units cm to keep the declaration"
               in r.reason for r in first.rejections)
    records = read_errors(quarantine_dir("rig"))
    assert {r["fields"]["layout_file"] for r in records} == {
        str((tmp_path / "data" / "rig" / "_layouts" / "_myrig.json").resolve())}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    fixed = ingest_flow([str(quarantine_dir("rig"))], "rig", units="m")
    assert (fixed.inserted, fixed.rejected) == (len(seqs), 0) and len(fixed.released) == len(seqs)
    rows = Dataset("rig").read()
    assert {(r.subject, r.exercise, r.label, r.units) for r in rows} == {
        ("alice", "squat", "correct", "m")}
    assert sorted(r.rep for r in rows) == sorted(s.rep for s in seqs)


def test_a_layout_file_gone_is_named_with_the_path_looked_for(
        prefect_api: str, tmp_path: Path, seqs: list[Sequence]) -> None:
    data = _source(tmp_path, seqs[:1])
    first = ingest_flow([str(data)], "gone")
    assert first.rejected_by_kind == {"contradicts_data": 1}
    layout = (data / "_layouts" / "_myrig.json").resolve()
    layout.unlink()
    again = ingest_flow([str(quarantine_dir("gone"))], "gone", units="m", subject="bob")
    [rej] = again.rejections
    assert rej.kind == "unreadable" and f"looked for {layout}" in rej.reason
    [record] = read_errors(quarantine_dir("gone"))
    assert record["reason"] == rej.reason
    assert (record["fields"]["units"], record["fields"]["subject"]) == ("m", "bob")
    assert record["fields"]["label"] == "correct"  # the recorded fields stay under the options


def test_a_pattern_matches_from_inside_the_export_and_records_keep_its_fields(
        prefect_api: str, tmp_path: Path, seqs: list[Sequence],
        monkeypatch: pytest.MonkeyPatch) -> None:
    export = tmp_path / "export"
    for seq in seqs:
        _csv(seq, export / "correct" / f"alice_rep{seq.rep}.csv")
    _csv(replace(seqs[0], poses=seqs[0].poses[:5]), export / "correct" / "alice_rep9.csv")
    _csv(seqs[1], export / "correct" / "Alice-rep3.csv")  # a name the pattern does not fit
    monkeypatch.chdir(export)
    first = ingest_flow(["correct"], "pat", skeleton="ec3d19", fps=30, exercise="squat",
                        pattern=PATTERN)
    assert first.inserted == len(seqs)
    assert first.rejected_by_kind == {"too_few_frames": 1, "pattern_mismatch": 1}
    [mismatch] = [r for r in first.rejections if r.kind == "pattern_mismatch"]
    assert repr((export / "correct" / "Alice-rep3.csv").as_posix()) in mismatch.reason
    records = {Path(r["original"]).name: r for r in read_errors(quarantine_dir("pat"))}
    short, odd = records["alice_rep9.csv"], records["Alice-rep3.csv"]
    assert {k: short["fields"][k] for k in ("subject", "label", "rep")} == {
        "subject": "alice", "label": "correct", "rep": "9"}
    assert "pattern" not in short["fields"] and "pattern" not in odd["fields"]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _csv(seqs[0], Path(short["file"]))  # fixed in place
    fixed = ingest_flow([short["file"]], "pat")
    assert (fixed.inserted, fixed.rejected, len(fixed.released)) == (1, 0, 1)
    named = ingest_flow([odd["file"]], "pat", subject="alice", label="correct", rep=3)
    assert (named.inserted, named.rejected, len(named.released)) == (1, 0, 1)
    assert read_errors(quarantine_dir("pat")) == []
    rows = Dataset("pat").read()
    assert {(r.subject, r.label) for r in rows} == {("alice", "correct")}
    assert sorted(r.rep for r in rows) == sorted([*(s.rep for s in seqs), 9, 3])
