"""The open formats posecoach reads and writes (docs/input-formats.md shows each layout).

Labelled sequences, one sequence per file unless said otherwise:
- JSON: an object {"format": "posecoach-sequence", "skeleton", "units", "fps", "subject",
  "exercise", "label", "rep", "poses": [[[x, y, z] per joint] per frame]} with null for a lost
  joint coordinate; or {"sequences": [object, ...]} plus fields shared by all of them.
- NPZ: `poses` (frames, joints, 3) float and 0-d arrays `skeleton`, `units`, `fps`, `subject`,
  `exercise`, `label`, `rep`. Read with allow_pickle=False.
- CSV (`.csv`, `.txt`, optionally gzip'd `.gz`): optional `# key: value` comment lines for the
  fields, an optional header `joint_x,joint_y,joint_z,...` in the skeleton's order, then one row
  per frame of joints x (x, y, z); an empty cell or `nan` is a lost coordinate. A header's
  frame-time column (TIME_COLUMNS) is read as timestamps, and its per-joint confidence columns
  (`<joint>_visibility`, CONFIDENCE_SUFFIXES) are read past, named in meta `ignored_columns`.
Uploaded sessions, one per file, the same fields with `session_id` and without `label`/`rep`
(and optionally `segmented`: true for a file that is one repetition, scored whole):
- JSON {"format": "posecoach-session", ...}; NPZ as above; Parquet with one row per frame,
  one float column `joint_x|y|z` per coordinate, the fields as JSON under the schema
  metadata key `posecoach`.

Fields missing from a file come from `declared` (a manifest, a file-name pattern or options;
for a session, `zeros_lost` alone); what the file says wins. Readers here build Sequences but
do not validate them (ingest does).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from model.collector import collector_paused
from model.data import storage
from model.data.limits import (
    MIB,
    TOO_LARGE,
    check_field_length,
    check_file_size,
    check_json_values,
    check_poses_size,
    input_limits,
    read_bytes_bounded,
)
from model.data.sequence import Sequence, SequenceError
from model.data.skeletons import get_skeleton

ZEROS_LOST = "zeros_lost"
UP, MIRRORED = "up", "mirrored"  # the axis conventions (model.data.conventions)
SEGMENTED = "segmented"  # a session that is one repetition, scored whole, not cut
TIMESTAMPS = "timestamps"  # seconds of each frame, to check the frame rate against (or tell it)
TIME_COLUMNS = ("timestamp", "timestamps", "time")  # a CSV header's column of frame times
# a CSV header's per-joint confidence columns (`<joint>_visibility`, MediaPipe's): read past
CONFIDENCE_SUFFIXES = ("_visibility", "_presence", "_confidence", "_score")
IGNORED_COLUMNS = "ignored_columns"  # meta: the CSV columns read past, by name
_TIME_NAMES = "timestamp, timestamps or time"
SEQUENCE_FIELDS = ("skeleton", "units", "fps", "subject", "exercise", "label", "rep", ZEROS_LOST,
                   UP, MIRRORED)
SESSION_FIELDS = ("session_id", "skeleton", "units", "fps", "subject", "exercise", ZEROS_LOST,
                  UP, MIRRORED, SEGMENTED)
REQUIRED = ("skeleton", "fps", "subject", "exercise")
TEXT_FIELDS = ("session_id", "skeleton", "units", "subject", "exercise", "label", UP)
FIELDS = tuple(dict.fromkeys((*SEQUENCE_FIELDS, *SESSION_FIELDS)))  # every field, once
PARQUET_META_KEY = b"posecoach"
MAX_STEP_RATIO = 10.0  # a step between frame times over this many median steps is a gap


def coordinate_columns(skeleton: str) -> list[str]:
    return [f"{j}_{c}" for j in get_skeleton(skeleton).joints for c in "xyz"]


def _regular_poses(value: object) -> np.ndarray | None:
    """(frames, joints, 3) float32 from nested lists of numbers of a regular shape, in one
    step; None for anything else."""
    try:
        direct = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    return direct if direct.ndim == 3 and direct.shape[2] == 3 else None


def _poses_from_nested(value: object, src: str) -> np.ndarray:
    """(frames, joints, 3) floats from nested lists, null -> NaN: numbers of a regular shape
    convert in one step; anything else goes the general way, which names what is wrong."""
    direct = _regular_poses(value)
    if direct is not None:
        return direct
    try:
        arr = np.array(value, dtype=object)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"shape {arr.shape}")
        arr[arr == None] = np.nan  # noqa: E711 (element-wise comparison)
        return arr.astype(np.float32)
    except (ValueError, TypeError, RecursionError) as e:
        raise SequenceError(src, f"'poses' is not a (frames, joints, 3) array of numbers ({e})",
                            "bad_shape") from e


def _float32_text(poses: np.ndarray) -> np.ndarray:
    """The shortest text of each float32 value that reads back to the same float32."""
    return np.asarray(poses, dtype=np.float32).astype(str)


def _nested_from_poses(poses: np.ndarray) -> list:
    """Nested lists of numbers (null for NaN) that read back to the same float32 poses."""
    return [[[None if v == "nan" else float(v) for v in joint] for joint in frame]
            for frame in _float32_text(poses).tolist()]


def _absent(value: object) -> bool:
    """None, an empty or blank string, or a float NaN: a field given as nothing."""
    return (value is None or (isinstance(value, str) and not value.strip())
            or (isinstance(value, float) and math.isnan(value)))


def flag(value: object, name: str, source: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "0", "false", "no", ""):
        return text in ("1", "true", "yes")
    raise SequenceError(source, f"{name} {value!r:.80} is not true or false", "bad_field")


def zeros_as_lost(poses: np.ndarray) -> np.ndarray:
    """A float32 copy of (frames, joints, 3) poses with every exact (0, 0, 0) joint NaN: the
    convention of estimators that write zeros for a joint they lost (OpenPose's BODY_25)."""
    out = np.array(poses, dtype=np.float32)
    out[(out == 0).all(axis=-1)] = np.nan
    return out


def is_unicode(text: str) -> bool:
    """Whether the text can be written as UTF-8 (JSON's \\ud800 escapes can make it not)."""
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def check_text_fields(fields: dict, source: str, keys: Iterable[str] = FIELDS) -> None:
    """SequenceError (bad_field) naming the first of `keys` whose value is text longer than the
    limit (max_field_chars), whatever the format it came in."""
    for key in keys:
        if isinstance(fields.get(key), str):
            check_field_length(source, key, len(fields[key]))


def _checked_fields(fields: dict, source: str, session: bool) -> None:
    """SequenceError naming each required field that is missing, null or empty, or a text
    field given as something other than text or a number, or too long."""
    check_text_fields(fields, source)
    required = REQUIRED if session else (*REQUIRED, "label")
    timed = fields.get(TIMESTAMPS) is not None  # the timestamps tell the rate
    missing = [k for k in required if _absent(fields.get(k)) and not (timed and k == "fps")]
    if missing:
        raise SequenceError(source, f"{', '.join(missing)}: missing, null or empty (declare it in "
                                    "the file, a manifest, a file-name pattern or an option)",
                            "missing_field")
    for key in TEXT_FIELDS:
        value = fields.get(key)
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, str | int | float)):
            raise SequenceError(source, f"{key} is {type(value).__name__} {value!r:.80}, not "
                                        "text or a number", "bad_field")
        if isinstance(value, str) and not is_unicode(value):
            raise SequenceError(source, f"{key} {value!r:.80} is not Unicode text (a lone "
                                        "surrogate)", "bad_field")


