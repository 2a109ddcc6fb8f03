"""Synthetic EC3D-like exercise data: squats, lunges and planks with EC3D's mistakes.

A small kinematic body (segment lengths from a height of 1.5-2.0 m) moves through a repetition
whose shape depends on the subject's style (tempo, depth, trunk lean, stance, toe-out, arms) and
on the mistake (its size drawn per repetition, down to borderline cases that look nearly
correct). Subjects differ only within the range of correct form, and a mistake always lies
beyond the far edge of that range, whoever makes it: a correct repetition of one subject never
looks like another subject's mistake. Legs are solved by two-link inverse kinematics between
ankle and hip, the trunk and arms by angles. Joints then jitter like triangulated OpenPose
(1-3 cm), a few frames lose joints (NaN), and every repetition is turned to a random heading and
moved to a random place on the floor (z up, metres). Everything is deterministic from the seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from model.data.formats import write_session
from model.data.labels import EC3D_EXERCISES, EC3D_LABEL_NAMES, EC3D_LABELS
from model.data.normalize import UP_ROTATIONS
from model.data.sequence import Sequence
from model.data.skeletons import EC3D_JOINTS, get_skeleton
from model.settings import CORRECT

CANONICAL = "ec3d19"
SYNTH_FPS = 30.0
MIN_REP_S, MAX_REP_S = 1.5, 4.0
_J = {name: i for i, name in enumerate(EC3D_JOINTS)}

# Correct form: the range subjects' styles are drawn from, and each repetition's wobble about
# its subject's style (clipped at 3 sigma).
STANCE = (1.3, 1.9)  # ankles apart, in hip half-widths
TOE_OUT_DEG = (5.0, 25.0)
KNEE_OUT = (0.0, 0.4)  # knees pushed out past the toe line (pole of the knee)
KNEE_GAIN = 0.3  # how far knee_out turns the knee's pole sideways
LEAN_DEG = (15.0, 40.0)  # trunk lean at the bottom of a squat
DEPTH = (0.36, 0.48)  # squat: hips drop, in leg lengths
LUNGE_DEPTH = (0.28, 0.36)  # lunge: hips drop, in leg lengths
KNEE_FORWARD = (-0.03, 0.05)  # lunge: hips forward at the bottom, in leg lengths (per repetition)
PLANK_OFFSET = (-0.03, 0.04)  # plank: hips off the ankle-shoulder line, metres (+ hunched)
WOBBLE = 0.04  # relative (knee_out: absolute)
PLANK_WOBBLE = 0.01  # metres
_W = 3 * WOBBLE


def exercise_labels(exercise: str) -> tuple[str, ...]:
    """The labels the generator makes for an exercise: EC3D's, without "unknown"."""
    return tuple(EC3D_LABEL_NAMES[i] for i in EC3D_LABELS[exercise] if i != 10)


@dataclass(frozen=True)
class Body:
    """Segment lengths in metres."""

    height: float
    hip_half: float
    thigh: float
    shank: float
    ankle_h: float
    foot: float
    heel: float
    torso: float
    shoulder_half: float
    upper_arm: float
    forearm: float
    head: float

    @property
    def leg(self) -> float:
        return self.thigh + self.shank

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Body:
        h = rng.uniform(1.5, 2.0)

        def part(fraction: float) -> float:
            return float(fraction * h * rng.uniform(0.93, 1.07))

        return cls(
            height=float(h), hip_half=part(0.055), thigh=part(0.245), shank=part(0.246),
            ankle_h=part(0.039), foot=part(0.12), heel=part(0.035), torso=part(0.29),
            shoulder_half=part(0.10), upper_arm=part(0.186), forearm=part(0.146),
            head=part(0.10),
        )  # fmt: skip


