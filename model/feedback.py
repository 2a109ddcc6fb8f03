"""Feedback in words: from a classification and a correction to what a coach would say.

Everything here works on the model's normalised frame (DESIGN.md): the body faces +x, its left
is +y, up is +z, every frame centred on the mid-hip. A displacement is corrected minus original,
given back in real centimetres by multiplying with the body scale that normalisation divided by.
A displacement held at 80 % of its peak or more over at least half the frames is said to happen
"throughout" the repetition (or hold); otherwise at the moment of its peak.

"Unsure": a prediction whose confidence is below a threshold chosen on the training data by
`unsure_threshold` — the highest confidence at or below which the training-set predictions are
mostly (more than half) wrong, and never below `UNSURE_FLOOR` (a prediction the model itself gives
less than even odds). model.scoring.calibrate (called by the fold) chooses it and stores
it in the saved model (TrainedModel.unsure_threshold, "unsure_threshold" in model.json); a
model without one uses the floor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from model.settings import CORRECT
from model.skeletons import Skeleton

UNSURE_FLOOR = 0.5
TOP_JOINTS = 3
SECONDARY_SHARE = 0.5
BOTTOM_WINDOW = 0.15
EDGE_WINDOW = 0.1
MIN_DEPTH_M = 0.05
SUSTAINED = 0.8


@dataclass(frozen=True)
class Deviation:
    """How far the correction moves one joint, at the frame where it moves it most."""

    joint: str
    cm: float
    direction: str
    frame: int
    moment: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Cue:
    """A coach's cue for one mistake: the joints it is about and the words, with {cm}/{moment}."""

    joints: tuple[str, ...]
    text: str


_FEET = ("l_ankle", "r_ankle", "l_heel", "r_heel", "l_big_toe", "r_big_toe")
_KNEES = ("l_knee", "r_knee")
_UPPER = ("nose", "neck", "l_shoulder", "r_shoulder")
_PLANK_LINE = ("neck", "l_shoulder", "r_shoulder", "l_knee", "r_knee", "l_ankle", "r_ankle")

CUES: dict[str, Cue] = {
    "feet_too_wide": Cue(
        _FEET, "feet too wide: bring them in to shoulder width, about {cm} cm {moment}"
    ),
    "knees_inward": Cue(
        _KNEES, "knees drift inward: push them out over your toes, about {cm} cm {moment}"
    ),
    "not_low_enough": Cue(
        _KNEES + _FEET[:2],
        "not low enough: sit deeper, thighs level with your knees, about {cm} cm more {moment}",
    ),
    "front_bent": Cue(
        _UPPER, "chest falls forward: keep your chest up and back straight, about {cm} cm {moment}"
    ),
    "knee_passes_toe": Cue(
        _KNEES, "front knee passes your toes: keep it above your ankle, about {cm} cm {moment}"
    ),
    "arched_back": Cue(
        _PLANK_LINE,
        "hips sag: brace your core and lift your hips into one line with shoulders and heels, "
        "about {cm} cm {moment}",
    ),
    "hunched_back": Cue(
        _PLANK_LINE,
        "back rounds, hips pike up: lower your hips and flatten your back, about {cm} cm {moment}",
    ),
}
GOOD_CUE = "good repetition: keep it up"
GENERIC_CUE = "{mistake}: move your {joint} {direction}, about {cm} cm {moment}"
UNSURE_PREFIX = "not sure, possibly "


def joint_words(joint: str) -> str:
    """'l_big_toe' -> 'left big toe'."""
    side = {"l": "left", "r": "right"}
    head, _, rest = joint.partition("_")
    words = [side[head], *rest.split("_")] if head in side and rest else joint.split("_")
    return " ".join(words)


def direction_words(vec: np.ndarray, joint: str) -> str:
    """A displacement (x forward, y left, z up) in body terms; in/out mirrored for left/right."""
    x, y, z = vec.tolist()
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