def _check_gaps(stamps: np.ndarray, source: str) -> None:
    """SequenceError (bad_timestamps) where one step between frame times is more than
    MAX_STEP_RATIO median steps: a gap no frame rate accounts for (a few dropped frames are
    within it), which a rate taken from the median would hide."""
    steps = np.diff(stamps)
    if not len(steps):
        return
    median, i = float(np.median(steps)), int(np.argmax(steps))
    if steps[i] > MAX_STEP_RATIO * median:
        raise SequenceError(source, f"timestamps jump from {stamps[i]:g} s to {stamps[i + 1]:g} s "
                                    f"at frame {i + 1}, {steps[i] / median:,.0f} times the "
                                    f"median step ({median:g} s; at most {MAX_STEP_RATIO:g} times, "
                                    "a few dropped frames)", "bad_timestamps")


def _timestamps(value: object, frames: int, source: str) -> list[float]:
    """A sequence's frame times: one number per frame (seconds), increasing, without a gap of
    more than MAX_STEP_RATIO median steps."""
    try:
        stamps = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as e:
        raise SequenceError(source, "timestamps are not numbers", "bad_field") from e
    if stamps.shape != (frames,):
        raise SequenceError(source, f"timestamps: {stamps.size} for {frames} frames, not one "
                                    "number per frame", "bad_field")
    bad = np.flatnonzero(~(np.diff(stamps) > 0))
    if len(bad):
        i = int(bad[0]) + 1
        raise SequenceError(source, f"timestamps do not increase: frame {i} is at "
                                    f"{stamps[i]:g} s, after {stamps[i - 1]:g} s", "bad_field")
    _check_gaps(stamps, source)
    return stamps.tolist()


