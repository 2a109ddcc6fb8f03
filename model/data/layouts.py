"""Skeleton layouts from JSON files: a pose source posecoach has no built-in layout for.

A layout file (`--layout-file`, or `layout_file` in posecoach.json) is one JSON object:

    {"format": "posecoach-layout", "name": "kinect1",
     "joints": ["hip_center", "spine", ...],            the source's joints, in file order
     "bones": [["hip_center", "spine"], ...],           pairs of joints, for drawing
     "map": {"nose": ["head"], "neck": ["shoulder_center"], ...},
     "approximate": ["nose", "l_heel", "r_heel"],       canonical joints made from stand-ins
     "up": "+y",                                        optional: the up axis, if fixed
     "zeros_lost": true}                                optional: exact (0, 0, 0) joints are lost

`map` names, for each of the canonical 19 joints (model.data.skeletons.EC3D_JOINTS), the source
joints whose mean makes it (a list, or one name). Every canonical joint needs one: a joint the
source lacks gets a stand-in (a heel from the ankle), listed in `approximate`. `zeros_lost`
true says the source writes (0, 0, 0) for a joint it lost (OpenPose's convention): files read
through the layout have those joints lost, unless a manifest, an option or the file itself says
otherwise (`Layout.declared`). A file that is not such an object, names a joint it does not
list, or leaves a canonical joint out is refused with a LayoutError naming the file and what is
wrong.

A loaded layout is registered beside the built-in ones (model.data.skeletons) for this process,
so the readers can read its files; what they read is then mapped onto the canonical joints at
once (`to_canonical`), so stored rows and models never depend on the file again.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from model.data.conventions import UP, UP_AXES
from model.data.formats import ZEROS_LOST
from model.data.sequence import Sequence, SequenceError
from model.data.skeletons import (
    CANONICAL,
    EC3D_JOINTS,
    JOINT_MAPS,
    SKELETONS,
    JointMap,
    Skeleton,
)

FORMAT = "posecoach-layout"
KEYS = ("format", "name", "joints", "bones", "map", "approximate", "up", ZEROS_LOST)
MAX_LAYOUT_BYTES = 1 << 20
LAYOUT, APPROXIMATE = "layout", "approximate"  # meta keys of a mapped sequence


class LayoutError(SequenceError):
    """A layout file that cannot be used; the message names the file and the problem."""

    def __init__(self, source: str, reason: str, kind: str = "bad_layout_file"):
        super().__init__(source, reason, kind)


@dataclass(frozen=True)
class Layout:
    """A skeleton and its map onto the canonical joints, from one layout file."""

    skeleton: Skeleton
    joint_map: JointMap
    path: str
    zeros_lost: bool | None = None  # None: the layout file does not say

    def declared(self) -> dict[str, object]:
        """The fields the layout file declares for the files read through it."""
        return {} if self.zeros_lost is None else {ZEROS_LOST: self.zeros_lost}


def _names(value: object, what: str, src: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(
            isinstance(v, str) and v.strip() for v in items):
        raise LayoutError(src, f"{what} is not a non-empty list of joint names")
    return tuple(items)


def _unknown(names: set[str], known: tuple[str, ...], what: str, src: str) -> None:
    if names - set(known):
        raise LayoutError(src, f"{what} names joints the layout does not list: "
                               f"{_listed(sorted(names - set(known)))}")


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, read up to MAX_LAYOUT_BYTES and refused beyond (whatever its size on
    disk says: a device reads without end)."""
    src = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_LAYOUT_BYTES + 1)
    except FileNotFoundError as e:
        raise LayoutError(src, "no such layout file", "unreadable") from e
    except OSError as e:
        raise LayoutError(src, f"cannot read the layout file ({e.strerror})", "unreadable") from e
    if len(data) > MAX_LAYOUT_BYTES:
        raise LayoutError(src, f"larger than {MAX_LAYOUT_BYTES >> 10} KiB; a layout is a short "
                               "JSON object")
    return data


