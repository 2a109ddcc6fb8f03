"""Layouts as data (model.data.layouts): a 20-joint Kinect v1-like export and a 22-joint
SMPL-like one read through a JSON layout file, without padding, onto the canonical joints;
broken layout files are refused naming the file and the problem."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from model.data import layouts
from model.data.dataset import Dataset
from model.data.formats import write_sequence_csv, write_sequence_npz, write_session
from model.data.layouts import LayoutError, load_layout
from model.data.normalize import UP_ROTATIONS, Normalization, normalize_many
from model.data.readers import iter_sequences, read_session
from model.data.sequence import Sequence, SequenceError, validate_many
from model.data.skeletons import EC3D_JOINTS
from model.data.synth import make_dataset, make_session

J = {name: i for i, name in enumerate(EC3D_JOINTS)}
SIDES = (("l", "left"), ("r", "right"))


def _hand(p: np.ndarray, side: str) -> np.ndarray:
    wrist, elbow = p[:, J[f"{side}_wrist"]], p[:, J[f"{side}_elbow"]]
    return wrist + 0.3 * (wrist - elbow)


def kinect1(p: np.ndarray) -> dict[str, np.ndarray]:
    """Kinect v1's 20 joints, made from canonical poses (the inverse of its map)."""
    out = {"hip_center": p[:, J["mid_hip"]], "spine": (p[:, J["mid_hip"]] + p[:, J["neck"]]) / 2,
           "shoulder_center": p[:, J["neck"]], "head": p[:, J["nose"]]}
    for s, side in SIDES:
        out |= {f"shoulder_{side}": p[:, J[f"{s}_shoulder"]],
                f"elbow_{side}": p[:, J[f"{s}_elbow"]], f"wrist_{side}": p[:, J[f"{s}_wrist"]],
                f"hand_{side}": _hand(p, s)}
    for s, side in SIDES:
        out |= {f"hip_{side}": p[:, J[f"{s}_hip"]], f"knee_{side}": p[:, J[f"{s}_knee"]],
                f"ankle_{side}": p[:, J[f"{s}_ankle"]], f"foot_{side}": p[:, J[f"{s}_big_toe"]]}
    return out