def number_field(fields: dict, key: str, kind: type, source: str) -> float | int:
    """fields[key] as `kind` (float or int); SequenceError naming that field otherwise (a
    boolean too: `"fps": true` is not 1 frame per second)."""
    try:
        if isinstance(fields[key], bool):
            raise TypeError("a boolean is not a number")
        return kind(fields[key])
    except (TypeError, ValueError, OverflowError) as e:
        what = "a number a float holds" if kind is float else "a whole number"
        raise SequenceError(source, f"{key} {fields[key]!r:.80} is not {what}",
                            "bad_field") from e


def build_sequence(poses: np.ndarray, fields: dict, source: str, session: bool = False
                   ) -> Sequence:
    """A Sequence from poses (made C-contiguous) and its fields; SequenceError names what is
    missing or malformed.

    With `zeros_lost` declared true, exact (0, 0, 0) joints become lost joints (NaN). With
    `timestamps` and no `fps`, fps is NaN until model.data.conventions takes it from them."""
    _checked_fields(fields, source, session)
    check_poses_size(source, np.shape(poses))
    poses = np.ascontiguousarray(poses)  # as stored (Fortran order, say): C order from here on
    if flag(fields.get(ZEROS_LOST), ZEROS_LOST, source) and np.asarray(poses).ndim == 3:
        poses = zeros_as_lost(poses)
    fps = float("nan") if _absent(fields.get("fps")) else number_field(fields, "fps", float, source)
    rep = number_field(fields, "rep", int, source) if fields.get("rep") else 0
    meta = {k: str(fields[k]) for k in (UP,) if not _absent(fields.get(k))}
    if fields.get(TIMESTAMPS) is not None:
        meta[TIMESTAMPS] = _timestamps(fields[TIMESTAMPS], np.shape(poses)[0], source)
    if not _absent(fields.get(MIRRORED)):
        meta[MIRRORED] = flag(fields[MIRRORED], MIRRORED, source)
    if session:
        given = fields.get("session_id")
        meta["session_id"] = Path(source).name.split(".")[0] if _absent(given) else str(given)
        if flag(fields.get(SEGMENTED), SEGMENTED, source):
            meta[SEGMENTED] = True
    return Sequence(
        poses=poses, subject=str(fields["subject"]), exercise=str(fields["exercise"]),
        skeleton=str(fields["skeleton"]), fps=fps,
        label=None if session else str(fields["label"]), rep=rep, source=source,
        units=None if _absent(fields.get("units")) else str(fields["units"]), meta=meta,
    )


def _fields(seq: Sequence, session: bool) -> dict:
    out = {"skeleton": seq.skeleton, "units": seq.units, "fps": float(seq.fps),
           "subject": seq.subject, "exercise": seq.exercise}
    if session:
        out["session_id"] = seq.meta.get("session_id") or f"{seq.subject}-{seq.exercise}"
    else:
        out |= {"label": seq.label, "rep": int(seq.rep)}
    if seq.units is None:  # not declared: left for the reader to tell from the data
        del out["units"]
    return out | {k: seq.meta[k] for k in (UP, MIRRORED) if seq.meta.get(k) is not None}