def bottom_frame(poses: np.ndarray, exercise: str, skeleton: Skeleton) -> int | None:
    """The deepest frame of a squat or lunge (ankles highest relative to the hips), else None."""
    if exercise == "plank":
        return None
    height = (poses[:, skeleton.index("l_ankle"), 2] + poses[:, skeleton.index("r_ankle"), 2]) / 2
    if float(height.max() - height.min()) < MIN_DEPTH_M:
        return None
    return int(np.argmax(height))


def moment_words(frame: int, n_frames: int, bottom: int | None, exercise: str,
                 fps: float, sustained: bool = False) -> str:
    """When in the repetition `frame` falls: start, way down, bottom, way up, end (or a time);
    "throughout" for a displacement `sustained` over most of the repetition."""
    if sustained:
        return "throughout the hold" if exercise == "plank" else "throughout the repetition"
    if exercise == "plank":
        return f"{frame / fps:.1f} s into the hold"
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
    disp = corrected - original
    size = np.sqrt(np.einsum("tjc,tjc->tj", disp, disp))
    frames = size.argmax(axis=0)
    peak = size.max(axis=0)
    order = np.argsort(-peak, kind="stable").tolist()
    chosen = order[:top]
    wanted = next((j for j in order if skeleton.joints[j] in include), None)
    if wanted is not None and wanted not in chosen:
        chosen.append(wanted)
    held = np.count_nonzero(size[:, chosen] >= SUSTAINED * peak[chosen], axis=0)
    sustained = (held / size.shape[0] >= 0.5).tolist()
    bottom = bottom_frame(original, exercise, skeleton)
    out = []
    for j, f, cm, steady in zip(chosen, frames[chosen].tolist(),
                                (peak[chosen] * scale * 100.0).tolist(), sustained, strict=True):
        name = skeleton.joints[j]
        out.append(Deviation(
            joint=name,
            cm=cm,
            direction=direction_words(disp[f, j], name),
            frame=f,
            moment=moment_words(f, original.shape[0], bottom, exercise, fps, sustained=steady),
        ))
    return out


def cue_joints(label: str) -> tuple[str, ...]:
    """The joints the cue for `label` is about (none for labels without a written cue)."""
    cue = CUES.get(label)
    return cue.joints if cue else ()


def coach_cue(label: str, deviations: list[Deviation], unsure: bool = False) -> str:
    """One short cue for a predicted mistake, sized by the deviations of the joints it concerns."""
    prefix = UNSURE_PREFIX if unsure else ""
    if label == CORRECT:
        return prefix + GOOD_CUE
    cue = CUES.get(label)
    concerned = [d for d in deviations if cue is None or d.joint in cue.joints] or deviations
    top = concerned[0]
    cm = max(1, round(top.cm))
    if cue is None:
        text = GENERIC_CUE.format(mistake=label.replace("_", " "), joint=joint_words(top.joint),
                                  direction=top.direction, cm=cm, moment=top.moment)
    else:
        text = cue.text.format(cm=cm, moment=top.moment)
    return prefix + text


def unsure_threshold(confidence: np.ndarray, correct: np.ndarray,
                     floor: float = UNSURE_FLOOR) -> float:
    """The confidence below which training predictions are mostly wrong (at least `floor`).

    Sorting predictions by confidence, the threshold sits just above the highest confidence at
    or below which more than half of them are wrong.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError("confidence and correct must be 1-D arrays of the same length")
    if confidence.size == 0:
        return floor
    order = np.argsort(confidence, kind="stable")
    conf = confidence[order]
    wrong_share = np.cumsum(~correct[order]) / np.arange(1, conf.size + 1)
    mostly_wrong = np.flatnonzero(wrong_share > 0.5)
    if mostly_wrong.size == 0:
        return floor
    k = int(mostly_wrong[-1])
    above = conf[k + 1] if k + 1 < conf.size else min(1.0, conf[k] + 1e-6)
    return float(max(floor, (conf[k] + above) / 2))
