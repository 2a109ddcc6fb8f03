"""Feedback in words from given arrays: directions, moments, sizes, cues, the unsure threshold."""

from __future__ import annotations

import numpy as np
import pytest

from model.data.labels import EC3D_LABEL_NAMES
from model.data.skeletons import get_skeleton
from model.serve.feedback import (
    CUES,
    GOOD_CUE,
    UNSURE_PREFIX,
    coach_cue,
    cue_joints,
    direction_words,
    implausible,
    joint_deviations,
    joint_words,
    many_joint_deviations,
)
from model.settings import CORRECT

SK = get_skeleton("ec3d19")
N = 100
BOTTOM = 50


def squat_like() -> np.ndarray:
    """A still body whose ankles rise towards the hips until frame BOTTOM and back (a squat)."""
    rng = np.random.default_rng(0)
    poses = np.repeat(rng.normal(0, 0.3, (1, SK.n_joints, 3)), N, axis=0).astype(np.float32)
    rise = 0.3 * np.sin(np.linspace(0, np.pi, N))
    for j in ("l_ankle", "r_ankle"):
        poses[:, SK.index(j), 2] = -0.9 + rise
    return poses


def moved(poses: np.ndarray, joint: str, frame: int, vec: tuple[float, float, float],
          ) -> np.ndarray:
    out = poses.copy()
    out[frame, SK.index(joint)] += np.asarray(vec, dtype=np.float32)
    return out


@pytest.mark.parametrize(
    ("vec", "joint", "words"),
    [
        ((0.0, 0.05, 0.0), "l_knee", "outward"),
        ((0.0, 0.05, 0.0), "r_knee", "inward"),
        ((0.0, -0.05, 0.0), "r_knee", "outward"),
        ((0.0, -0.05, 0.0), "l_knee", "inward"),
        ((0.05, 0.0, 0.0), "neck", "forward"),
        ((-0.05, 0.0, 0.0), "neck", "back"),
        ((0.0, 0.0, -0.05), "l_ankle", "down"),
        ((0.0, 0.05, 0.0), "neck", "to the left"),
        ((0.04, 0.0, 0.03), "nose", "forward and up"),
        ((0.04, 0.0, 0.01), "nose", "forward"),
    ],
)
def test_direction_in_body_terms(vec, joint, words):
    assert direction_words(np.array(vec), joint) == words


def test_joint_words():
    assert joint_words("l_big_toe") == "left big toe"
    assert joint_words("r_knee") == "right knee"
    assert joint_words("mid_hip") == "mid hip"


def test_largest_deviation_in_cm_at_its_moment():
    original = squat_like()
    corrected = moved(original, "l_knee", BOTTOM, (0.0, 0.06, 0.0))
    corrected = moved(corrected, "neck", 20, (0.02, 0.0, 0.0))
    devs = joint_deviations(original, corrected, SK, "squat", fps=30.0)
    top = devs[0]
    assert top.joint == "l_knee"
    assert top.cm == pytest.approx(6.0, abs=1e-3)
    assert top.direction == "outward"
    assert top.frame == BOTTOM
    assert top.moment == "at the bottom"
    assert devs[1].joint == "neck" and devs[1].moment == "on the way down"
    assert devs[1].cm == pytest.approx(2.0, abs=1e-3)


def test_scale_gives_back_real_centimetres():
    original = squat_like()
    corrected = moved(original, "r_knee", 80, (0.0, 0.05, 0.0))
    devs = joint_deviations(original, corrected, SK, "squat", fps=30.0, scale=1.2)
    assert devs[0].cm == pytest.approx(6.0, abs=1e-3)
    assert devs[0].direction == "inward"
    assert devs[0].moment == "on the way up"


def test_include_adds_the_cue_joint_when_not_on_top():
    original = squat_like()
    corrected = moved(original, "nose", 10, (0.1, 0.0, 0.0))
    for j in ("neck", "l_wrist", "r_wrist"):
        corrected = moved(corrected, j, 10, (0.09, 0.0, 0.0))
    corrected = moved(corrected, "r_knee", BOTTOM, (0.0, 0.04, 0.0))
    devs = joint_deviations(original, corrected, SK, "squat", 30.0, top=3,
                            include=cue_joints("knees_inward"))
    assert [d.joint for d in devs][:3] == ["nose", "neck", "l_wrist"]
    assert devs[-1].joint == "r_knee"
    cue = coach_cue("knees_inward", devs)
    assert cue == ("knees drift inward: push them out over your toes, about 4 cm at the bottom")