def _write_atomic(path: Path, data: bytes) -> Path:
    storage.write_bytes(path, data)
    return Path(path)


#: Integers orjson reads exactly; beyond them it reads floats, where the standard library's ints.
_EXACT_INT = 2**63


def _items(doc: object) -> list[dict]:
    """The document's objects that hold a sequence's fields: itself and its `sequences`."""
    items = [doc] if isinstance(doc, dict) else []
    if items and isinstance(doc.get("sequences"), list):
        items += [item for item in doc["sequences"] if isinstance(item, dict)]
    return items


def _wide_number(doc: object) -> bool:
    """Whether a field of the document or of its `sequences` is an integral float at least
    _EXACT_INT in size: maybe a wider integer that orjson read as a float."""
    return any(isinstance(v, float) and abs(v) >= _EXACT_INT and v.is_integer()
               for item in _items(doc) for v in item.values())


def _parsed(parse: Callable[[str | bytes], object], text: str | bytes) -> object:
    """The document parsed, each regular `poses` made an array and its nested lists freed
    while the cycle collector is paused (model.collector): a collection over those lists would
    cost more than the parse."""
    with collector_paused():
        doc = parse(text)
        for item in _items(doc):
            poses = _regular_poses(item["poses"]) if "poses" in item else None
            if poses is not None:
                item["poses"] = poses
        return doc


def _json_value(text: bytes, src: str) -> object:
    """The JSON document in `text`, parsed by orjson (several times faster on the nested lists
    of poses); regular poses come back as arrays. A document orjson refuses (NaN, UTF-16,
    nested over 1,024 deep, ...) or may have read differently (integers over 64 bits) is parsed
    again by the standard library, whose reading stands. Text with more values than the limits'
    poses hold is refused before either parses it (model.data.limits.check_json_values)."""
    check_json_values(src, text)
    try:
        doc = _parsed(orjson.loads, text)
        if not _wide_number(doc):
            return doc
    except orjson.JSONDecodeError:
        pass
    try:
        return _parsed(json.loads, text)
    except RecursionError as e:
        raise SequenceError(src, "JSON nested too deep to read", "too_deep") from e
    except (ValueError, UnicodeDecodeError) as e:  # ValueError: also an integer over 4,300 digits
        raise SequenceError(src, f"not valid JSON ({e})", "bad_json") from e


def load_json(path: Path) -> object:
    """A JSON document (gzip'd when named .gz), its size bounded by the input limits."""
    return _json_value(read_bytes_bounded(path), str(path))


# ---- labelled sequences ------------------------------------------------------------------------

def write_sequences_json(seqs: list[Sequence], path: Path) -> Path:
    """One JSON document: a single sequence object, or {"sequences": [...]} for several."""
    items = [{**_fields(s, False), "poses": _nested_from_poses(s.poses)} for s in seqs]
    doc = {"format": "posecoach-sequence", **items[0]} if len(items) == 1 else {
        "format": "posecoach-sequences", "sequences": items}
    return _write_atomic(path, json.dumps(doc, separators=(",", ":")).encode())


def read_sequences_json(path: Path, declared: dict) -> Iterator[Sequence | SequenceError]:
    doc = load_json(path)
    if not isinstance(doc, dict):
        raise SequenceError(str(path), "expected a JSON object (one sequence, or 'sequences')",
                            "bad_layout")
    shared = {k: doc[k] for k in SEQUENCE_FIELDS if k in doc}
    several = "sequences" in doc
    items = doc.get("sequences", [doc])
    if not isinstance(items, list):
        raise SequenceError(str(path), "'sequences' is not a list", "bad_layout")
    for i, item in enumerate(items):
        src = f"{path}#{i}" if several else str(path)
        try:
            if not isinstance(item, dict) or "poses" not in item:
                raise SequenceError(src, "no 'poses' in this item", "bad_layout")
            fields = {**declared, **shared,
                      **{k: item[k] for k in (*SEQUENCE_FIELDS, TIMESTAMPS) if k in item}}
            yield build_sequence(_poses_from_nested(item["poses"], src), fields, src)
        except SequenceError as e:
            yield e