@dataclass(frozen=True)
class Style:
    """How one subject moves when doing it right."""

    tempo_s: float
    stance: float
    toe_out: float
    lean: float
    depth: float
    hip_back: float
    knee_out: float
    arm_reach: float
    hold: float
    step: float
    lunge_depth: float
    plank_offset: float
    noise: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Style:
        return cls(
            tempo_s=rng.uniform(1.8, 3.4), stance=rng.uniform(*STANCE),
            toe_out=np.radians(rng.uniform(*TOE_OUT_DEG)),
            lean=np.radians(rng.uniform(*LEAN_DEG)),
            depth=rng.uniform(*DEPTH), hip_back=rng.uniform(0.15, 0.3),
            knee_out=rng.uniform(*KNEE_OUT), arm_reach=np.radians(rng.uniform(40, 95)),
            hold=rng.uniform(0.0, 0.25), step=rng.uniform(0.85, 1.15),
            lunge_depth=rng.uniform(*LUNGE_DEPTH), plank_offset=rng.uniform(*PLANK_OFFSET),
            noise=rng.uniform(0.006, 0.017),
        )  # fmt: skip


@dataclass(frozen=True)
class Subject:
    name: str
    body: Body
    style: Style

    @classmethod
    def make(cls, name: str, seed: int = 0) -> Subject:
        """The same name and seed always give the same person."""
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        return cls(name, Body.sample(rng), Style.sample(rng))


@dataclass(frozen=True)
class Form:
    """What one repetition does: the style with its mistake applied (all scalars)."""

    stance: float
    knee_line: float  # sideways part of the knees' pole: toe-out plus knees pushed out
    depth: float
    lean: float
    lunge_depth: float
    knee_forward: float
    plank_offset: float
    front_left: float


@dataclass(frozen=True)
class Mistake:
    """A mistake moves one Form value to `edge + size * m` for a severity m in [0.1, 1]: `edge`
    is the far end of that value over every subject's correct repetitions, so even a borderline
    mistake lies just outside what any subject does right."""

    field: str
    edge: float
    size: float


MISTAKES: dict[tuple[str, str], Mistake] = {
    ("squat", "feet_too_wide"): Mistake("stance", STANCE[1] * (1 + _W), 1.7),
    ("squat", "knees_inward"): Mistake(
        "knee_line", np.tan(np.radians(TOE_OUT_DEG[0])) + KNEE_GAIN * (KNEE_OUT[0] - _W), -0.6),
    ("squat", "not_low_enough"): Mistake("depth", DEPTH[0] * (1 - _W), -0.19),
    ("squat", "front_bent"): Mistake("lean", np.radians(LEAN_DEG[1]) * (1 + _W), np.radians(36)),
    ("lunge", "not_low_enough"): Mistake("lunge_depth", LUNGE_DEPTH[0] * (1 - _W), -0.14),
    ("lunge", "knee_passes_toe"): Mistake("knee_forward", KNEE_FORWARD[1], 0.28),
    ("plank", "arched_back"): Mistake("plank_offset", PLANK_OFFSET[0] - 3 * PLANK_WOBBLE, -0.14),
    ("plank", "hunched_back"): Mistake("plank_offset", PLANK_OFFSET[1] + 3 * PLANK_WOBBLE, 0.18),
}


def severity(rng: np.random.Generator) -> float:
    """Size of a mistake in [0.1, 1]: mostly clear, a tail of borderline ones."""
    return float(np.clip(rng.beta(1.6, 1.3) * 0.95 + 0.08, 0.1, 1.0))


def make_form(exercise: str, label: str, style: Style, rng: np.random.Generator) -> Form:
    """The style of a subject, wobbling per repetition, with the mistake `label` at a random
    size."""
    if label != CORRECT and (exercise, label) not in MISTAKES:
        raise ValueError(f"the generator has no {exercise!r} mistake {label!r}")
    m = severity(rng) if label != CORRECT else 0.0
    wobble = np.clip(rng.normal(0.0, WOBBLE, size=4), -_W, _W)
    form = Form(
        stance=style.stance * (1 + wobble[0]),
        knee_line=np.tan(style.toe_out) + KNEE_GAIN * (style.knee_out + wobble[1]),
        depth=style.depth * (1 + wobble[2]),
        lean=style.lean * (1 + wobble[3]),
        lunge_depth=style.lunge_depth * (1 + wobble[2]),
        knee_forward=rng.uniform(*KNEE_FORWARD),
        plank_offset=style.plank_offset + np.clip(rng.normal(0.0, PLANK_WOBBLE),
                                                  -3 * PLANK_WOBBLE, 3 * PLANK_WOBBLE),
        front_left=float(rng.random() < 0.5),
    )
    if label == CORRECT:
        return form
    mistake = MISTAKES[(exercise, label)]
    return replace(form, **{mistake.field: mistake.edge + mistake.size * m})


