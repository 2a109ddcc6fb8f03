"""EC3D's `data_3D.pickle`: a restricted unpickler, the reader and a writer of the layout.

Layout: a dict with
- `poses`: float array (frames, 3, 25), the 3D OpenPose BODY_25 joints of every frame of every
  sequence, stacked;
- `labels`: one row per frame, (exercise, subject, label id, rep, frame). A sequence is one
  (exercise, subject, label id, rep); `frame` orders its frames.

Exercise: an id (0 squat, 1 lunge, 2 plank, model.data.labels.EC3D_EXERCISE_IDS) or a name
("squat", "Lunges", ...). Subject: a number n, read as "s{n}", or text, kept as written ("01"
stays "01"); distinct keys that would read alike refuse the file. Exercise and label ids, reps
and frames may be numbers or text of digits. Label ids as in model.data.labels
(1 correct ... 8 hunched back, 10 unknown). The reader keeps EC3D's 19 joints
(model.data.skeletons.EC3D_BODY25_INDICES); the writer puts NaN in the 6 BODY_25 slots EC3D lacks
(eyes, ears, small toes) and writes exercise ids, subject numbers and 0-based frame numbers.

EC3D's poses come from OpenPose, which writes (0, 0, 0) for a joint it lost: the reader makes
those joints NaN (lost) unless told otherwise. A subject, exercise, label, rep or frame that is
null or empty in the labels rows is an error naming the field.

A pickle can run code when loaded. This one is read only by an unpickler that admits plain
containers and numpy arrays; any other global it asks for is refused before anything runs. A
gzip'd pickle (`.pickle.gz`, `.pkl.gz`) is read the same way, its size bounded by the input
limits (model.data.limits) before it is unpickled.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from model.data.conventions import DEFAULTED
from model.data.formats import is_unicode, zeros_as_lost
from model.data.labels import EC3D_EXERCISE_IDS, EC3D_LABEL_NAMES
from model.data.limits import check_poses_size, read_bytes_bounded
from model.data.sequence import UNITS, Sequence, SequenceError
from model.data.skeletons import BODY25_NAMES, EC3D_BODY25_INDICES

LABEL_COLUMNS = ("exercise", "subject", "label", "rep", "frame")
DEFAULT_FPS = 30.0  # EC3D's rate, where none is declared
_EXERCISE_NAMES = {name: ex_id for ex_id, name in EC3D_EXERCISE_IDS.items()}
_LABEL_IDS = {name: label_id for label_id, name in EC3D_LABEL_NAMES.items()}


def _numpy_attr(module: str, name: str) -> Callable[[], object]:
    """Resolve numpy internals under numpy 2 (`numpy._core`) and numpy 1 (`numpy.core`) names."""

    def resolve() -> object:
        for prefix in ("numpy._core", "numpy.core"):
            try:
                return getattr(importlib.import_module(f"{prefix}.{module}"), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"numpy has no {module}.{name}")

    return resolve


_ALLOWED: dict[tuple[str, str], Callable[[], object]] = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: importlib.import_module("_codecs").encode,
}
for _prefix in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_prefix}.multiarray", "_reconstruct")] = _numpy_attr("multiarray", "_reconstruct")
    _ALLOWED[(f"{_prefix}.multiarray", "scalar")] = _numpy_attr("multiarray", "scalar")
    _ALLOWED[(f"{_prefix}.numeric", "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise RefusedGlobal(module, name)
        return resolve()


def safe_load(path: Path) -> object:
    """Load a pickle (gunzipped when named .gz) through SafeUnpickler; SequenceError names the
    file and what was refused."""
    data = read_bytes_bounded(Path(path))
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as e:
        raise SequenceError(
            str(path),
            f"refused to unpickle: it asks for {e.qualname}, which is neither a plain container "
            "nor a numpy array (nothing in the file was run)",
            "unsafe_pickle",
        ) from e
    except Exception as e:  # a corrupt pickle raises almost anything
        raise SequenceError(str(path), f"not a readable pickle ({type(e).__name__}: {e})",
                            "unreadable") from e


def _plain(value: object) -> object:
    """A labels cell as a plain Python value (numpy scalars unwrapped)."""
    return value.item() if isinstance(value, np.generic) else value


def _whole(value: object) -> int | None:
    """A whole number given as a number or as text of digits ("7", " 07"); None otherwise."""
    value = _plain(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return None


def _exercise(value: object) -> str | None:
    if isinstance(value, str | np.str_):
        name = str(value).strip().lower()
        name = name[:-1] if name.endswith("s") and name[:-1] in _EXERCISE_NAMES else name
        if name in _EXERCISE_NAMES:
            return name
    return EC3D_EXERCISE_IDS.get(_whole(value))


def _frame(value: object) -> float | None:
    value = _plain(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if np.isfinite(value) else None
    return None if _whole(value) is None else float(_whole(value))


def _absent(value: object) -> bool:
    """None, NaN or a blank string: a labels cell given as nothing."""
    if value is None:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return isinstance(value, str | np.str_) and not str(value).strip()


def subject_key(value: object) -> int | str | None:
    """The subject as the labels hold it: a whole number, or text (trimmed) kept as written,
    so "01" stays "01"; None for anything else."""
    if isinstance(value, str | np.str_):
        return str(value).strip()
    return _whole(value)


def subject_name(key: int | str) -> str:
    """A subject key's name: EC3D's subject number n is "s{n}", text is its own name."""
    return f"s{key}" if isinstance(key, int) else key


def _check_distinct(path: Path, keys: list[int | str]) -> None:
    """SequenceError naming the file and both keys when two distinct subject keys would get one
    name (1 and "s1") or print alike (1 and "1"): they would merge two people."""
    taken: dict[str, int | str] = {}
    for key in dict.fromkeys(keys):
        for form in dict.fromkeys((subject_name(key), str(key))):
            other = taken.setdefault(form, key)
            if other != key:
                raise SequenceError(
                    str(path), f"subject keys {other!r} and {key!r} are distinct but both read "
                               f"as {form!r} (a subject's name or key); give each person one "
                               "key", "subject_collision")


_EXPECTED = {
    "exercise": "an exercise id (" + ", ".join(
        f"{i} {n}" for i, n in EC3D_EXERCISE_IDS.items()) + ") or name",
    "subject": "a whole number or a name",
    "label": "a label id (" + ", ".join(f"{i} {n}" for i, n in EC3D_LABEL_NAMES.items()) + ")",
    "rep": "a whole number",
    "frame": "a number",
}


def _bad_cell(where: str, row: int, column: str, value: object) -> SequenceError:
    return SequenceError(where, f"labels row {row}, column {column}: {_plain(value)!r} is not "
                                f"{_EXPECTED[column]}", "bad_labels")


def _check_layout(path: Path, data: object) -> tuple[np.ndarray, np.ndarray]:
    src = str(path)
    if not isinstance(data, dict) or "poses" not in data or "labels" not in data:
        raise SequenceError(src, "not EC3D's layout: expected a dict with 'poses' and 'labels'",
                            "bad_layout")
    poses = np.asarray(data["poses"])
    if poses.dtype.kind not in "fiu" or poses.ndim != 3 or poses.shape[1:] != (3, 25):
        raise SequenceError(src, f"'poses' is {poses.dtype} {poses.shape}, expected numbers "
                                 "(frames, 3, 25)", "bad_layout")
    check_poses_size(src, poses.shape)
    labels = np.asarray(data["labels"], dtype=object)
    if labels.ndim != 2 or labels.shape != (poses.shape[0], len(LABEL_COLUMNS)):
        raise SequenceError(src, f"'labels' has shape {labels.shape}, expected one row of "
                                 f"{LABEL_COLUMNS} per pose frame ({poses.shape[0]})", "bad_layout")
    return poses, labels


def _parsed(where: str, labels: np.ndarray, rows: list[int]) -> tuple[dict, np.ndarray]:
    """One sequence's exercise, subject key, label and rep, and its frames' order; SequenceError
    naming the field left empty, or the row, column and value of the first cell that is not
    what its column holds."""
    first = labels[rows[0]]
    empty = [name for name, value in zip(LABEL_COLUMNS, first, strict=True) if _absent(value)]
    if empty:
        raise SequenceError(where, f"{', '.join(empty)}: null or empty in the labels rows",
                            "missing_field")
    if not is_unicode(str(first[1])):
        raise SequenceError(where, "subject is not Unicode text (a lone surrogate)", "bad_field")
    fields = {"exercise": _exercise(first[0]), "subject": subject_key(first[1]),
              "label": EC3D_LABEL_NAMES.get(_whole(first[2])), "rep": _whole(first[3])}
    for column, value in fields.items():
        if value is None:
            raise _bad_cell(where, rows[0], column, first[LABEL_COLUMNS.index(column)])
    frames = [_frame(v) for v in labels[rows, 4]]
    if None in frames:
        at = frames.index(None)
        raise _bad_cell(where, rows[at], "frame", labels[rows[at], 4])
    return fields, np.argsort(np.asarray(frames), kind="stable")


def read_ec3d_pickle(path: Path, units: str | None = None, fps: float | None = None,
                     zeros_lost: bool = True) -> Iterator[Sequence | SequenceError]:
    """The sequences of an EC3D pickle, in ec3d19; a SequenceError for a piece it cannot use.

    Nothing is assumed of the axes: `units` None (not declared) and no up axis, for
    model.data.conventions to tell from the data. meta["subject_key"] keeps the subject as
    the labels hold it (a whole number or a name, `subject_key`), which the paper's protocol
    sorts by; the subject is its `subject_name`.

    Raises SequenceError when the whole file is unusable (unreadable, unsafe, wrong layout, two
    distinct subject keys that would read as one subject). With `zeros_lost`, exact (0, 0, 0)
    joints are lost joints (NaN). `fps` None (not declared): DEFAULT_FPS, marked in meta as the
    reader's default (model.data.conventions.DEFAULTED).
    """
    path = Path(path)
    defaulted = {DEFAULTED: ["fps"]} if fps is None else {}
    poses, labels = _check_layout(path, safe_load(path))
    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(labels):  # by value and type: 1 and "1" are two keys
        groups.setdefault(tuple(repr(_plain(v)) for v in row[:4]), []).append(i)
    parsed: list[tuple[str, dict, np.ndarray] | SequenceError] = []
    for rows in groups.values():
        ex, subj, label, rep = labels[rows[0], :4]
        where = f"{path}#exercise={ex},subject={subj},label={label},rep={rep}"
        try:
            fields, order = _parsed(where, labels, rows)
        except SequenceError as exc:
            parsed.append(exc)
            continue
        parsed.append((where, fields, np.asarray(rows)[order]))
    _check_distinct(path, [p[1]["subject"] for p in parsed if not isinstance(p, SequenceError)])
    for item in parsed:
        if isinstance(item, SequenceError):
            yield item
            continue
        where, fields, frames = item
        joints = np.ascontiguousarray(  # (frames, joints, 3) in C order, as every reader's
            poses[frames][:, :, list(EC3D_BODY25_INDICES)].transpose(0, 2, 1))
        joints = zeros_as_lost(joints) if zeros_lost else joints.astype(np.float32)
        yield Sequence(poses=joints, subject=subject_name(fields["subject"]),
                       exercise=fields["exercise"], skeleton="ec3d19",
                       fps=DEFAULT_FPS if fps is None else float(fps), label=fields["label"],
                       rep=fields["rep"], source=where, units=units,
                       meta={"subject_key": fields["subject"], **defaulted})


def _subject_number(subject: str) -> int:
    match = re.fullmatch(r"s?(\d+)", subject)
    if match is None:
        raise ValueError(f"EC3D's layout numbers subjects; cannot write subject {subject!r} "
                         "(expected s<number>)")
    return int(match.group(1))


def write_ec3d_pickle(seqs: list[Sequence], path: Path, units: str = "m") -> Path:
    """Write ec3d19 sequences in EC3D's layout (NaN in the 6 BODY_25 slots EC3D lacks), their
    coordinates in `units`."""
    pose_blocks, label_blocks = [], []
    for seq in seqs:
        if seq.skeleton != "ec3d19":
            raise ValueError(f"{seq.source or seq.subject}: EC3D's layout holds ec3d19 poses, "
                             f"not {seq.skeleton!r}")
        if seq.label not in _LABEL_IDS:
            raise ValueError(f"{seq.source or seq.subject}: label {seq.label!r} has no EC3D id")
        n = seq.n_frames
        block = np.full((n, 3, len(BODY25_NAMES)), np.nan, dtype=np.float64)
        block[:, :, list(EC3D_BODY25_INDICES)] = (
            np.asarray(seq.poses, dtype=np.float64) * (UNITS[seq.units] / UNITS[units])
        ).transpose(0, 2, 1)
        pose_blocks.append(block)
        row = [_EXERCISE_NAMES[seq.exercise], _subject_number(seq.subject),
               _LABEL_IDS[seq.label], int(seq.rep)]
        label_blocks.append(np.column_stack([np.tile(row, (n, 1)), np.arange(n)]))
    data = {
        "poses": np.concatenate(pose_blocks) if pose_blocks else np.zeros((0, 3, 25)),
        "labels": (np.concatenate(label_blocks).astype(np.int64) if label_blocks
                   else np.zeros((0, 5), dtype=np.int64)),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f, protocol=4)
    tmp.replace(path)
    return path