def _npz_bytes(poses: np.ndarray, fields: dict) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, poses=np.asarray(poses, dtype=np.float32),
                        **{k: np.array(v) for k, v in fields.items() if v is not None})
    return buf.getvalue()


def write_sequence_npz(seq: Sequence, path: Path) -> Path:
    return _write_atomic(path, _npz_bytes(seq.poses, _fields(seq, False)))


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0}


def _check_inflated(src: str, what: str, size: int) -> None:
    """SequenceError when `what` takes more than max_values float64s' worth of bytes once read."""
    limit = input_limits().max_values * 8
    if size > limit:
        raise SequenceError(src, f"{what}: {size / MIB:,.0f} MiB once read, over the limit of "
                                 f"{limit / MIB:.0f} MiB (POSECOACH_LIMIT_MAX_VALUES)", TOO_LARGE)


def _npy_header(zf: zipfile.ZipFile, member: str, src: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype an archive member's .npy header declares, nothing inflated beyond
    it; SequenceError (unreadable) for an encrypted member."""
    if zf.getinfo(member).flag_bits & 0x1:
        raise SequenceError(src, f"'{member}' is encrypted; NPZ uploads are read without a "
                                 "password", "unreadable")
    with zf.open(member) as f:
        read_header = _NPY_HEADERS.get(np.lib.format.read_magic(f))
        if read_header is None:
            raise ValueError(f"{member}: unsupported .npy format version")
        shape, _, dtype = read_header(f)
    return shape, dtype


def _check_npz_sizes(zf: zipfile.ZipFile, members: dict[str, str], src: str) -> None:
    """SequenceError when the headers of the arrays to be read (`members`: key -> archive
    member) declare too many bytes together, `poses` too many frames or values, or a text field
    too many characters: checked from the headers, nothing inflated, whatever the members are
    named."""
    sizes = {}
    for key, member in members.items():
        shape, dtype = _npy_header(zf, member, src)
        if key == "poses":
            check_poses_size(src, shape)
        elif dtype.kind in "US":
            check_field_length(src, key, dtype.itemsize // (4 if dtype.kind == "U" else 1))
        sizes[member] = (math.prod(shape) * dtype.itemsize, f"{dtype} {shape}")
    largest = max(sizes, key=lambda m: sizes[m][0])
    _check_inflated(src, f"its arrays together (the largest, '{largest}', declares "
                         f"{sizes[largest][1]})", sum(size for size, _ in sizes.values()))


def _npz_member(names: list[str], key: str) -> str | None:
    """The archive member that np.load's NpzFile reads for `key`: named so, or key + .npy."""
    return key if key in names else f"{key}.npy" if f"{key}.npy" in names else None


def _load_npz(path: Path, keys: tuple[str, ...]) -> tuple[np.ndarray, dict]:
    """The poses and the 0-d fields among `keys` of an NPZ (and its `timestamps` array), the
    archive opened once: sizes checked from its headers first, then each array read as np.load
    reads it (no pickles)."""
    src = str(path)
    check_file_size(path)
    if not zipfile.is_zipfile(path):
        raise SequenceError(src, "not an NPZ file (not a zip archive of .npy arrays)",
                            "unreadable")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            members = {k: m for k in ("poses", *keys) if (m := _npz_member(names, k)) is not None}
            if "poses" not in members:
                files = [n.removesuffix(".npy") for n in names]
                raise SequenceError(src, f"no 'poses' array (has: {', '.join(files)})",
                                    "bad_layout")
            _check_npz_sizes(zf, members, src)

            def read(name: str) -> np.ndarray:
                with zf.open(name) as f:
                    return np.lib.format.read_array(f, allow_pickle=False)

            poses = read(members.pop("poses"))
            given = {k: read(m) for k, m in members.items()}
            fields = {k: v.item() for k, v in given.items() if v.ndim == 0}
            if TIMESTAMPS in given and given[TIMESTAMPS].ndim:  # one number per frame
                fields[TIMESTAMPS] = given[TIMESTAMPS]
    except SequenceError:
        raise
    except (OSError, ValueError, EOFError, NotImplementedError, zipfile.BadZipFile) as e:
        raise SequenceError(src, f"not a readable NPZ without pickled objects ({e})",
                            "unreadable") from e
    if poses.dtype.kind not in "fiu" or poses.ndim != 3:
        raise SequenceError(src, f"'poses' is {poses.dtype} {poses.shape}, expected numbers "
                                 "(frames, joints, 3)", "bad_shape")
    return poses, fields


def read_sequence_npz(path: Path, declared: dict) -> Iterator[Sequence | SequenceError]:
    poses, fields = _load_npz(path, (*SEQUENCE_FIELDS, TIMESTAMPS))
    try:
        yield build_sequence(poses, {**declared, **fields}, str(path))
    except SequenceError as e:
        yield e


def write_sequence_csv(seq: Sequence, path: Path) -> Path:
    """CSV with `# key: value` fields and a joint header; gzip'd when the name ends in .gz."""
    lines = ["# format: posecoach-sequence"] + [
        f"# {k}: {v}" for k, v in _fields(seq, False).items()]
    lines.append(",".join(coordinate_columns(seq.skeleton)))
    flat = _float32_text(seq.poses).reshape(seq.n_frames, -1)
    lines += [",".join("" if v == "nan" else v for v in row) for row in flat.tolist()]
    data = ("\n".join(lines) + "\n").encode()
    return _write_atomic(path, gzip.compress(data, mtime=0) if str(path).endswith(".gz") else data)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return text.strip().lower() in ("", "nan")


def _abbreviated(names: list[str], shown: int = 6) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _csv_lines(text: str) -> tuple[dict, list[str] | None, list[str]]:
    """A CSV's `# key: value` fields, its header (None where the first row is numbers) and
    its rows."""
    fields, body = {}, []
    for line in text.splitlines():
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep and key.strip() in SEQUENCE_FIELDS:
                fields[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    header = None
    if body and not all(_is_number(c) for c in body[0].split(",")):
        header = [c.strip() for c in body.pop(0).split(",")]
    return fields, header, body


def _without_time_column(flat: np.ndarray, header: list[str] | None
                         ) -> tuple[np.ndarray, list[str] | None, np.ndarray | None]:
    """The coordinates, the header and the frame times of a header's time column (TIME_COLUMNS),
    the time column taken out; times None where there is none."""
    named = [i for i, c in enumerate(header or ()) if c.lower() in TIME_COLUMNS]
    if not named or len(header) != flat.shape[1]:
        return flat, header, None
    i = named[0]
    return np.delete(flat, i, axis=1), header[:i] + header[i + 1:], flat[:, i]


def _without_confidence_columns(flat: np.ndarray, header: list[str] | None, skeleton: object
                                ) -> tuple[np.ndarray, list[str] | None, list[str]]:
    """The coordinates and the header without the header's per-joint confidence columns (a
    skeleton joint's name and a CONFIDENCE_SUFFIXES suffix), and those columns' names."""
    try:
        joints = set(get_skeleton(str(skeleton)).joints)
    except ValueError:  # no or an unknown skeleton: validation names it
        return flat, header, []
    if header is None or len(header) != flat.shape[1]:
        return flat, header, []
    ignored = [i for i, c in enumerate(header)
               if any(c.endswith(s) and c[:-len(s)] in joints for s in CONFIDENCE_SUFFIXES)]
    kept = [c for i, c in enumerate(header) if i not in ignored]
    return np.delete(flat, ignored, axis=1), kept, [header[i] for i in ignored]


def _columns_problem(columns: int, header: list[str] | None) -> str:
    """Why `columns` coordinate columns are not joints x 3, with what the header shows."""
    reason = f"{columns} columns is not joints x 3"
    if header is None:
        return (reason + "; an extra column of frame times needs a header naming it "
                f"{_TIME_NAMES} (seconds)")
    extra = [c for c in header if not c.lower().endswith(("_x", "_y", "_z"))]
    if extra:
        reason += (f"; the header's columns {_abbreviated(extra)} are not joint coordinates "
                   f"(a column of frame times is read when named {_TIME_NAMES}, "
                   "in seconds; a joint's confidence column is read past when named "
                   f"<joint>{'|'.join(CONFIDENCE_SUFFIXES)}, <joint> one of the skeleton's "
                   "joints; drop any other)")
    return reason


def _header_problem(header: list[str], skeleton: str) -> str | None:
    """What is wrong with a CSV header for a skeleton: the first column that differs, what was
    expected and what was found; None when it lists the skeleton's coordinates in order."""
    expected = coordinate_columns(skeleton)
    if header == expected:
        return None
    at = next((i for i, (h, e) in enumerate(zip(header, expected, strict=False)) if h != e),
              min(len(header), len(expected)))
    found = repr(header[at]) if at < len(header) else "nothing"
    wanted = repr(expected[at]) if at < len(expected) else "no more columns"
    return (f"header does not list the joints of skeleton {skeleton!r} as joint_x,joint_y,"
            f"joint_z in order: column {at + 1} is {found}, expected {wanted} (expected "
            f"{_abbreviated(expected)}; found {_abbreviated(header)}). Built-in skeletons use "
            "posecoach's own joint names; for a tool's own names (SpineBase, LEFT_SHOULDER, ...) "
            "give a layout file (--layout-file, or layout_file in posecoach.json) listing them")


def read_sequence_csv(path: Path, declared: dict) -> Iterator[Sequence | SequenceError]:
    src = str(path)
    try:
        text = read_bytes_bounded(path).decode("utf-8")
    except UnicodeDecodeError as e:
        raise SequenceError(src, f"cannot read the file as text ({e})", "unreadable") from e
    fields, header, body = _csv_lines(text)
    try:
        table = pd.read_csv(io.StringIO("\n".join(body)), header=None, dtype=np.float64,
                            na_values=["", "nan", "NaN"], keep_default_na=False)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise SequenceError(src, f"rows are not comma-separated numbers ({e})".splitlines()[0],
                            "bad_csv") from e
    merged = {**declared, **fields}
    flat, header, times = _without_time_column(table.to_numpy(dtype=np.float64), header)
    flat, header, ignored = _without_confidence_columns(flat, header, merged.get("skeleton"))
    if flat.shape[1] % 3:
        raise SequenceError(src, _columns_problem(flat.shape[1], header), "bad_shape")
    if times is not None:
        merged[TIMESTAMPS] = times
    if header is not None and merged.get("skeleton"):
        try:
            problem = _header_problem(header, str(merged["skeleton"]))
        except ValueError:
            problem = None  # an unknown skeleton: validation names it
        if problem:
            raise SequenceError(src, problem, "bad_header")
    try:
        flat = flat.astype(np.float32)
        seq = build_sequence(flat.reshape(flat.shape[0], -1, 3), merged, src)
    except SequenceError as e:
        yield e
        return
    if ignored:
        seq.meta[IGNORED_COLUMNS] = ignored
    yield seq


# ---- uploaded sessions -------------------------------------------------------------------------

def _session_json(seq: Sequence) -> bytes:
    doc = {"format": "posecoach-session", **_fields(seq, True),
           "poses": _nested_from_poses(seq.poses)}
    return json.dumps(doc, separators=(",", ":")).encode()


def _session_parquet(seq: Sequence) -> bytes:
    flat = np.asarray(seq.poses, dtype=np.float32).reshape(seq.n_frames, -1)
    names = coordinate_columns(seq.skeleton)
    table = pa.table({name: flat[:, i] for i, name in enumerate(names)})
    table = table.replace_schema_metadata({PARQUET_META_KEY: json.dumps(_fields(seq, True))})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


_SESSION_WRITERS = {
    ".json": _session_json,
    ".npz": lambda seq: _npz_bytes(seq.poses, _fields(seq, True)),
    ".parquet": _session_parquet,
}


def write_session(seq: Sequence, path: Path) -> Path:
    """Write an upload in the layout its suffix names (.json, .npz or .parquet)."""
    writer = _SESSION_WRITERS.get(Path(path).suffix.lower())
    if writer is None:
        raise ValueError(f"{path}: sessions are written as .json, .npz or .parquet")
    return _write_atomic(path, writer(seq))


def _read_session_json(path: Path, declared: dict) -> Sequence:
    doc = load_json(path)
    if not isinstance(doc, dict) or "poses" not in doc:
        raise SequenceError(str(path), "expected a JSON object with 'poses'", "bad_layout")
    fields = {**declared, **{k: doc[k] for k in (*SESSION_FIELDS, TIMESTAMPS) if k in doc}}
    return build_sequence(_poses_from_nested(doc["poses"], str(path)), fields, str(path), True)


def _read_session_npz(path: Path, declared: dict) -> Sequence:
    poses, fields = _load_npz(path, (*SESSION_FIELDS, TIMESTAMPS))
    return build_sequence(poses, {**declared, **fields}, str(path), True)


def _check_parquet_sizes(meta: pq.FileMetaData, src: str) -> None:
    """SequenceError when a Parquet file's footer declares too many frames or values, or more
    than max_values float64s' worth of bytes once decompressed."""
    check_poses_size(src, (meta.num_rows, meta.num_columns))
    _check_inflated(src, "its row groups",
                    sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)))