KINECT1_MAP = {
    "nose": "head", "neck": "shoulder_center", "mid_hip": "hip_center",
    **{f"{s}_{part}": f"{part}_{side}" for s, side in SIDES
       for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")},
    **{f"{s}_big_toe": f"foot_{side}" for s, side in SIDES},
    **{f"{s}_heel": f"ankle_{side}" for s, side in SIDES},
}


def smpl22(p: np.ndarray) -> dict[str, np.ndarray]:
    """SMPL's 22 body joints, made from canonical poses."""
    hip, neck = p[:, J["mid_hip"]], p[:, J["neck"]]
    out = {"pelvis": hip, "spine1": hip + (neck - hip) / 4, "spine2": hip + (neck - hip) / 2,
           "spine3": hip + 3 * (neck - hip) / 4, "neck": neck, "head": p[:, J["nose"]]}
    for s, _ in SIDES:
        out |= {f"{s}_hip": p[:, J[f"{s}_hip"]], f"{s}_knee": p[:, J[f"{s}_knee"]],
                f"{s}_ankle": p[:, J[f"{s}_ankle"]], f"{s}_foot": p[:, J[f"{s}_big_toe"]],
                f"{s}_collar": (neck + p[:, J[f"{s}_shoulder"]]) / 2,
                f"{s}_shoulder": p[:, J[f"{s}_shoulder"]], f"{s}_elbow": p[:, J[f"{s}_elbow"]],
                f"{s}_wrist": p[:, J[f"{s}_wrist"]]}
    return out


SMPL22_MAP = {
    "nose": ["head"], "neck": ["neck"], "mid_hip": ["pelvis"],
    **{f"{s}_{part}": [f"{s}_{part}"] for s, _ in SIDES
       for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")},
    **{f"{s}_big_toe": [f"{s}_foot"] for s, _ in SIDES},
    **{f"{s}_heel": [f"{s}_ankle"] for s, _ in SIDES},
}

EXPORTS = {
    # name: (joints from canonical poses, map, up declared by the layout, how files are written)
    "kinect1": (kinect1, KINECT1_MAP, "+y", write_sequence_csv),
    "smpl22": (smpl22, SMPL22_MAP, None, write_sequence_npz),
}


def layout_doc(name: str) -> dict:
    make, mapping, up, _ = EXPORTS[name]
    joints = list(make(np.zeros((1, 19, 3))))
    doc = {"format": "posecoach-layout", "name": name, "joints": joints,
           "bones": [[joints[0], joints[1]]], "map": dict(mapping),
           "approximate": ["nose", "l_heel", "r_heel"]}
    return doc | ({"up": up} if up else {})


@pytest.fixture(scope="module")
def seqs() -> list[Sequence]:
    return make_dataset(n_subjects=1, reps=1, seed=8)


@pytest.mark.parametrize("name", list(EXPORTS))
def test_an_export_in_its_own_joints_reads_onto_the_canonical_ones(seqs, tmp_path, name):
    make, _, up, write = EXPORTS[name]
    folder = tmp_path / "export"
    folder.mkdir()
    layout_path = folder / f"_{name}.json"  # "_": not data
    layout_path.write_text(json.dumps(layout_doc(name)))
    layout = load_layout(layout_path)
    n_joints = len(layout.skeleton.joints)
    assert n_joints == {"kinect1": 20, "smpl22": 22}[name]
    suffix = "csv" if write is write_sequence_csv else "npz"
    for k, seq in enumerate(seqs):
        joints = make(np.asarray(seq.poses, np.float64))
        poses = np.stack(list(joints.values()), axis=1) @ UP_ROTATIONS[up or "+z"]
        write(replace(seq, poses=poses.astype(np.float32), skeleton=name),
              folder / f"{k:03d}.{suffix}")
    (folder / "posecoach.json").write_text(json.dumps({"layout_file": f"_{name}.json"}))
    out = list(iter_sequences(folder))
    assert not [o for o in out if isinstance(o, SequenceError)]
    read = validate_many(out)
    assert {s.skeleton for s in read} == {"ec3d19"}
    assert {s.meta["layout"] for s in read} == {name}
    assert {s.meta["up"] for s in read} == {up or "+z"}
    assert read[0].meta["conventions"]["up"]["source"] == ("declared" if up else "data")
    keep = [J[j] for j in EC3D_JOINTS if not j.endswith("heel")]  # heels stand in from ankles
    norm = Normalization()
    for got, want in zip(normalize_many(read, norm), normalize_many(seqs, norm), strict=True):
        np.testing.assert_allclose(got[0][:, keep], want[0][:, keep], atol=2e-5,
                                   equal_nan=True)


@pytest.mark.parametrize("change,problem", [
    (lambda d: d["map"].update(nose=["forehead"]), "does not list: forehead"),
    (lambda d: d["map"].pop("l_heel"), "leaves out canonical joints l_heel"),
    (lambda d: d["map"].update(tail=["head"]), "not canonical joints: tail"),
    (lambda d: d.update(bones=[["head", "antenna"]]), "'bones' names joints"),
    (lambda d: d.update(joints=d["joints"] + ["head"]), "more than once"),
    (lambda d: d.update(approximate=["pinky"]), "'approximate' names joints"),
    (lambda d: d.update(up="up"), "'up' is 'up'"),
    (lambda d: d.update(name="kinect2"), "already a layout (built in)"),
    (lambda d: d.update(colour="red"), "unknown keys colour"),
    (lambda d: d.update(zeros_lost="yes"), "'zeros_lost' is 'yes', not true or false"),
])
def test_a_broken_layout_file_is_refused_naming_it(tmp_path, change, problem):
    doc = layout_doc("kinect1")
    doc["name"] = f"kinect1-{tmp_path.name}"
    change(doc)
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(LayoutError) as err:
        load_layout(path)
    assert problem in err.value.reason and str(path) in str(err.value)


def _kinect1_with_zeros(seq: Sequence, frames: slice) -> Sequence:
    """The sequence as a y-up Kinect v1 export whose left hip is written (0, 0, 0) in `frames`,
    as OpenPose-style estimators write a joint they lost."""
    joints = kinect1(np.asarray(seq.poses, np.float64))
    poses = np.stack(list(joints.values()), axis=1) @ UP_ROTATIONS["+y"]
    poses[frames, list(joints).index("hip_left")] = 0.0
    return replace(seq, poses=poses.astype(np.float32), skeleton="kinect1")


def test_a_layout_file_may_say_zeros_are_lost_joints(seqs, tmp_path):
    lost = slice(3, 6)
    folder = tmp_path / "export"
    write_sequence_csv(_kinect1_with_zeros(seqs[0], lost), folder / "take.csv")
    (folder / "_kinect1.json").write_text(json.dumps(layout_doc("kinect1") | {"zeros_lost": True}))
    (folder / "_plain.json").write_text(json.dumps(layout_doc("kinect1")))
    load_layout(folder / "_plain.json")
    manifest = folder / "posecoach.json"

    def l_hip(manifest_doc: dict, **declared: object) -> np.ndarray:
        manifest.write_text(json.dumps(manifest_doc))
        [read] = validate_many(iter_sequences(folder, **declared))
        assert not isinstance(read, SequenceError), read
        return read.poses[:, J["l_hip"]]

    by_layout = l_hip({"layout_file": "_kinect1.json"})
    assert np.isnan(by_layout[lost]).all() and not np.isnan(by_layout[6:]).any()
    assert (l_hip({"layout_file": "_plain.json"})[lost] == 0).all()  # zeros are data
    assert (l_hip({"layout_file": "_kinect1.json", "zeros_lost": False})[lost] == 0).all()
    assert (l_hip({"layout_file": "_kinect1.json"}, zeros_lost=False)[lost] == 0).all()
    assert np.isnan(l_hip({"layout_file": "_plain.json"}, zeros_lost=True)[lost]).all()


def test_a_session_reads_zeros_as_lost_by_its_layout_file_manifest_or_option(tmp_path):
    (tmp_path / "kinect1.json").write_text(json.dumps(layout_doc("kinect1") | {"zeros_lost": True}))
    (tmp_path / "plain.json").write_text(json.dumps(layout_doc("kinect1")))
    load_layout(tmp_path / "plain.json")
    session, _ = make_session("u1", "squat", ["correct"], seed=2)
    lost = slice(3, 6)
    uploads = tmp_path / "uploads"
    path = write_session(_kinect1_with_zeros(session, lost), uploads / "u1.json")

    def l_hip(**declared: object) -> np.ndarray:
        return read_session(path, **declared).poses[:, J["l_hip"]]

    assert np.isnan(l_hip(layout_file=tmp_path / "kinect1.json")[lost]).all()
    assert (l_hip(layout_file=tmp_path / "kinect1.json", zeros_lost=False)[lost] == 0).all()
    assert (l_hip(layout_file=tmp_path / "plain.json")[lost] == 0).all()
    assert np.isnan(l_hip(layout_file=tmp_path / "plain.json", zeros_lost=True)[lost]).all()
    (uploads / "_plain.json").write_text(json.dumps(layout_doc("kinect1")))
    (uploads / "posecoach.json").write_text(json.dumps({"layout_file": "_plain.json",
                                                        "zeros_lost": True}))
    assert np.isnan(l_hip()[lost]).all()
    (uploads / "posecoach.json").write_text(json.dumps({"layout": "openpose",
                                                        "layout_file": "_plain.json"}))
    assert np.isnan(l_hip()[lost]).all()  # the built-in openpose layout's convention


@pytest.mark.parametrize("verb, flow", [("ingest", "flows.ingest.ingest_flow"),
                                        ("score", "flows.score.score_flow")])
def test_the_zeros_lost_option_reaches_the_readers(tmp_path, monkeypatch, verb, flow):
    seen: list[dict] = []

    def recorded(*args: object, **kwargs: object) -> None:
        seen.append(kwargs.get("declared") or kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(flow, recorded)
    for option, value in (("--zeros-lost", True), ("--no-zeros-lost", False)):
        done = CliRunner().invoke(app, [verb, str(tmp_path), option])
        assert done.exit_code == 0, done.output
        assert seen.pop()["zeros_lost"] is value


def test_a_batch_with_a_broken_layout_file_goes_on(seqs, tmp_path):
    good_layout = tmp_path / "kinect1.json"
    good_layout.write_text(json.dumps(layout_doc("kinect1")))
    load_layout(good_layout)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "_layout.json").write_text('{"name": "x", "joints": [')  # "_": not data
    (broken / "posecoach.json").write_text(json.dumps({"layout_file": "_layout.json"}))
    poses = np.stack(list(kinect1(np.asarray(seqs[0].poses, np.float64)).values()), axis=1)
    write_sequence_csv(replace(seqs[0], poses=poses.astype(np.float32), skeleton="kinect1"),
                       broken / "take.csv")
    write_sequence_csv(seqs[0], tmp_path / "plain" / "take.csv")
    out = list(iter_sequences(tmp_path / "broken")) + list(iter_sequences(tmp_path / "plain"))
    [err] = [o for o in out if isinstance(o, SequenceError)]
    assert err.kind == "bad_layout_file" and "_layout.json" in err.reason
    assert err.source == str(broken / "take.csv")  # the input's error, naming the layout file
    assert len([o for o in out if not isinstance(o, SequenceError)]) == 1


def test_a_missing_layout_file_is_named(seqs, tmp_path):
    path = write_sequence_csv(seqs[0], tmp_path / "take.csv")
    with pytest.raises(SequenceError) as err:
        list(iter_sequences(path, layout_file=str(tmp_path / "nowhere.json")))
    assert err.value.kind == "unreadable" and "nowhere.json" in str(err.value)


def test_posecoach_ingest_with_a_layout_file_and_axes_from_the_data(prefect_api, seqs,
                                                                    tmp_path):
    layout_path = tmp_path / "kinect1.json"
    layout_path.write_text(json.dumps(layout_doc("kinect1")))
    load_layout(layout_path)
    folder = tmp_path / "kinect"
    for k, seq in enumerate(seqs[:3]):
        joints = np.stack(list(kinect1(np.asarray(seq.poses, np.float64)).values()), axis=1)
        write_sequence_csv(replace(seq, poses=(joints @ UP_ROTATIONS["+y"]).astype(np.float32),
                                   skeleton="kinect1", units="m"), folder / f"{k}.csv")
    runner = CliRunner()
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    refused = runner.invoke(app, ["ingest", str(folder), "--dataset", "kin",
                                  "--layout-file", str(broken)])
    assert refused.exit_code != 0 and "broken.json" in " ".join(refused.output.split())
    result = runner.invoke(app, ["ingest", str(folder), "--dataset", "kin", "--layout-file",
                                 str(layout_path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["inserted"], report["rejected"]) == (3, 0)
    assert {c["up"]["value"] for c in report["conventions"].values()} == {"+y"}
    rows = Dataset("kin").read()
    assert {s.skeleton for s in rows} == {"ec3d19"} and {s.meta["layout"] for s in rows} == {
        "kinect1"}
    forced = runner.invoke(app, ["ingest", str(folder), "--dataset", "kin2", "--layout-file",
                                 str(layout_path), "--up=-y", "--json"])
    assert forced.exit_code == 0, forced.output
    assert {c["up"]["source"] for c in json.loads(forced.stdout)["conventions"].values()} == {
        "option"}


def _kinect1_session(path) -> object:
    session, _ = make_session("u1", "squat", ["correct"], seed=2)
    joints = np.stack(list(kinect1(np.asarray(session.poses, np.float64)).values()), axis=1)
    return write_session(replace(session, poses=(joints @ UP_ROTATIONS["+y"]).astype(np.float32),
                                 skeleton="kinect1"), path)


def test_a_session_folder_names_its_layout_and_axes_in_posecoach_json(seqs, tmp_path):
    uploads = tmp_path / "uploads"
    path = _kinect1_session(uploads / "u1.json")
    (uploads / "_kinect1.json").write_text(json.dumps(layout_doc("kinect1")))
    (uploads / "posecoach.json").write_text(json.dumps({"layout_file": "_kinect1.json"}))
    read = read_session(path)
    assert (read.skeleton, read.meta["layout"], read.meta["up"]) == ("ec3d19", "kinect1", "+y")
    (uploads / "posecoach.json").write_text(json.dumps({"layout_file": "_kinect1.json",
                                                        "up": "+z"}))
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == "contradicts_data" and "u1.json" in str(err.value)
    assert read_session(path, up="+y").meta["conventions"]["up"]["source"] == "option"


SECRET = '{"format": "db-password=hunter2"}'


@pytest.mark.parametrize("name, kind, problem", [
    ("{outside}", "bad_manifest", "an absolute path"),
    ("../secret/config.json", "bad_manifest", "not a plain name"),
    ("link.json", "bad_manifest", "leads out of the manifest's folder"),
    ("_folder.json", "unreadable", "not a regular file"),
])
def test_a_manifest_names_a_layout_file_only_inside_its_folder(tmp_path, name, kind, problem):
    """The manifest comes with the uploads: it cannot make the reader open a file outside its
    folder (nor read what is not a file), and no error tells what such a file holds or whether it is
    there; ingest reads manifests the same way. The operator's --layout-file is read anywhere."""
    (tmp_path / "secret").mkdir()
    outside = tmp_path / "secret" / "config.json"
    outside.write_text(SECRET)
    uploads = tmp_path / "uploads"
    path = _kinect1_session(uploads / "u1.json")
    (uploads / "link.json").symlink_to(outside)
    (uploads / "_folder.json").mkdir()
    (uploads / "posecoach.json").write_text(json.dumps({"layout_file": name.format(
        outside=outside)}))
    with pytest.raises(SequenceError) as err:
        read_session(path)
    assert err.value.kind == kind and problem in str(err.value)
    assert "hunter2" not in str(err.value) and str(outside) not in str(err.value)
    (refused, *_) = [e for e in iter_sequences(uploads) if isinstance(e, SequenceError)
                     and e.source == str(path)]
    assert refused.kind == kind and "hunter2" not in str(refused)
    (tmp_path / "kinect1.json").write_text(json.dumps(layout_doc("kinect1")))
    (uploads / "posecoach.json").unlink()
    read = read_session(path, layout_file=tmp_path / "kinect1.json")
    assert read.meta["layout"] == "kinect1"


def test_a_layout_file_is_read_bounded_whatever_its_size_says(tmp_path, monkeypatch):
    """A file whose size on disk says nothing of what it holds (a device, /proc) is read no
    further than the bound, and the format's value is never quoted."""
    monkeypatch.setattr(layouts, "MAX_LAYOUT_BYTES", 64)
    status = Path("/proc/self/status")
    if not status.is_file() or status.stat().st_size:
        pytest.skip("needs a /proc file of size 0")
    with pytest.raises(LayoutError, match="larger than"):
        load_layout(status)
    path = tmp_path / "layout.json"
    path.write_text(SECRET)
    with pytest.raises(LayoutError) as err:
        load_layout(path)
    assert "format is not 'posecoach-layout'" in str(err.value)
    assert "hunter2" not in str(err.value)
