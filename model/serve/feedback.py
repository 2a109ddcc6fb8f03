"""Feedback in words: from a classification and a correction to what a coach would say.

Everything here works on the model's normalised frame (DESIGN.md): the body faces +x, its left
is +y, up is +z, every frame centred on the mid-hip. A displacement is corrected minus original,
given back in real centimetres by multiplying with the body scale that normalisation divided by.
A displacement held at 80 % of its peak or more over at least half the frames is said to happen
"throughout" the repetition (or hold); otherwise at the moment of its peak.

"Unsure": a prediction whose calibrated confidence (the model's temperature applied) is below
the unsure threshold, a setting (model.settings: POSECOACH_UNSURE_THRESHOLD); the cue then says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from model.data.skeletons import Skeleton
from model.settings import CORRECT

TOP_JOINTS = 3
SECONDARY_SHARE = 0.5
BOTTOM_WINDOW = 0.15
EDGE_WINDOW = 0.1
MIN_DEPTH_M = 0.05
SUSTAINED = 0.8
#: The most a correction may move a joint, in cm: more than a body's height means it is broken.
PLAUSIBLE_CM = 200.0
#: The exercises whose moments are told by their up-down cycle; others by PHASES.
SQUATTING = ("squat", "lunge")
PHASES = ("early in the repetition", "midway through the repetition", "late in the repetition")


@dataclass(frozen=True)
class Deviation:
    """How far the correction moves one joint, at the frame where it moves it most."""

    joint: str
    cm: float
    direction: str
    frame: int
    moment: str

    def to_dict(self) -> dict:
        return {"joint": self.joint, "cm": self.cm, "direction": self.direction,
                "frame": self.frame, "moment": self.moment}


AMOUNT = "about {cm} cm {moment}"
AMOUNT_MORE = "about {cm} cm more {moment}"


@dataclass(frozen=True)
class Cue:
    """A coach's cue for one mistake: the joints it is about, the words, and how much and when
    (with {cm}/{moment}), which a repetition without a correction leaves out."""

    joints: tuple[str, ...]
    text: str
    amount: str = AMOUNT


_FEET = ("l_ankle", "r_ankle", "l_heel", "r_heel", "l_big_toe", "r_big_toe")
_KNEES = ("l_knee", "r_knee")
_UPPER = ("nose", "neck", "l_shoulder", "r_shoulder")
_PLANK_LINE = ("neck", "l_shoulder", "r_shoulder", "l_knee", "r_knee", "l_ankle", "r_ankle")

CUES: dict[str, Cue] = {
    "feet_too_wide": Cue(_FEET, "feet too wide: bring them in to shoulder width"),
    "knees_inward": Cue(_KNEES, "knees drift inward: push them out over your toes"),
    "not_low_enough": Cue(
        _KNEES + _FEET[:2], "not low enough: sit deeper, thighs level with your knees",
        AMOUNT_MORE,
    ),
    "front_bent": Cue(_UPPER, "chest falls forward: keep your chest up and back straight"),
    "knee_passes_toe": Cue(_KNEES, "front knee passes your toes: keep it above your ankle"),
    "arched_back": Cue(
        _PLANK_LINE,
        "hips sag: brace your core and lift your hips into one line with shoulders and heels",
    ),
    "hunched_back": Cue(
        _PLANK_LINE, "back rounds, hips pike up: lower your hips and flatten your back"
    ),
}
GOOD_CUE = "good repetition: keep it up"
GENERIC_CUE = "{mistake}: move your {joint} {direction}"
UNSURE_PREFIX = "not sure, possibly "


def joint_words(joint: str) -> str:
    """'l_big_toe' -> 'left big toe'."""
    side = {"l": "left", "r": "right"}
    head, _, rest = joint.partition("_")
    words = [side[head], *rest.split("_")] if head in side and rest else joint.split("_")
    return " ".join(words)


def direction_words(vec: Iterable[float], joint: str) -> str:
    """A displacement (x forward, y left, z up) in body terms; in/out mirrored for left/right."""
    x, y, z = map(float, vec)
    if joint.startswith("l_"):
        lateral = "outward" if y > 0 else "inward"
    elif joint.startswith("r_"):
        lateral = "outward" if y < 0 else "inward"
    else:
        lateral = "to the left" if y > 0 else "to the right"
    parts = [
        (abs(x), "forward" if x > 0 else "back"),
        (abs(y), lateral),
        (abs(z), "up" if z > 0 else "down"),
    ]
    biggest = max(p[0] for p in parts)
    if biggest == 0:
        return "nowhere"
    words = [w for size, w in parts if size >= SECONDARY_SHARE * biggest]
    return " and ".join([", ".join(words[:-1]), words[-1]] if len(words) > 1 else words)


def moment_words(frame: int, n_frames: int, bottom: int | None, exercise: str,
                 fps: float, sustained: bool = False) -> str:
    """When in the repetition `frame` falls: for squats and lunges start, way down, bottom, way
    up, end; for planks the time into the hold; for other exercises the movement's phase (early,
    midway, late); "throughout" for a displacement `sustained` over most of the repetition."""
    if sustained:
        return "throughout the hold" if exercise == "plank" else "throughout the repetition"
    if exercise == "plank":
        return f"{frame / fps:.1f} s into the hold"
    if exercise not in SQUATTING:
        return PHASES[min(len(PHASES) - 1, len(PHASES) * frame // max(1, n_frames))]
    if bottom is None:
        return "throughout"
    if abs(frame - bottom) <= BOTTOM_WINDOW * n_frames:
        return "at the bottom"
    if frame < EDGE_WINDOW * n_frames:
        return "at the start"
    if frame >= (1 - EDGE_WINDOW) * n_frames:
        return "at the end"
    return "on the way down" if frame < bottom else "on the way up"


def joint_deviations(original: np.ndarray, corrected: np.ndarray, skeleton: Skeleton,
                     exercise: str, fps: float, scale: float = 1.0, top: int = TOP_JOINTS,
                     include: tuple[str, ...] = ()) -> list[Deviation]:
    """The `top` joints the correction moves most, largest first, plus the one of `include`
    that moves most when it is not among them. Both arrays normalised, same length."""
    return many_joint_deviations([original], [corrected], skeleton, [exercise], fps, [scale],
                                 [include], top)[0]


def many_joint_deviations(originals: list[np.ndarray], correcteds: list[np.ndarray],
                          skeleton: Skeleton, exercises: list[str], fps: float,
                          scales: list[float], includes: list[tuple[str, ...]],
                          top: int = TOP_JOINTS) -> list[list[Deviation]]:
    """joint_deviations of many repetitions: the arithmetic over all their frames at once
    (frames of every repetition one after another, reduced per repetition), the words one
    repetition at a time."""
    if not originals:
        return []
    lengths = np.array([len(o) for o in originals])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    original = np.concatenate(originals)
    disp = np.concatenate(correcteds) - original
    size = np.sqrt(np.einsum("tjc,tjc->tj", disp, disp))
    peak = np.maximum.reduceat(size, starts, axis=0)
    at_peak = np.repeat(peak, lengths, axis=0)
    frames = _first(size == at_peak, starts) - starts[:, None]
    held = np.add.reduceat(size >= SUSTAINED * at_peak, starts, axis=0, dtype=np.intp)
    # per repetition and joint: the displacement at the peak, centimetres, whether it is held
    vectors = disp[starts[:, None] + frames, np.arange(size.shape[1])].tolist()
    cms = (peak * np.asarray(scales, np.float32)[:, None] * np.float32(100.0)).tolist()
    steady = (held / lengths[:, None] >= 0.5).tolist()
    orders = np.argsort(-peak, axis=1, kind="stable").tolist()
    bottoms = _bottom_frames(original, starts, skeleton)
    out = []
    for k, (order, peak_frames) in enumerate(zip(orders, frames.tolist(), strict=True)):
        chosen = order[:top]
        wanted = next((j for j in order if skeleton.joints[j] in includes[k]), None)
        if wanted is not None and wanted not in chosen:
            chosen.append(wanted)
        exercise = exercises[k]
        bottom = None if exercise == "plank" else bottoms[k]
        out.append([
            Deviation(
                joint=skeleton.joints[j],
                cm=cms[k][j],
                direction=direction_words(vectors[k][j], skeleton.joints[j]),
                frame=peak_frames[j],
                moment=moment_words(peak_frames[j], int(lengths[k]), bottom, exercise, fps,
                                    sustained=steady[k][j]),
            )
            for j in chosen
        ])
    return out


def _first(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index of the first True of each column in each run of rows starting at `starts`."""
    rows = np.arange(len(mask)).reshape(-1, *([1] * (mask.ndim - 1)))
    return np.minimum.reduceat(np.where(mask, rows, len(mask)), starts, axis=0)