def _parquet_fields(schema: pa.Schema, src: str) -> dict:
    """The session's fields: the JSON object under the schema metadata key `posecoach`."""
    raw = (schema.metadata or {}).get(PARQUET_META_KEY)
    fields = _json_value(raw, src) if raw else {}
    if not isinstance(fields, dict):
        raise SequenceError(src, f"the '{PARQUET_META_KEY.decode()}' metadata is not a JSON "
                                 "object", "bad_layout")
    check_text_fields(fields, src)
    return fields


def _is_number_type(kind: pa.DataType) -> bool:
    """Floats or integers, or a dictionary of them: at most 8 bytes a value once decoded."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


def _checked_columns(schema: pa.Schema, skeleton: object, src: str) -> list[str]:
    """The coordinate columns of the skeleton, when the schema holds them in order, each of
    numbers (floats or integers); SequenceError naming the first that is not, and its type.
    Checked before any data is read: decoded, the columns then take at most rows x columns x 8
    bytes, which the footer's check bounds by max_values float64s."""
    try:
        expected = coordinate_columns(str(skeleton))
    except ValueError as e:
        raise SequenceError(src, f"unknown or missing skeleton {skeleton!r:.80}",
                            "unknown_skeleton") from e
    if schema.names != expected:
        raise SequenceError(src, f"columns are not skeleton {skeleton!r:.80}'s joint_x, joint_y, "
                                 "joint_z in order", "bad_header")
    for field in schema:
        if not _is_number_type(field.type):
            hint = ("; frame times go under 'timestamps' in the fields (seconds)"
                    if pa.types.is_temporal(field.type) else "")
            raise SequenceError(src, f"column {field.name} is {field.type}, not numbers "
                                     f"(coordinates are floats or integers){hint}", "bad_dtype")
    return expected