def phase(n: int, hold: float, rng: np.random.Generator) -> np.ndarray:
    """Depth over one repetition, 0 standing -> 1 bottom -> 0, with a pause at the bottom."""
    u = np.linspace(0.0, 1.0, n)
    move = 1.0 - hold
    down = move * rng.uniform(0.4, 0.6)
    up_start = down + hold
    s = np.ones(n)
    s[u < down] = 0.5 - 0.5 * np.cos(np.pi * u[u < down] / down)
    after = u > up_start
    s[after] = 0.5 + 0.5 * np.cos(np.pi * (u[after] - up_start) / (1.0 - up_start))
    return s


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def two_link(ankle: np.ndarray, hip: np.ndarray, shank: float, thigh: float,
             pole: np.ndarray) -> np.ndarray:
    """Knee positions between ankle and hip (n, 3), bent towards `pole` (n, 3)."""
    axis = hip - ankle
    d = np.clip(np.linalg.norm(axis, axis=-1, keepdims=True), abs(thigh - shank) + 1e-3,
                (thigh + shank) * 0.999)
    u = _unit(axis)
    along = (shank**2 - thigh**2 + d**2) / (2 * d)
    up = np.sqrt(np.maximum(shank**2 - along**2, 0.0))
    perp = _unit(pole - (pole * u).sum(-1, keepdims=True) * u)
    return ankle + along * u + up * perp


def _vec(x, y, z, n: int) -> np.ndarray:
    return np.stack(np.broadcast_arrays(*(np.asarray(c, float) for c in (x, y, z)),
                                        np.zeros(n))[:3], axis=-1)


def _arms(out: np.ndarray, body: Body, elevation: np.ndarray, lean: np.ndarray) -> None:
    """Elbows and wrists from the shoulders, both arms raised forward by `elevation`."""
    n = elevation.shape[0]
    for side in ("l", "r"):
        sh = out[:, _J[f"{side}_shoulder"]]
        upper = _vec(np.sin(elevation), 0.0, -np.cos(elevation), n)
        fore = _vec(np.sin(elevation + 0.3 + 0.2 * lean), 0.0, -np.cos(elevation + 0.3), n)
        out[:, _J[f"{side}_elbow"]] = sh + body.upper_arm * upper
        out[:, _J[f"{side}_wrist"]] = out[:, _J[f"{side}_elbow"]] + body.forearm * _unit(fore)


def _upper_body(out: np.ndarray, body: Body, mid_hip: np.ndarray, lean: np.ndarray) -> None:
    n = lean.shape[0]
    neck = mid_hip + body.torso * _vec(np.sin(lean), 0.0, np.cos(lean), n)
    out[:, _J["neck"]] = neck
    head = lean * 0.5
    out[:, _J["nose"]] = neck + body.head * _vec(np.sin(head) + 0.35 * np.cos(head), 0.0,
                                                 np.cos(head) - 0.35 * np.sin(head), n)
    for side, sign in (("l", 1.0), ("r", -1.0)):
        out[:, _J[f"{side}_shoulder"]] = neck + _vec(0.0, sign * body.shoulder_half, -0.02, n)


def _feet(out: np.ndarray, body: Body, toe_out: float, raised: dict[str, np.ndarray]) -> None:
    """Big toes and heels from the ankles; a raised foot (lunge back foot) stands on its toes."""
    n = out.shape[0]
    for side, sign in (("l", 1.0), ("r", -1.0)):
        ankle = out[:, _J[f"{side}_ankle"]]
        lift = raised.get(side, np.zeros(n))
        toe_dir = _vec(np.cos(toe_out) * np.cos(lift), sign * np.sin(toe_out), -np.sin(lift), n)
        out[:, _J[f"{side}_big_toe"]] = ankle + body.foot * toe_dir - _vec(0, 0, body.ankle_h *
                                                                           0.6 * np.cos(lift), n)
        out[:, _J[f"{side}_heel"]] = ankle - body.heel * toe_dir - _vec(0, 0, body.ankle_h *
                                                                        0.7 * np.cos(lift), n)


