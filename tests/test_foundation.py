"""Settings, skeletons, sequence validation and the one normalisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from model.data import sequence as sequence_module
from model.data.card import DatasetCard, with_env
from model.data.formats import build_sequence
from model.data.labels import EC3D_LABEL_NAMES, classes_from, correct_class, ec3d_classes
from model.data.names import label_name
from model.data.normalize import (
    Normalization,
    body_size,
    fill_missing,
    normalize,
    normalize_many,
    resample,
)
from model.data.sequence import Sequence, SequenceError, validate, validate_many
from model.data.skeletons import (
    EC3D_JOINTS,
    JOINT_MAPS,
    SKELETONS,
    SkeletonError,
    get_skeleton,
    joint_map,
)
from model.settings import SettingsError, load_settings


def standing_pose(height: float = 1.8) -> np.ndarray:
    """A plain standing body in the canonical skeleton, metres, z up, facing +x, left +y."""
    h = height / 1.8
    p = {
        "nose": (0.08, 0.0, 1.70), "neck": (0.0, 0.0, 1.50),
        "r_shoulder": (0.0, -0.20, 1.45), "r_elbow": (0.0, -0.25, 1.15),
        "r_wrist": (0.0, -0.27, 0.90), "l_shoulder": (0.0, 0.20, 1.45),
        "l_elbow": (0.0, 0.25, 1.15), "l_wrist": (0.0, 0.27, 0.90),
        "mid_hip": (0.0, 0.0, 1.00), "r_hip": (0.0, -0.10, 1.00), "r_knee": (0.02, -0.11, 0.55),
        "r_ankle": (0.0, -0.11, 0.10), "l_hip": (0.0, 0.10, 1.00), "l_knee": (0.02, 0.11, 0.55),
        "l_ankle": (0.0, 0.11, 0.10), "l_big_toe": (0.18, 0.12, 0.02),
        "l_heel": (-0.05, 0.11, 0.02), "r_big_toe": (0.18, -0.12, 0.02),
        "r_heel": (-0.05, -0.11, 0.02),
    }  # fmt: skip
    return np.array([p[j] for j in EC3D_JOINTS], dtype=np.float32) * h


def squat_clip(frames: int = 60) -> np.ndarray:
    base = standing_pose()
    depth = 0.3 * np.sin(np.linspace(0, np.pi, frames)) ** 2
    clip = np.repeat(base[None], frames, axis=0)
    upper = [EC3D_JOINTS.index(j) for j in EC3D_JOINTS if "ankle" not in j and "toe" not in j
             and "heel" not in j and "knee" not in j]  # fmt: skip
    clip[:, upper, 2] -= depth[:, None]
    return clip


def test_settings_environment_overrides(tmp_path):
    s = load_settings({"POSECOACH_HOME": str(tmp_path), "RAY_ADDRESS": "ray://h:10001",
                       "POSECOACH_PROFILE": "nightly"})  # fmt: skip
    assert s.home == tmp_path
    assert s.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert s.lake == str(tmp_path / "lake")
    assert s.ray_address == "ray://h:10001"
    assert s.get_profile().train.epochs == 50
    with pytest.raises(KeyError, match="unknown profile"):
        s.get_profile("huge")


def test_nightly_profile_holds_the_papers_hyperparameters():
    p = load_settings({}).get_profile("nightly").train
    assert (p.lr, p.lr_decay, p.lr_step, p.batch_size, p.dropout, p.grad_clip) == (
        0.01, 0.9, 5, 32, 0.5, 1.0)  # fmt: skip
    assert (p.beta, p.smooth_weight, p.epochs, p.n_dct, p.hidden) == (1.0, 1e-3, 50, 25, 256)


def test_demo_profile_is_ec3d_sized_and_ends_with_a_low_learning_rate():
    p = load_settings({}).get_profile("demo")
    assert p.synth_subjects * 11 * p.synth_reps == 352  # EC3D: 4 subjects x 11 classes x 8
    t = p.train
    last_epoch_lr = t.lr * t.lr_decay ** ((t.epochs - 1) // t.lr_step)
    assert last_epoch_lr < 0.1 * t.lr


def test_canonical_skeleton_is_ec3d_subset_of_body25():
    sk = get_skeleton("ec3d19")
    assert sk.n_joints == 19
    body25 = get_skeleton("body25").joints
    assert [body25.index(j) for j in sk.joints] == [*range(15), 19, 21, 22, 24]


@pytest.mark.parametrize("name", sorted(SKELETONS))
def test_every_skeleton_has_drawable_bones_and_a_map(name):
    sk = SKELETONS[name]
    assert sk.bones and all(a in sk.joints and b in sk.joints for a, b in sk.bones)
    jm = joint_map(name)
    assert set(jm.sources) == set(EC3D_JOINTS)
    assert all(s in sk.joints for srcs in jm.sources.values() for s in srcs)


def test_joint_map_averages_source_joints():
    jm = JOINT_MAPS["coco17"]
    coco = get_skeleton("coco17")
    poses = np.zeros((2, coco.n_joints, 3), dtype=np.float32)
    poses[:, coco.index("l_hip")] = (1.0, 0.0, 0.0)
    poses[:, coco.index("r_hip")] = (3.0, 0.0, 0.0)
    out = jm.apply(poses)
    assert out[0, EC3D_JOINTS.index("mid_hip"), 0] == pytest.approx(2.0)
    assert "l_heel" in jm.approximate


def test_unknown_skeleton_and_missing_map_are_named():
    with pytest.raises(SkeletonError, match="unknown skeleton 'openpose18'"):
        joint_map("openpose18")
    with pytest.raises(SkeletonError, match="no joint map onto 'coco17'"):
        joint_map("kinect2", "coco17")


def _seq(poses, **kw):
    args = dict(subject="s1", exercise="squat", skeleton="ec3d19", fps=30.0, source="t.json")
    args.update(kw)
    return Sequence(poses=poses, **args)


def test_the_labels_of_ec3d_and_uiprmd_are_plain_names():
    for label in (*EC3D_LABEL_NAMES.values(), "correct", "incorrect"):
        assert label_name(label) == label


@pytest.mark.parametrize("fields, message", [
    (dict(rep="three"), r"rep 'three' is not a whole number$"),
    (dict(fps="fast"), r"fps 'fast' is not a number a float holds$"),
])
def test_a_bad_number_field_is_named_alone(fields, message):
    given = {"subject": "s1", "exercise": "squat", "skeleton": "ec3d19", "fps": 30.0,
             "label": "correct", "rep": 1, **fields}
    with pytest.raises(SequenceError, match=message) as err:
        build_sequence(squat_clip(), given, "t.json")
    assert err.value.kind == "bad_field"


@pytest.mark.parametrize(
    "change, kind",
    [
        (dict(skeleton="openpose18"), "unknown_skeleton"),
        (dict(exercise="Burpee!"), "unknown_exercise"),
        (dict(label="bad/<script>"), "bad_label"),
        (dict(label="Elbows_Bent"), "bad_label"),
        (dict(label="elbows bent"), "bad_label"),
        (dict(label=""), "bad_label"),
        (dict(label="x" * 41), "bad_label"),
        (dict(label="ok\x1b[2J"), "bad_label"),
        (dict(units="inch"), "unknown_units"),
        (dict(fps=0.0), "bad_fps"),
        (dict(poses=squat_clip()[:5]), "too_few_frames"),
        (dict(poses=squat_clip()[:, :18]), "wrong_joint_count"),
        (dict(poses=squat_clip()[..., :2]), "bad_shape"),
        (dict(poses=squat_clip() * 1000), "absurd_coordinates"),
        (dict(poses=np.full((40, 19, 3), np.inf, np.float32)), "non_finite"),
        (dict(poses=np.full((40, 19, 3), np.nan, np.float32)), "no_joints"),
        (dict(poses=np.zeros((40, 19, 3), np.float32)), "collapsed"),
        (dict(poses=np.repeat(squat_clip()[:1], 40, axis=0)), "no_motion"),
        (dict(poses=np.array([["a"] * 3] * 19 * 40).reshape(40, 19, 3)), "bad_dtype"),
    ],
)
def test_validation_names_input_and_problem(change, kind):
    seq = _seq(squat_clip())
    bad = dataclasses.replace(seq, **change)
    with pytest.raises(SequenceError) as err:
        validate(bad)
    assert err.value.kind == kind
    assert str(err.value).startswith("t.json: ")


def test_a_few_missing_joints_pass_and_are_filled():
    clip = squat_clip()
    clip[10:13, 4] = np.nan
    seq = validate(_seq(clip))
    filled = fill_missing(seq.poses)
    assert np.isfinite(filled).all()
    np.testing.assert_allclose(filled[11, 4], (clip[9, 4] + clip[13, 4]) / 2, atol=1e-6)


def test_range_checks_hold_with_missing_joints_and_other_units():
    clip = squat_clip()
    clip[10:13, 4] = np.nan
    assert validate(_seq(clip * 1000, units="mm")).poses.shape == clip.shape
    with pytest.raises(SequenceError) as err:
        validate(_seq(clip * 1000))
    assert err.value.kind == "absurd_coordinates"
    spread = clip.copy()
    spread[20, 0] += 5.0  # one frame where the body spans more than 3.5 m
    with pytest.raises(SequenceError, match="body spans"):
        validate(_seq(spread))


@pytest.mark.parametrize("batch_values", [sequence_module.CHECK_BATCH_VALUES, 8000])
def test_validate_many_judges_each_sequence_of_a_mixed_batch_on_its_own(monkeypatch, batch_values):
    monkeypatch.setattr(sequence_module, "CHECK_BATCH_VALUES", batch_values)
    clip = squat_clip()
    holes, lost, many, spread = clip.copy(), clip.copy(), clip.copy(), clip.copy()
    holes[10:13, 4] = np.nan
    lost[:, 7] = np.nan
    many[:, :6] = np.nan
    spread[20, 0] += 5.0
    inf = clip.copy()
    inf[3, 3, 1] = np.inf
    batch = [_seq(clip), _seq(clip * 1000), _seq(holes * 1000, units="mm"), _seq(lost),
             _seq(clip[:5]), _seq(spread), _seq(inf), _seq(many),
             _seq(clip[:, :17], skeleton="coco17"), _seq(clip[:, :17] * 100, skeleton="coco17"),
             _seq(clip.astype(np.float64) * 100, units="cm", rep=9)]
    got = validate_many(batch)
    kinds = [r.kind if isinstance(r, SequenceError) else None for r in got]
    assert kinds == [None, "absurd_coordinates", None, "non_finite", "too_few_frames",
                     "absurd_coordinates", "non_finite", "non_finite", None,
                     "absurd_coordinates", None]
    assert "32% of joint positions are missing" in got[7].reason
    assert "body spans 6.5 m" in got[5].reason
    for seq, result in zip(batch, got, strict=True):
        try:
            alone = validate(seq)
        except SequenceError as err:
            assert (err.kind, str(err)) == (result.kind, str(result))
            continue
        assert result.poses.dtype == np.float32 and result.rep == seq.rep
        np.testing.assert_array_equal(result.poses, alone.poses)
        np.testing.assert_array_equal(result.poses, seq.poses.astype(np.float32))


def test_sequence_id_ignores_label_but_not_poses():
    a = _seq(squat_clip(), label="correct")
    assert a.sequence_id == a.with_label("knees_inward").sequence_id
    b = _seq(squat_clip() + 0.001, label="correct")
    assert a.sequence_id != b.sequence_id
    assert a.sequence_id != dataclasses.replace(a, rep=1).sequence_id


def test_resample_keeps_duration():
    clip = squat_clip(101)
    out = resample(clip, 100.0, 30.0)
    assert out.shape[0] == 31
    np.testing.assert_allclose(out[-1], clip[-1], atol=1e-6)


@pytest.mark.parametrize("frames, fps_in, fps_out", [(101, 100.0, 30.0), (40, 30.0, 47.0)])
def test_resample_interpolates_every_coordinate_linearly(frames, fps_in, fps_out):
    clip = squat_clip(frames).astype(np.float64)
    out = resample(clip, fps_in, fps_out)
    t_in = np.arange(frames) / fps_in
    t_out = np.linspace(0.0, t_in[-1], out.shape[0])
    flat = clip.reshape(frames, -1)
    expected = np.stack([np.interp(t_out, t_in, flat[:, c]) for c in range(flat.shape[1])], 1)
    np.testing.assert_allclose(out.reshape(out.shape[0], -1), expected, atol=1e-12)


def test_normalisation_removes_place_heading_units_and_rate():
    clip = squat_clip(90)
    norm = Normalization()
    ref, _ = normalize(validate(_seq(clip)), norm)
    angle = 2.1
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]], dtype=np.float32)  # fmt: skip
    moved = (clip @ rot.T + np.array([3.0, -2.0, 0.0], dtype=np.float32)) * 1000
    fast = resample(moved, 30.0, 60.0)
    other, _ = normalize(validate(_seq(fast, units="mm", fps=60.0)), norm)
    assert other.shape == ref.shape
    np.testing.assert_allclose(other, ref, atol=2e-3)
    hip = EC3D_JOINTS.index("mid_hip")
    assert np.abs(ref[:, hip]).max() < 1e-6
    assert ref[0, EC3D_JOINTS.index("l_hip"), 1] > 0
    assert ref[0, EC3D_JOINTS.index("l_big_toe"), 0] > 0


@pytest.mark.parametrize("scale_by_body", [False, True])
def test_normalising_many_at_once_gives_each_sequence_its_own_result(scale_by_body):
    """Mixed skeletons, units, rates, headings and lost joints in one call: every result is
    the one-sequence result, bit for bit, whatever else is in the batch and in what order."""
    kin = get_skeleton("kinect2")
    as_kinect = np.zeros((50, kin.n_joints, 3), dtype=np.float32)
    for target, sources in JOINT_MAPS["kinect2"].sources.items():
        for s in sources:
            as_kinect[:, kin.index(s)] = squat_clip(50)[:, EC3D_JOINTS.index(target)]
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]], dtype=np.float32)  # fmt: skip
    lost = squat_clip(45).copy()
    lost[10:14, EC3D_JOINTS.index("l_knee")] = np.nan
    seqs = [
        _seq(squat_clip(60)),
        _seq(resample(squat_clip(70) @ rot.T * 1000, 30.0, 60.0), units="mm", fps=60.0),
        _seq(as_kinect[..., [0, 2, 1]] * np.array([1, 1, -1], dtype=np.float32),
             skeleton="kinect2"),
        _seq(squat_clip(80) * 1.1 + np.float32(0.5)),
        _seq(lost),
    ]
    norm = Normalization(scale_by_body=scale_by_body)
    alone = [normalize(s, norm) for s in seqs]
    together = normalize_many(seqs, norm)
    backwards = normalize_many(seqs[::-1], norm)[::-1]
    for (a, sa), (b, sb), (c, sc) in zip(alone, together, backwards, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape == c.shape
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        assert sa == sb == sc
    assert together[1][0].shape[0] == 70  # resampled from 60 fps to 30
    assert not np.isnan(together[4][0]).any()
    assert (together[3][1] > together[0][1]) == scale_by_body


def test_up_axis_of_source_skeleton_is_turned_to_z():
    clip = squat_clip(40)
    kin = get_skeleton("kinect2")
    src = np.zeros((40, kin.n_joints, 3), dtype=np.float32)
    for target, sources in JOINT_MAPS["kinect2"].sources.items():
        for s in sources:
            src[:, kin.index(s)] = clip[:, EC3D_JOINTS.index(target)]
    y_up = src[..., [0, 2, 1]] * np.array([1, 1, -1], dtype=np.float32)
    out, _ = normalize(validate(_seq(y_up, skeleton="kinect2")), Normalization())
    neck = EC3D_JOINTS.index("neck")
    assert out[0, neck, 2] > 0.4


def test_body_scaling_makes_heights_alike():
    norm = Normalization(scale_by_body=True)
    small, s_small = normalize(validate(_seq(squat_clip() * 0.85)), norm)
    tall, s_tall = normalize(validate(_seq(squat_clip() * 1.1)), norm)
    np.testing.assert_allclose(small, tall, atol=1e-4)
    assert s_tall / s_small == pytest.approx(1.1 / 0.85, rel=1e-4)
    assert body_size(squat_clip(), "ec3d19") > 0.5


def test_classes_follow_the_papers_order():
    assert len(ec3d_classes()) == 12
    got = classes_from([("plank", "arched_back"), ("squat", "correct"), ("squat", "wobble"),
                        ("lunge", "correct")])  # fmt: skip
    assert got == [("squat", "correct"), ("lunge", "correct"), ("plank", "arched_back"),
                   ("squat", "wobble")]  # fmt: skip
    assert correct_class(got, "lunge") == 1


def test_gate_margins_come_from_settings():
    s = load_settings({"POSECOACH_GATE_MACRO_MARGIN": "0.1", "POSECOACH_GATE_CLASS_FLOOR": "none"})
    assert s.gate.macro_margin == 0.1
    assert s.gate.class_floor is None
    assert s.gate.floor_macro == 0.5


@pytest.mark.parametrize(("key", "raw", "says"), [
    ("POSECOACH_KEEP_CV", "abc", "an integer"),
    ("POSECOACH_KEEP_CV", "2.5", "an integer"),
    ("POSECOACH_REVIEW_AUDIT", "x", "an integer"),
    ("POSECOACH_DRIFT_PSI", "x", "a finite number"),
    ("POSECOACH_UNSURE_THRESHOLD", "nan", "a finite number"),
    ("POSECOACH_LIMIT_MAX_FRAMES", "1e400", "an integer"),
])
def test_a_setting_that_is_not_a_number_is_named(key, raw, says):
    with pytest.raises(SettingsError, match=f"{key}={raw!r} is not {says}"):
        load_settings({key: raw})
    assert load_settings({"POSECOACH_KEEP_CV": "4.0"}).keep_cv == 4


def test_gate_subjects_of_a_dataset_can_be_declared():
    env = {"POSECOACH_GATE_SUBJECTS_UIPRMD": "s01", "POSECOACH_GATE_SUBJECTS_MINE": "a, b"}
    assert with_env(DatasetCard("uiprmd", gate_subjects=("s09",)), env).gate_subjects == ("s01",)
    assert with_env(DatasetCard("mine"), env).gate_subjects == ("a", "b")
    assert with_env(DatasetCard("ec3d", gate_subjects=("s4",)), env).gate_subjects == ("s4",)