def _read_session_parquet(path: Path, declared: dict) -> Sequence:
    src = str(path)
    check_file_size(path)
    try:  # the file read whole (its size is bounded) and decoded in this thread: a file this
        # small costs several times the CPU when pyarrow reads it from disk in its thread pool
        parquet = pq.ParquetFile(pa.BufferReader(path.read_bytes()))
        _check_parquet_sizes(parquet.metadata, src)
        schema = parquet.schema_arrow
    except (OSError, pa.ArrowException) as e:
        raise SequenceError(src, f"not a readable Parquet file ({e})", "unreadable") from e
    fields = _parquet_fields(schema, src)
    columns = _checked_columns(schema, fields.get("skeleton"), src)
    try:
        table = parquet.read(columns=columns, use_threads=False)
        flat = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32)
                                for c in columns])
    except (OSError, ValueError, TypeError, pa.ArrowException) as e:
        raise SequenceError(src, f"not a readable Parquet file ({e})", "unreadable") from e
    return build_sequence(flat.reshape(len(flat), len(columns) // 3, 3), {**declared, **fields},
                          src, True)


#: Session readers: (path, declared fields the file's own go over) -> the session.
SESSION_READERS: dict[str, Callable[[Path, dict], Sequence]] = {
    ".json": _read_session_json,
    ".npz": _read_session_npz,
    ".parquet": _read_session_parquet,
}