def squat_poses(s: np.ndarray, f: dict[str, np.ndarray], body: Body, style: Style) -> np.ndarray:
    n = s.shape[0]
    out = np.zeros((n, len(EC3D_JOINTS), 3))
    stand = body.ankle_h + 0.98 * body.leg
    mid_hip = _vec(-style.hip_back * body.leg * s, 0.0, stand - f["depth"] * body.leg * s, n)
    out[:, _J["mid_hip"]] = mid_hip
    for side, sign in (("l", 1.0), ("r", -1.0)):
        hip = mid_hip + _vec(0.0, sign * body.hip_half, 0.0, n)
        ankle = _vec(0.0, sign * body.hip_half * f["stance"], body.ankle_h, n)
        pole = _vec(1.0, sign * f["knee_line"], 0.0, n)
        out[:, _J[f"{side}_hip"]] = hip
        out[:, _J[f"{side}_ankle"]] = ankle
        out[:, _J[f"{side}_knee"]] = two_link(ankle, hip, body.shank, body.thigh, pole)
    lean = f["lean"] * s
    _upper_body(out, body, mid_hip, lean)
    _arms(out, body, np.radians(8) + style.arm_reach * s, lean)
    _feet(out, body, style.toe_out, {})
    return out


def lunge_poses(s: np.ndarray, f: dict[str, np.ndarray], body: Body, style: Style) -> np.ndarray:
    n = s.shape[0]
    out = np.zeros((n, len(EC3D_JOINTS), 3))
    half_step = 0.5 * style.step * body.leg * 0.8
    top = body.ankle_h + np.sqrt((0.97 * body.leg) ** 2 - half_step**2)
    front_sign = np.where(f["front_left"] > 0.5, 1.0, -1.0)
    mid_hip = _vec(f["knee_forward"] * body.leg * s, 0.0, top - f["lunge_depth"] * body.leg * s, n)
    out[:, _J["mid_hip"]] = mid_hip
    raised = {}
    for side, sign in (("l", 1.0), ("r", -1.0)):
        front = (front_sign == sign).astype(float)
        hip = mid_hip + _vec(0.0, sign * body.hip_half, 0.0, n)
        lift = (1 - front) * np.radians(25 + 20 * s)
        ankle = _vec(half_step * (2 * front - 1), sign * body.hip_half * 0.9,
                     body.ankle_h + (1 - front) * body.foot * np.sin(lift), n)
        pole = _vec(1.0, sign * 0.1, -(1 - front) * 0.3, n)
        out[:, _J[f"{side}_hip"]] = hip
        out[:, _J[f"{side}_ankle"]] = ankle
        out[:, _J[f"{side}_knee"]] = two_link(ankle, hip, body.shank, body.thigh, pole)
        raised[side] = lift
    lean = 0.25 * f["lean"] * s
    _upper_body(out, body, mid_hip, lean)
    _arms(out, body, np.radians(10) + 0.2 * style.arm_reach * s, lean)
    _feet(out, body, style.toe_out * 0.5, raised)
    return out