def test_many_repetitions_at_once_each_as_alone():
    """Repetitions of other lengths, exercises, scales and cue joints side by side: nothing
    crosses from one to the next (peaks, frames, bottoms, held displacements)."""
    base = squat_like()
    shallow = base[:40].copy()
    shallow[:, [SK.index("l_ankle"), SK.index("r_ankle")], 2] = -0.9  # no depth: no bottom
    pairs = [
        (base, moved(base, "l_knee", BOTTOM, (0.0, 0.06, 0.0))),
        (shallow, moved(shallow, "neck", 0, (0.2, 0.0, 0.0))),  # biggest peak of all, frame 0
        (base[:70], base[:70] + np.float32(0.03)),  # every joint held throughout
        (base, moved(moved(base, "r_heel", N - 1, (0.0, 0.0, -0.05)),  # on the last frame
                     "l_knee", BOTTOM + 10, (0.0, 0.08, 0.0))),
    ]
    exercises = ["squat", "lunge", "plank", "squat"]
    scales = [1.0, 1.3, 0.8, 1.1]
    includes = [cue_joints("knees_inward"), (), cue_joints("arched_back"), ("nose",)]
    together = many_joint_deviations([o for o, _ in pairs], [c for _, c in pairs], SK,
                                     exercises, 30.0, scales, includes)
    alone = [joint_deviations(o, c, SK, ex, 30.0, scale, include=inc)
             for (o, c), ex, scale, inc in zip(pairs, exercises, scales, includes, strict=True)]
    assert together == alone
    assert together[1][0].joint == "neck" and together[1][0].frame == 0
    assert together[1][0].moment == "throughout"  # no bottom in a shallow repetition
    assert [(d.joint, d.moment) for d in together[3][:2]] == [("l_knee", "at the bottom"),
                                                              ("r_heel", "at the end")]
    assert together[3][1].frame == N - 1
    assert {d.moment for d in together[2]} == {"throughout the hold"}
    assert many_joint_deviations([], [], SK, [], 30.0, [], []) == []


def test_plank_moments_are_times():
    original = squat_like()
    corrected = moved(original, "neck", 45, (0.0, 0.0, 0.03))
    devs = joint_deviations(original, corrected, SK, "plank", fps=30.0)
    assert devs[0].moment == "1.5 s into the hold"


def test_a_displacement_held_over_most_frames_is_throughout():
    original = squat_like()
    corrected = original.copy()
    corrected[:, SK.index("l_ankle"), 1] -= 0.07
    devs = joint_deviations(original, corrected, SK, "squat", fps=30.0)
    assert devs[0].joint == "l_ankle" and devs[0].direction == "inward"
    assert devs[0].moment == "throughout the repetition"
    assert joint_deviations(original, corrected, SK, "plank", 30.0)[0].moment == (
        "throughout the hold"
    )
    assert coach_cue("feet_too_wide", devs) == (
        "feet too wide: bring them in to shoulder width, about 7 cm throughout the repetition"
    )


def test_every_ec3d_mistake_has_a_cue_and_others_get_the_generic_one():
    mistakes = set(EC3D_LABEL_NAMES.values()) - {CORRECT, "unknown"}
    assert mistakes <= set(CUES)
    original = squat_like()
    devs = joint_deviations(original, moved(original, "l_elbow", 30, (0.0, 0.08, 0.0)), SK,
                            "squat", 30.0)
    generic = coach_cue("elbows_flared", devs)
    assert generic.startswith("elbows flared: move your left elbow outward, about 8 cm")
    assert coach_cue("unknown", devs).startswith("unknown: move your left elbow")
    assert coach_cue(CORRECT, devs) == GOOD_CUE
    assert coach_cue(CORRECT, devs, unsure=True) == UNSURE_PREFIX + GOOD_CUE
    assert coach_cue("elbows_flared", devs, unsure=True).startswith(UNSURE_PREFIX)


def test_moments_of_other_exercises_are_phases_not_squat_words():
    original = squat_like()
    early, late = (moved(original, "l_wrist", f, (0.0, 0.0, 0.05)) for f in (10, 85))
    assert joint_deviations(original, early, SK, "arm_raise", 30.0)[0].moment == (
        "early in the repetition")
    late_dev = joint_deviations(original, late, SK, "sit_to_stand", 30.0)[0]
    assert late_dev.moment == "late in the repetition"
    middle = joint_deviations(original, moved(original, "l_wrist", BOTTOM, (0.0, 0.0, 0.05)),
                              SK, "arm_raise", 30.0)[0]
    assert middle.moment == "midway through the repetition"
    assert joint_deviations(original, late, SK, "squat", 30.0)[0].moment == "on the way up"


def test_a_correction_moving_a_joint_beyond_a_body_is_implausible_and_unsized():
    original = squat_like()
    broken = moved(original, "l_elbow", 30, (0.0, 7.0, 0.0))
    devs = joint_deviations(original, broken, SK, "arm_raise", 30.0)
    assert implausible(devs) is devs[0] and devs[0].cm > 600
    fine = joint_deviations(original, moved(original, "l_elbow", 30, (0.0, 0.3, 0.0)), SK,
                            "arm_raise", 30.0)
    assert implausible(fine) is None
    assert coach_cue("elbows_bent", []) == "elbows bent"
    assert coach_cue("knees_inward", [], unsure=True) == (
        UNSURE_PREFIX + "knees drift inward: push them out over your toes")