def _bottom_frames(poses: np.ndarray, starts: np.ndarray, skeleton: Skeleton) -> list[int | None]:
    """The deepest frame of each repetition of a squat or lunge (ankles highest relative to the
    hips), None where the ankles move less than MIN_DEPTH_M; poses of all one after another."""
    height = (poses[:, skeleton.index("l_ankle"), 2] + poses[:, skeleton.index("r_ankle"), 2]) / 2
    highest = np.maximum.reduceat(height, starts)
    depth = highest - np.minimum.reduceat(height, starts)
    deepest = _first(height == np.repeat(highest, np.diff(starts, append=len(height))), starts)
    return [None if d < MIN_DEPTH_M else int(f - s)
            for d, f, s in zip(depth.tolist(), deepest.tolist(), starts.tolist(), strict=True)]


def cue_joints(label: str) -> tuple[str, ...]:
    """The joints the cue for `label` is about (none for labels without a written cue)."""
    cue = CUES.get(label)
    return cue.joints if cue else ()


def implausible(deviations: list[Deviation]) -> Deviation | None:
    """The first deviation larger than a body could move (PLAUSIBLE_CM), None if none is: a
    correction that moves a joint that far is broken, and its numbers mean nothing."""
    return next((d for d in deviations if not d.cm <= PLAUSIBLE_CM), None)


def coach_cue(label: str, deviations: list[Deviation], unsure: bool = False) -> str:
    """One short cue for a predicted mistake, sized by the deviations of the joints it concerns;
    without deviations (no correction to size it by) the mistake's words alone."""
    prefix = UNSURE_PREFIX if unsure else ""
    if label == CORRECT:
        return prefix + GOOD_CUE
    cue = CUES.get(label)
    if not deviations:
        return prefix + (cue.text if cue else label.replace("_", " "))
    concerned = [d for d in deviations if cue is None or d.joint in cue.joints] or deviations
    top = concerned[0]
    amount = (cue.amount if cue else AMOUNT).format(cm=max(1, round(top.cm)), moment=top.moment)
    if cue is None:
        text = GENERIC_CUE.format(mistake=label.replace("_", " "), joint=joint_words(top.joint),
                                  direction=top.direction)
    else:
        text = cue.text
    return f"{prefix}{text}, {amount}"