def plank_poses(s: np.ndarray, f: dict[str, np.ndarray], body: Body, style: Style) -> np.ndarray:
    """A forearm plank held still (s only adds breathing); the hips sit off the body line."""
    n = s.shape[0]
    out = np.zeros((n, len(EC3D_JOINTS), 3))
    sh_z = body.upper_arm + 0.04
    span = body.leg + body.torso
    neck_x = np.sqrt(span**2 - (sh_z - body.ankle_h) ** 2)
    ankle_mid = _vec(0.0, 0.0, body.ankle_h, n)
    neck = _vec(neck_x, 0.0, sh_z, n)
    line = _unit(neck - ankle_mid)
    normal = _vec(-line[:, 2], 0.0, line[:, 0], n)
    breath = 0.006 * np.sin(2 * np.pi * np.arange(n) / (SYNTH_FPS * 2.7))
    offset = (f["plank_offset"] * (0.85 + 0.15 * s) + breath)[:, None]
    mid_hip = ankle_mid + body.leg / span * (neck - ankle_mid) + offset * normal
    out[:, _J["mid_hip"]] = mid_hip
    out[:, _J["neck"]] = neck
    out[:, _J["nose"]] = neck + body.head * _unit(0.6 * line - 0.8 * normal)
    for side, sign in (("l", 1.0), ("r", -1.0)):
        lateral = _vec(0.0, sign * 1.0, 0.0, n)
        hip = mid_hip + body.hip_half * lateral
        ankle = ankle_mid + body.hip_half * 0.8 * lateral
        out[:, _J[f"{side}_hip"]] = hip
        out[:, _J[f"{side}_ankle"]] = ankle
        out[:, _J[f"{side}_knee"]] = (ankle + body.shank / body.leg * (hip - ankle)
                                      + 0.3 * offset * normal)
        shoulder = neck + body.shoulder_half * lateral
        out[:, _J[f"{side}_shoulder"]] = shoulder
        out[:, _J[f"{side}_elbow"]] = shoulder * [1, 0.9, 0] + _vec(0, 0, 0.03, n)
        out[:, _J[f"{side}_wrist"]] = _vec(neck_x + body.forearm * 0.95, sign * 0.06, 0.03, n)
        out[:, _J[f"{side}_big_toe"]] = ankle + _vec(0.03, 0.0, -body.ankle_h + 0.01, n)
        out[:, _J[f"{side}_heel"]] = ankle + _vec(-0.05, 0.0, body.ankle_h * 0.8, n)
    return out


_POSES = {"squat": squat_poses, "lunge": lunge_poses, "plank": plank_poses}