def _document(path: Path) -> dict:
    """The layout file's JSON object; LayoutError naming the file and the problem. Its values
    are not quoted (its `format`), and the names it lists only cut short (`_listed`)."""
    src = str(path)
    try:
        doc = json.loads(_read_bounded(path).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise LayoutError(src, f"not readable JSON ({e})") from e
    if not isinstance(doc, dict):
        raise LayoutError(src, "not a JSON object")
    extra = sorted(set(doc) - set(KEYS))
    if extra:
        raise LayoutError(src, f"unknown keys {_listed(extra)} (known: {', '.join(KEYS)})")
    if doc.get("format", FORMAT) != FORMAT:
        raise LayoutError(src, f"format is not {FORMAT!r}")
    return doc


def _listed(names: list[str], most: int = 200) -> str:
    """Names from a layout file, comma-separated, cut after `most` characters."""
    text = ", ".join(names)
    return text if len(text) <= most else text[:most] + "..."


def _skeleton(doc: dict, src: str) -> Skeleton:
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        raise LayoutError(src, "no 'name' (the layout's name, text)")
    joints = _names(doc.get("joints"), "'joints'", src)
    twice = sorted(j for j, n in Counter(joints).items() if n > 1)
    if twice:
        raise LayoutError(src, f"'joints' lists {_listed(twice)} more than once")
    bones = doc.get("bones", [])
    if not isinstance(bones, list) or not all(
            isinstance(b, list) and len(b) == 2 and all(isinstance(j, str) for j in b)
            for b in bones):
        raise LayoutError(src, "'bones' is not a list of [joint, joint] pairs")
    _unknown({j for b in bones for j in b}, joints, "'bones'", src)
    up = doc.get("up")
    if up is not None and up not in UP_AXES:
        raise LayoutError(src, f"'up' is {up!r:.40}, not one of {', '.join(UP_AXES)}")
    return Skeleton(name, joints, tuple(tuple(b) for b in bones), up=up)


def _joint_map(doc: dict, skeleton: Skeleton, src: str) -> JointMap:
    mapping = doc.get("map")
    if not isinstance(mapping, dict):
        raise LayoutError(src, "no 'map' object (canonical joint -> source joints)")
    strangers = sorted(set(mapping) - set(EC3D_JOINTS))
    if strangers:
        raise LayoutError(src, f"'map' has keys that are not canonical joints: "
                               f"{_listed(strangers)} (canonical: {', '.join(EC3D_JOINTS)})")
    left_out = [j for j in EC3D_JOINTS if j not in mapping]
    if left_out:
        raise LayoutError(src, f"'map' leaves out canonical joints {', '.join(left_out)}: give "
                               "each one source joint or more (a stand-in where the source "
                               "has none, listed in 'approximate')")
    sources = {j: _names(mapping[j], f"'map' of {j}", src) for j in EC3D_JOINTS}
    _unknown({s for v in sources.values() for s in v}, skeleton.joints, "'map'", src)
    approximate = doc.get("approximate", [])
    if approximate:
        approximate = _names(approximate, "'approximate'", src)
        _unknown(set(approximate), EC3D_JOINTS, "'approximate'", src)
    return JointMap(skeleton.name, CANONICAL, sources, tuple(approximate))


def _zeros_lost(doc: dict, src: str) -> bool | None:
    value = doc.get(ZEROS_LOST)
    if value is not None and not isinstance(value, bool):
        raise LayoutError(src, f"'{ZEROS_LOST}' is {value!r}, not true or false")
    return value


def _register(layout: Layout) -> None:
    name = layout.skeleton.name
    if name in SKELETONS and (SKELETONS[name] != layout.skeleton
                              or JOINT_MAPS.get(name) != layout.joint_map):
        raise LayoutError(layout.path, f"name {name!r} is already a layout "
                                       f"({'built in' if name in _BUILT_IN else 'another file'}"
                                       "); give this one its own name")
    SKELETONS[name] = layout.skeleton
    JOINT_MAPS[name] = layout.joint_map


_BUILT_IN = frozenset(SKELETONS)


@cache
def _load(path: str, mtime_ns: int) -> Layout:
    doc = _document(Path(path))
    skeleton = _skeleton(doc, path)
    layout = Layout(skeleton, _joint_map(doc, skeleton, path), path, _zeros_lost(doc, path))
    _register(layout)
    return layout


def load_layout(path: str | Path) -> Layout:
    """The layout in a JSON layout file, registered for this process; LayoutError names the
    file and what is wrong with it."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as e:
        raise LayoutError(str(path), f"no such layout file (looked for {path.resolve()})",
                          "unreadable") from e
    return _load(str(path.resolve()), mtime)


def to_canonical(seq: Sequence, layout: Layout) -> Sequence:
    """A sequence read in a file layout, on the canonical joints: the layout's name and its
    approximate joints in meta, its up axis declared where the sequence declares none."""
    if seq.skeleton != layout.skeleton.name:
        return seq
    meta = {**seq.meta, LAYOUT: layout.skeleton.name,
            APPROXIMATE: list(layout.joint_map.approximate)}
    if layout.skeleton.up and not meta.get(UP):
        meta[UP] = layout.skeleton.up
    poses = np.asarray(seq.poses)
    if poses.dtype.kind not in "fiu" or poses.ndim != 3 or (
            poses.shape[1:] != (layout.skeleton.n_joints, 3)):
        return seq  # validation names what is wrong with it, against the layout
    poses = layout.joint_map.apply(poses.astype(np.float32))
    return replace(seq, poses=poses, skeleton=CANONICAL, meta=meta)
