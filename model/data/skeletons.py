"""Skeletons as data: joint names, bones for drawing, the up axis where a layout fixes it (a
camera's, or image coordinates'), and joint maps onto EC3D's 19.

A joint map says, for each canonical joint, which source joints make it (their mean). A source
layout that lacks a canonical joint declares a stand-in (for example a heel from the ankle); such
maps are marked `approximate`, and scoring reports it. Nothing is guessed silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np


@dataclass(frozen=True)
class Skeleton:
    name: str
    joints: tuple[str, ...]
    bones: tuple[tuple[str, str], ...]
    up: str | None = None  # the up axis when the layout fixes it; None: the data's or declared

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)

    def bone_indices(self) -> list[tuple[int, int]]:
        return [(self.index(a), self.index(b)) for a, b in self.bones]


@dataclass(frozen=True)
class JointMap:
    """How a source skeleton becomes another: each target joint is the mean of source joints."""

    source: str
    target: str
    sources: dict[str, tuple[str, ...]]
    approximate: tuple[str, ...] = ()

    @cached_property
    def weights(self) -> np.ndarray:
        """(target joints, source joints): each row averages the source joints it names."""
        src = SKELETONS[self.source]
        tgt = SKELETONS[self.target]
        w = np.zeros((tgt.n_joints, src.n_joints))
        for j, name in enumerate(tgt.joints):
            idx = [src.index(s) for s in self.sources[name]]
            w[j, idx] = 1.0 / len(idx)
        return w

    def apply(self, poses: np.ndarray) -> np.ndarray:
        """Map (frames, source joints, 3) onto (frames, target joints, 3). A lost (NaN) source
        joint makes lost only the target joints made from it."""
        if self.source == self.target:
            return poses
        weights = self.weights.astype(poses.dtype)
        lost = np.isnan(poses)
        if not lost.any():
            return weights @ poses
        mapped = weights @ np.where(lost, 0, poses)
        feeds = (self.weights != 0).T.astype(float)  # (source joints, target joints)
        mapped[lost.any(axis=-1).astype(float) @ feeds > 0] = np.nan
        return mapped


BODY25_NAMES = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "mid_hip", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye",
    "r_ear", "l_ear", "l_big_toe", "l_small_toe", "l_heel", "r_big_toe", "r_small_toe", "r_heel",
)  # fmt: skip
EC3D_BODY25_INDICES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 19, 21, 22, 24)
EC3D_JOINTS = tuple(BODY25_NAMES[i] for i in EC3D_BODY25_INDICES)

_LIMB_BONES = (
    ("neck", "r_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
    ("neck", "l_shoulder"), ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
    ("mid_hip", "r_hip"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"),
    ("mid_hip", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
)  # fmt: skip
_EC3D_BONES = (
    ("nose", "neck"), ("neck", "mid_hip"), *_LIMB_BONES,
    ("l_ankle", "l_big_toe"), ("l_ankle", "l_heel"),
    ("r_ankle", "r_big_toe"), ("r_ankle", "r_heel"),
)  # fmt: skip

COCO17_NAMES = (
    "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
)  # fmt: skip

MEDIAPIPE33_NAMES = (
    "nose", "l_eye_inner", "l_eye", "l_eye_outer", "r_eye_inner", "r_eye", "r_eye_outer",
    "l_ear", "r_ear", "mouth_l", "mouth_r", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
    "l_wrist", "r_wrist", "l_pinky", "r_pinky", "l_index", "r_index", "l_thumb", "r_thumb",
    "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle", "l_heel", "r_heel",
    "l_foot_index", "r_foot_index",
)  # fmt: skip

KINECT2_NAMES = (
    "spine_base", "spine_mid", "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "l_hand",
    "r_shoulder", "r_elbow", "r_wrist", "r_hand", "l_hip", "l_knee", "l_ankle", "l_foot",
    "r_hip", "r_knee", "r_ankle", "r_foot", "spine_shoulder", "l_hand_tip", "l_thumb",
    "r_hand_tip", "r_thumb",
)  # fmt: skip

VICON39_NAMES = (
    "LFHD", "RFHD", "LBHD", "RBHD", "C7", "T10", "CLAV", "STRN", "RBAK", "LSHO", "LUPA", "LELB",
    "LFRM", "LWRA", "LWRB", "LFIN", "RSHO", "RUPA", "RELB", "RFRM", "RWRA", "RWRB", "RFIN",
    "LASI", "RASI", "LPSI", "RPSI", "LTHI", "LKNE", "LTIB", "LANK", "LHEE", "LTOE", "RTHI",
    "RKNE", "RTIB", "RANK", "RHEE", "RTOE",
)  # fmt: skip


SKELETONS: dict[str, Skeleton] = {
    "ec3d19": Skeleton("ec3d19", EC3D_JOINTS, _EC3D_BONES),
    "body25": Skeleton("body25", BODY25_NAMES, _EC3D_BONES),
    "coco17": Skeleton(
        "coco17",
        COCO17_NAMES,
        (("nose", "l_shoulder"), ("nose", "r_shoulder"), ("l_shoulder", "r_shoulder"),
         ("l_hip", "r_hip"), *[b for b in _LIMB_BONES if "neck" not in b and "mid_hip" not in b]),
        up="-y",
    ),  # fmt: skip
    "mediapipe33": Skeleton(
        "mediapipe33",
        MEDIAPIPE33_NAMES,
        (("l_shoulder", "r_shoulder"), ("l_hip", "r_hip"),
         *[b for b in _LIMB_BONES if "neck" not in b and "mid_hip" not in b],
         ("l_ankle", "l_heel"), ("l_heel", "l_foot_index"),
         ("r_ankle", "r_heel"), ("r_heel", "r_foot_index")),
        up="-y",
    ),  # fmt: skip
    "kinect2": Skeleton(
        "kinect2",
        KINECT2_NAMES,
        (("spine_base", "spine_mid"), ("spine_mid", "spine_shoulder"), ("spine_shoulder", "neck"),
         ("neck", "head"), ("spine_shoulder", "l_shoulder"), ("l_shoulder", "l_elbow"),
         ("l_elbow", "l_wrist"), ("spine_shoulder", "r_shoulder"), ("r_shoulder", "r_elbow"),
         ("r_elbow", "r_wrist"), ("spine_base", "l_hip"), ("l_hip", "l_knee"),
         ("l_knee", "l_ankle"), ("l_ankle", "l_foot"), ("spine_base", "r_hip"),
         ("r_hip", "r_knee"), ("r_knee", "r_ankle"), ("r_ankle", "r_foot")),
        up="+y",
    ),  # fmt: skip
    "vicon39": Skeleton(
        "vicon39",
        VICON39_NAMES,
        (("C7", "LSHO"), ("C7", "RSHO"), ("LSHO", "LELB"), ("LELB", "LWRA"), ("RSHO", "RELB"),
         ("RELB", "RWRA"), ("LASI", "RASI"), ("LPSI", "RPSI"), ("LASI", "LKNE"),
         ("LKNE", "LANK"), ("LANK", "LTOE"), ("LANK", "LHEE"), ("RASI", "RKNE"),
         ("RKNE", "RANK"), ("RANK", "RTOE"), ("RANK", "RHEE"), ("C7", "CLAV"),
         ("LFHD", "RFHD")),
    ),  # fmt: skip
}

CANONICAL = "ec3d19"


JOINT_MAPS: dict[str, JointMap] = {
    "body25": JointMap("body25", CANONICAL, {j: (j,) for j in EC3D_JOINTS}),
    "coco17": JointMap(
        "coco17",
        CANONICAL,
        {
            **{j: (j,) for j in EC3D_JOINTS if j in COCO17_NAMES},
            "neck": ("l_shoulder", "r_shoulder"),
            "mid_hip": ("l_hip", "r_hip"),
            "l_big_toe": ("l_ankle",),
            "l_heel": ("l_ankle",),
            "r_big_toe": ("r_ankle",),
            "r_heel": ("r_ankle",),
        },
        approximate=("l_big_toe", "l_heel", "r_big_toe", "r_heel"),
    ),
    "mediapipe33": JointMap(
        "mediapipe33",
        CANONICAL,
        {
            **{j: (j,) for j in EC3D_JOINTS if j in MEDIAPIPE33_NAMES},
            "neck": ("l_shoulder", "r_shoulder"),
            "mid_hip": ("l_hip", "r_hip"),
            "l_big_toe": ("l_foot_index",),
            "r_big_toe": ("r_foot_index",),
        },
    ),
    "kinect2": JointMap(
        "kinect2",
        CANONICAL,
        {
            "nose": ("head",),
            "neck": ("spine_shoulder",),
            **{
                j: (j,)
                for j in EC3D_JOINTS
                if j in KINECT2_NAMES and j not in ("neck",)
            },
            "mid_hip": ("spine_base",),
            "l_big_toe": ("l_foot",),
            "r_big_toe": ("r_foot",),
            "l_heel": ("l_ankle",),
            "r_heel": ("r_ankle",),
        },
        approximate=("nose", "l_heel", "r_heel"),
    ),
    "vicon39": JointMap(
        "vicon39",
        CANONICAL,
        {
            "nose": ("LFHD", "RFHD"),
            "neck": ("C7", "CLAV"),
            "r_shoulder": ("RSHO",),
            "r_elbow": ("RELB",),
            "r_wrist": ("RWRA", "RWRB"),
            "l_shoulder": ("LSHO",),
            "l_elbow": ("LELB",),
            "l_wrist": ("LWRA", "LWRB"),
            "mid_hip": ("LASI", "RASI", "LPSI", "RPSI"),
            "r_hip": ("RASI", "RPSI"),
            "r_knee": ("RKNE",),
            "r_ankle": ("RANK",),
            "l_hip": ("LASI", "LPSI"),
            "l_knee": ("LKNE",),
            "l_ankle": ("LANK",),
            "l_big_toe": ("LTOE",),
            "l_heel": ("LHEE",),
            "r_big_toe": ("RTOE",),
            "r_heel": ("RHEE",),
        },
        approximate=("nose", "neck", "r_hip", "l_hip"),
    ),
}


class SkeletonError(ValueError):
    """A skeleton that is unknown, or that neither matches nor maps onto the one needed."""


def unknown_skeleton(name: str) -> str:
    """Why a skeleton name is not known, with the known ones and where another comes from."""
    return (f"unknown skeleton {name!r} (known: {', '.join(sorted(SKELETONS))}); another "
            "source's skeleton comes with its layout file: pass --layout-file, or name it as "
            "layout_file in a posecoach.json in the files' folder")


def get_skeleton(name: str) -> Skeleton:
    if name not in SKELETONS:
        raise SkeletonError(unknown_skeleton(name))
    return SKELETONS[name]


@cache
def joint_map(source: str, target: str = CANONICAL) -> JointMap:
    """The map from `source` onto `target`; raises SkeletonError when there is none."""
    get_skeleton(source)
    get_skeleton(target)
    if source == target:
        return JointMap(source, target, {j: (j,) for j in SKELETONS[target].joints})
    jm = JOINT_MAPS.get(source)
    if jm is None or jm.target != target:
        raise SkeletonError(f"skeleton {source!r} has no joint map onto {target!r}")
    return jm