def _form_arrays(forms: list[Form], weights: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame form values: the mix of `forms` given per-frame weights (frames, forms)."""
    keys = Form.__dataclass_fields__
    table = np.array([[getattr(f, k) for k in keys] for f in forms])
    mixed = weights @ table
    return {k: mixed[:, i] for i, k in enumerate(keys)}


def place(poses: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Turn to a random heading and move to a random place on the floor."""
    a = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return poses @ rot.T + np.array([rng.uniform(-2, 2), rng.uniform(-2, 2), 0.0])


def sensor_noise(poses: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Triangulation jitter (per-coordinate sigma) and, now and then, a few lost joints (NaN)."""
    out = poses + rng.normal(0.0, sigma, size=poses.shape)
    if rng.random() < 0.3:
        n_frames = int(rng.integers(1, 5))
        frames = rng.choice(poses.shape[0], size=min(n_frames, poses.shape[0]), replace=False)
        joints = rng.choice(poses.shape[1], size=int(rng.integers(1, 3)), replace=False)
        out[np.ix_(frames, joints)] = np.nan
    return out


def rep_frames(style: Style, fps: float, rng: np.random.Generator) -> int:
    seconds = np.clip(style.tempo_s * rng.uniform(0.8, 1.2), MIN_REP_S, MAX_REP_S)
    return int(round(seconds * fps))


def make_rep(subject: Subject, exercise: str, label: str, rng: np.random.Generator,
             fps: float = SYNTH_FPS) -> np.ndarray:
    """One repetition in ec3d19 world coordinates (frames, 19, 3), float32, with noise."""
    form = make_form(exercise, label, subject.style, rng)
    n = rep_frames(subject.style, fps, rng)
    s = phase(n, subject.style.hold, rng)
    clean = _POSES[exercise](s, _form_arrays([form], np.ones((n, 1))), subject.body,
                             subject.style)
    sigma = subject.style.noise * rng.uniform(0.8, 1.2)
    return sensor_noise(place(clean, rng), sigma, rng).astype(np.float32)


def make_dataset(n_subjects: int = 4, reps: int = 8, seed: int = 0,
                 exercises: Iterable[str] = EC3D_EXERCISES) -> list[Sequence]:
    """`reps` repetitions of every (subject, exercise, label); subjects "s1".."sN"."""
    seqs = []
    for k in range(1, n_subjects + 1):
        subject = Subject.make(f"s{k}", seed)
        for exercise in exercises:
            for label in exercise_labels(exercise):
                for rep in range(1, reps + 1):
                    key = f"{exercise}/{label}"
                    rng = np.random.default_rng([seed, k, zlib.crc32(key.encode()), rep])
                    seqs.append(Sequence(
                        poses=make_rep(subject, exercise, label, rng), subject=subject.name,
                        exercise=exercise, skeleton=CANONICAL, fps=SYNTH_FPS, label=label,
                        rep=rep, source=f"synth:seed={seed}/{subject.name}/{key}/{rep}",
                        units="m",
                    ))  # fmt: skip
    return seqs


def _session_phase(
    subject: Subject, exercise: str, n_reps: int, fps: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Depth over a whole session, the repetition each frame belongs to, and the boundaries."""
    hold = exercise == "plank"
    parts, owner, bounds, t = [], [], [], 0
    for i in range(n_reps):
        pause = 0 if hold else int(round(rng.uniform(0.5, 2.0) * fps))
        if pause:
            parts.append(np.zeros(pause))
            owner.append(np.full(pause, float(i)))
            t += pause
        n = rep_frames(subject.style, fps, rng)
        parts.append(np.ones(n) if hold else phase(n, subject.style.hold, rng))
        owner.append(np.full(n, float(i)))
        bounds.append((t, t + n))
        t += n
    tail = 0 if hold else int(round(rng.uniform(0.5, 1.5) * fps))
    parts.append(np.zeros(tail))
    owner.append(np.full(tail, float(n_reps - 1)))
    return np.concatenate(parts), np.concatenate(owner), bounds


def _blend(owner: np.ndarray, n_reps: int, frames: int) -> np.ndarray:
    """Per-frame weights of each repetition's form, ramping over `frames` between them."""
    onehot = np.eye(n_reps)[owner.astype(int)]
    if frames < 2:
        return onehot
    kernel = np.ones(frames) / frames
    smooth = np.stack([np.convolve(np.pad(c, frames, mode="edge"), kernel, "same")[frames:-frames]
                       for c in onehot.T], axis=1)
    return smooth / smooth.sum(axis=1, keepdims=True)


def make_session(subject: str, exercise: str, labels: list[str], seed: int = 0,
                 fps: float = SYNTH_FPS, skeleton: str = CANONICAL,
                 ) -> tuple[Sequence, list[tuple[int, int]]]:
    """A continuous recording of len(labels) repetitions with pauses (a plank: one hold).

    Returns the session (label None; meta holds the per-repetition labels and boundaries) and
    the known (start, end) frame of each repetition, end exclusive.
    """
    if not labels:
        raise ValueError("a session needs at least one repetition label")
    person = Subject.make(subject, seed)
    rng = np.random.default_rng([seed, zlib.crc32(f"session/{subject}/{exercise}".encode()),
                                 len(labels)])
    forms = [make_form(exercise, label, person.style, rng) for label in labels]
    forms = [replace(f, front_left=forms[0].front_left) for f in forms]
    s, owner, bounds = _session_phase(person, exercise, len(labels), fps, rng)
    weights = _blend(owner, len(labels), int(round(0.3 * fps)))
    clean = _POSES[exercise](s, _form_arrays(forms, weights), person.body, person.style)
    poses = sensor_noise(place(clean, rng), person.style.noise, rng)
    seq = Sequence(
        poses=to_skeleton(poses, skeleton).astype(np.float32), subject=subject, exercise=exercise,
        skeleton=skeleton, fps=float(fps), label=None, rep=0,
        source=f"synth:seed={seed}/session/{subject}/{exercise}", units="m",
        meta={"session_id": f"synth-{subject}-{exercise}-{seed}", "labels": list(labels),
              "boundaries": [list(b) for b in bounds]},
    )
    return seq, bounds


def _head_points(p: np.ndarray) -> dict[str, np.ndarray]:
    """Eyes, ears and mouth placed around the nose, from the neck-to-nose direction."""
    nose, neck = p[:, _J["nose"]], p[:, _J["neck"]]
    lateral = _unit(p[:, _J["l_shoulder"]] - p[:, _J["r_shoulder"]])
    up = _unit(nose - neck)
    back = _unit(np.cross(up, lateral))
    pts = {}
    for side, sign in (("l", 1.0), ("r", -1.0)):
        pts[f"{side}_eye"] = nose + 0.035 * sign * lateral + 0.03 * up + 0.01 * back
        pts[f"{side}_eye_inner"] = nose + 0.02 * sign * lateral + 0.03 * up + 0.01 * back
        pts[f"{side}_eye_outer"] = nose + 0.05 * sign * lateral + 0.03 * up + 0.015 * back
        pts[f"{side}_ear"] = nose + 0.075 * sign * lateral + 0.01 * up + 0.08 * back
        pts[f"mouth_{side}"] = nose + 0.025 * sign * lateral - 0.03 * up
    return pts


def _hand_and_foot_points(p: np.ndarray) -> dict[str, np.ndarray]:
    pts = {}
    for side in ("l", "r"):
        wrist, elbow = p[:, _J[f"{side}_wrist"]], p[:, _J[f"{side}_elbow"]]
        along = _unit(wrist - elbow)
        pts[f"{side}_pinky"] = wrist + 0.08 * along
        pts[f"{side}_index"] = wrist + 0.09 * along
        pts[f"{side}_thumb"] = wrist + 0.05 * along
        toe, heel = p[:, _J[f"{side}_big_toe"]], p[:, _J[f"{side}_heel"]]
        pts[f"{side}_foot_index"] = toe
        pts[f"{side}_small_toe"] = heel + 0.85 * (toe - heel)
    return pts


def to_skeleton(poses: np.ndarray, skeleton: str) -> np.ndarray:
    """ec3d19 z-up poses as another layout (body25, coco17, mediapipe33) in its own up axis.

    The inverse of the declared joint map, for tests: joints the canonical set lacks are placed
    around the joints it has (eyes and ears about the nose, fingers past the wrist).
    """
    if skeleton == CANONICAL:
        return poses
    target = get_skeleton(skeleton)
    known = {name: poses[:, i] for i, name in enumerate(EC3D_JOINTS)}
    known |= _head_points(poses) | _hand_and_foot_points(poses)
    missing = [j for j in target.joints if j not in known]
    if missing:
        raise ValueError(f"no inverse map onto {skeleton!r} (lacks {', '.join(missing)})")
    out = np.stack([known[j] for j in target.joints], axis=1)
    return out @ UP_ROTATIONS[target.up or "+z"]


def _broken_variants(seq: Sequence) -> list[tuple[str, str, Sequence | bytes]]:
    """(problem, suffix, what to write) for each kind of bad upload the demos show."""
    p = seq.poses
    return [
        ("truncated JSON", ".json", b""),
        ("wrong joint count", ".npz", replace(seq, poses=p[:, :15])),
        ("unknown skeleton", ".json", replace(seq, skeleton="openpose_99")),
        ("too few frames", ".parquet", replace(seq, poses=p[:5])),
        ("every joint lost (NaN)", ".npz", replace(seq, poses=np.full_like(p, np.nan))),
        ("infinite values", ".json", replace(seq, poses=np.where(np.arange(len(p))[:, None, None]
                                                                 == 3, np.inf, p))),
        ("not a session file", ".npz", b"this is not a zip archive\n"),
        ("unknown units", ".parquet", replace(seq, units="furlongs")),
        ("centimetres declared as metres", ".json", replace(seq, poses=p * 100)),
        ("exercise that is no plain name", ".npz", replace(seq, exercise="../Burpee")),
        ("every joint at one point", ".npz", replace(seq, poses=np.zeros_like(p))),
        ("nothing moves", ".parquet", replace(seq, poses=np.repeat(p[:1], len(p), axis=0))),
    ]


def write_broken_sessions(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """Write `n` bad uploads (cycling through twelve kinds); returns [{"path", "problem"}]."""
    base, _ = make_session("broken", "squat", [CORRECT, CORRECT], seed=seed)
    variants = _broken_variants(base)
    written = []
    for k in range(n):
        problem, suffix, content = variants[k % len(variants)]
        path = Path(folder) / f"broken_{k + 1:02d}{suffix}"
        if isinstance(content, bytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            good = write_session(base, path).read_bytes()
            path.write_bytes(content or good[: len(good) // 2])
        else:
            write_session(replace(content, meta={"session_id": path.stem}), path)
        written.append({"path": str(path), "problem": problem})
    return written
