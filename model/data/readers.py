"""Reading inputs: labelled sequences from files and folders, and uploaded sessions.

Where a file's fields come from, weakest first: a built-in layout (`layout=`, or recognised
from a file name when no manifest applies), a `posecoach.json` manifest in the file's folder or
a folder above it (up to the folder being read), the options declared by the caller, the
manifest's or layout's file-name `pattern` (a regular expression searched in the file's
absolute path, `searched_path`; named groups subject, exercise, label, rep), and last the file
itself, which wins. A layout can also come from a JSON layout file (`layout_file`,
model.data.layouts: the caller's from anywhere, a manifest's only from inside the manifest's
folder); its sequences are mapped onto the canonical joints as they are read. Then each file
is one source whose up axis, units and mirroring are settled against its data
(model.data.conventions).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import lru_cache
from pathlib import Path

from model.data import storage
from model.data.conventions import checked_forced, settle, with_declared
from model.data.ec3d_pickle import read_ec3d_pickle
from model.data.formats import (
    SEGMENTED,
    SEQUENCE_FIELDS,
    SESSION_READERS,
    ZEROS_LOST,
    check_text_fields,
    flag,
    load_json,
    number_field,
    read_sequence_csv,
    read_sequence_npz,
    read_sequences_json,
)
from model.data.layouts import load_layout, to_canonical
from model.data.limits import input_limits
from model.data.sequence import Sequence, SequenceError
from model.settings import InputLimits

MANIFEST = "posecoach.json"
LAYOUT_FILE, PATTERN = "layout_file", "pattern"
DECLARABLE = (*SEQUENCE_FIELDS, "layout", LAYOUT_FILE, PATTERN)
MANIFEST_KEYS = (*DECLARABLE, SEGMENTED)  # what a manifest may declare; other keys are ignored
SKIPPED_SUFFIXES = (".md", ".rst")

LAYOUTS: dict[str, dict] = {
    "uiprmd": {
        "skeleton": "vicon39",
        "units": "mm",
        "up": "+z",
        "fps": 100.0,
        "exercise": "squat",
        "pattern": r"/(?P<label>correct|incorrect)/m\d+_(?P<subject>s\d+)_e(?P<rep>\d+)"
                   r"_positions(?:_inc)?\.txt\.gz$",
    },
    # Pose estimators in OpenPose's style write (0, 0, 0) for a joint they lost.
    "openpose": {"skeleton": "body25", ZEROS_LOST: True},
}

_READERS: dict[str, Callable[[Path, dict], Iterator[Sequence | SequenceError]]] = {
    ".json": read_sequences_json,
    ".json.gz": read_sequences_json,
    ".npz": read_sequence_npz,
    ".csv": read_sequence_csv,
    ".csv.gz": read_sequence_csv,
    ".txt": read_sequence_csv,
    ".txt.gz": read_sequence_csv,
}
_PICKLE_SUFFIXES = (".pickle", ".pkl", ".pickle.gz", ".pkl.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    double = "".join(Path(name).suffixes[-2:])
    return double if double in _READERS else Path(name).suffix


def _manifest(folder: Path, root: Path) -> dict:
    """The declarations of the nearest posecoach.json from `folder` up to `root`; {} when there
    is none."""
    for d in (folder, *folder.parents):
        candidate = d / MANIFEST
        if candidate.is_file():
            return _manifest_at(candidate)
        if d == root:
            break
    return {}


def _manifest_at(path: Path) -> dict:
    """The declarations of the manifest at `path` (parsed once per version of it), its layout
    file checked on every call (that file may come and go)."""
    try:
        info = path.stat()
    except OSError as e:
        raise SequenceError(str(path), f"manifest is not readable ({e.strerror})",
                            "bad_manifest") from e
    found = _parsed_manifest(str(path), info.st_mtime_ns, info.st_size, input_limits())
    if isinstance(found, SequenceError):
        raise SequenceError(found.source, found.reason, found.kind)  # a fresh one each time
    doc = dict(found)
    if LAYOUT_FILE in doc:
        doc[LAYOUT_FILE] = _manifest_layout_file(doc[LAYOUT_FILE], path)
    return doc


@lru_cache(maxsize=64)
def _parsed_manifest(path: str, mtime_ns: int, size: int, limits: InputLimits
                     ) -> dict | SequenceError:
    """What the manifest at `path` declares (MANIFEST_KEYS), as of its modification time and
    size, or why it cannot be used: read once per process, version and limits, as every session
    of a folder shares it, and bounded by the input limits as any JSON is (model.data.limits).
    The error is kept without a traceback, so no frame of the read stays in memory."""
    try:
        doc = load_json(Path(path))
    except SequenceError as e:
        reason, kind = (f"manifest is {e.reason}", "bad_manifest") if e.kind == "bad_json" else (
            e.reason, e.kind)
        return SequenceError(path, reason, kind)
    if not isinstance(doc, dict):
        return SequenceError(path, "manifest is not a JSON object", "bad_manifest")
    declared = {k: doc[k] for k in MANIFEST_KEYS if k in doc}
    try:
        check_text_fields(declared, path, MANIFEST_KEYS)
    except SequenceError as e:
        return SequenceError(e.source, e.reason, e.kind)
    return declared


def _manifest_layout_file(name: object, manifest: Path) -> str:
    """The layout file a manifest names: a relative name of a regular file inside the manifest's
    folder (links resolved). The manifest comes with the uploads, so it is data: an absolute
    path, a `..` or a link out of the folder is refused (bad_manifest), naming no file outside
    it, and so is anything but a regular file (a FIFO or a device would never end)."""
    src, folder = str(manifest), manifest.parent
    if not isinstance(name, str) or not name.strip():
        raise SequenceError(src, "layout_file is not a file name (text)", "bad_manifest")
    if os.path.isabs(name):
        raise SequenceError(src, "layout_file is an absolute path; name a file in the "
                                 "manifest's folder, relative to it", "bad_manifest")
    try:
        path = storage.join(folder, name)
    except ValueError as e:
        raise SequenceError(src, "layout_file is not a plain name relative to the manifest's "
                                 "folder (no '.' or '..' parts, no backslash)",
                            "bad_manifest") from e
    if not storage.inside(path, folder):
        raise SequenceError(src, "layout_file leads out of the manifest's folder (a link); "
                                 "a layout file named by a manifest is read only inside it",
                            "bad_manifest")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise SequenceError(path, "no such layout file", "unreadable") from e
    if not stat.S_ISREG(mode):
        raise SequenceError(path, "the layout file is not a regular file", "unreadable")
    return path


def _layout(name: str, source: Path) -> dict:
    if name not in LAYOUTS:
        raise SequenceError(str(source), f"unknown layout {name!r} (known: {', '.join(LAYOUTS)})",
                            "unknown_layout")
    return LAYOUTS[name]


def searched_path(path: Path) -> str:
    """What a file-name pattern is searched in: the file's absolute path with `/` separators,
    `.` and `..` resolved (links not followed), the same whatever the current folder."""
    return Path(os.path.abspath(path)).as_posix()


def _recognised_layout(path: Path) -> dict:
    for spec in LAYOUTS.values():
        if PATTERN in spec and re.search(spec[PATTERN], searched_path(path)):
            return spec
    return {}


def _from_pattern(pattern: str, path: Path) -> dict:
    searched = searched_path(path)
    try:
        match = re.search(pattern, searched)
    except re.error as e:
        raise SequenceError(str(path), f"file-name pattern {pattern!r} is not a regular "
                                       f"expression ({e})", "bad_pattern") from e
    if match is None:
        raise SequenceError(str(path), f"the file's path {searched!r} does not match the "
                                       f"pattern {pattern!r}", "pattern_mismatch")
    return {k: v for k, v in match.groupdict().items() if v is not None}


def declared_fields(path: Path, root: Path, declared: dict) -> dict:
    """What a file's fields default to: layout < layout file < manifest < declared options <
    pattern; a layout file names the skeleton."""
    fields = _unpatterned_fields(path, root, declared)
    pattern = fields.pop(PATTERN, None)
    return {**fields, **_from_pattern(pattern, path)} if pattern else fields


def recorded_fields(path: Path, root: Path, declared: dict) -> dict:
    """The fields to record for a file that failed, to read it again from anywhere: as
    declared_fields, but never a pattern, only the fields it gave where it matched; the
    declared options alone where the manifest or the layout file cannot be read."""
    try:
        fields = _unpatterned_fields(path, root, declared)
    except SequenceError:
        fields = {k: v for k, v in declared.items() if v is not None}
    pattern = fields.pop(PATTERN, None)
    with suppress(SequenceError):
        fields |= _from_pattern(pattern, path) if pattern else {}
    return fields


def _unpatterned_fields(path: Path, root: Path, declared: dict) -> dict:
    """declared_fields before the pattern is applied (the pattern kept as a field)."""
    manifest = _manifest(path.parent, root)
    layout_name = declared.get("layout") or manifest.get("layout")
    layout = _layout(layout_name, path) if layout_name else (
        {} if manifest else _recognised_layout(path))
    given = {**manifest, **{k: v for k, v in declared.items() if v is not None}}
    layout_file = load_layout(given[LAYOUT_FILE]) if given.get(LAYOUT_FILE) else None
    merged = {**layout, **(layout_file.declared() if layout_file else {}), **given}
    if layout_file:
        merged["skeleton"] = layout_file.skeleton.name
    merged.pop("layout", None)
    return merged


def _parse_file(path: Path, fields: dict) -> Iterator[Sequence | SequenceError]:
    if path.name.lower().endswith(_PICKLE_SUFFIXES):
        fps = number_field(fields, "fps", float, str(path)) if "fps" in fields else None
        for item in read_ec3d_pickle(path, units=fields.get("units"), fps=fps,
                                     zeros_lost=flag(fields.get(ZEROS_LOST, True), ZEROS_LOST,
                                                     str(path))):
            yield item if isinstance(item, SequenceError) else with_declared(item, fields)
        return
    reader = _READERS.get(_suffix(path))
    if reader is None:
        known = ", ".join((*_READERS, *_PICKLE_SUFFIXES))
        raise SequenceError(str(path), f"unknown file type (known: {known})", "unknown_format")
    yield from reader(path, fields)


def _read_file(path: Path, root: Path, declared: dict) -> Iterator[Sequence | SequenceError]:
    """The file's items, its sequences' axes and units settled together (one source)."""
    fields = declared_fields(path, root, declared)
    items = list(_parse_file(path, fields))
    if fields.get(LAYOUT_FILE):
        layout = load_layout(fields[LAYOUT_FILE])
        items = [s if isinstance(s, SequenceError) else to_canonical(s, layout) for s in items]
    seqs = iter(settle([s for s in items if not isinstance(s, SequenceError)], declared,
                       str(path)))
    for item in items:
        yield item if isinstance(item, SequenceError) else next(seqs)


def checked_declarations(source: str = "the options", **declared: object) -> dict:
    """The declarations given (None dropped), checked before any file is read: up, units,
    mirrored and zeros_lost valid values, the layout a known one, the layout file a usable one.
    SequenceError naming `source` (or the layout file) and the problem."""
    given = {k: v for k, v in declared.items() if v is not None}
    checked_forced(given, source)
    if ZEROS_LOST in given:
        given[ZEROS_LOST] = flag(given[ZEROS_LOST], ZEROS_LOST, source)
    if given.get("layout") is not None:
        _layout(str(given["layout"]), Path(source))
    if given.get(LAYOUT_FILE) is not None:
        given[LAYOUT_FILE] = str(given[LAYOUT_FILE])
        load_layout(given[LAYOUT_FILE])
    return given


def folder_files(folder: Path) -> list[Path]:
    """The files of a folder the readers read (recursively; not its posecoach.json, hidden names
    or skipped suffixes), sorted."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.name != MANIFEST and not p.name.startswith((".", "_"))
        and p.suffix.lower() not in SKIPPED_SUFFIXES
    )  # fmt: skip


def _as_files(error: SequenceError, file: Path) -> SequenceError:
    """`error` as `file`'s: one about another file it is read with (its folder's manifest or
    layout file) names that file in its reason."""
    if error.source.startswith(str(file)):
        return error
    return SequenceError(str(file), f"{error.source}: {error.reason}", error.kind)


def iter_sequences(path: Path, **declared: object) -> Iterator[Sequence | SequenceError]:
    """Labelled sequences from a file or a folder (every file in it, recursively).

    Yields unvalidated Sequences, or a SequenceError for a piece (or, in a folder, a file) that
    cannot be parsed. Raises SequenceError when `path` itself is missing or, being a file, is
    unreadable as a whole. Declarable: skeleton, units, up, mirrored, fps, subject, exercise,
    label, rep, zeros_lost (exact (0, 0, 0) joints are lost joints: the `openpose` layout's
    convention, and EC3D pickles' unless declared false), layout (e.g. "uiprmd", "openpose"),
    layout_file (a JSON layout, model.data.layouts: its files are read in its joints and mapped
    onto the canonical ones) and pattern. Each file's up axis, units and mirroring are settled
    against its data (model.data.conventions); `up`, `units` and `mirrored` given here override
    both.
    """
    unknown = sorted(set(declared) - set(DECLARABLE))
    if unknown:
        raise ValueError(f"cannot declare {', '.join(unknown)} (declarable: "
                         f"{', '.join(DECLARABLE)})")
    path = Path(path)
    if path.is_dir():
        for file in folder_files(path):
            try:
                yield from _read_file(file, path, declared)
            except SequenceError as e:
                yield _as_files(e, file)
    elif path.is_file():
        yield from _read_file(path, path.parent, declared)
    else:
        raise SequenceError(str(path), "no such file or folder", "unreadable")


def read_session(path: Path, layout: str | None = None, layout_file: str | Path | None = None,
                 segmented: bool = False, zeros_lost: bool | None = None,
                 **forced: object) -> Sequence:
    """One uploaded session (.json, .npz or .parquet): label None, meta["session_id"] set; its
    axes, units and frame rate settled (model.data.conventions; a JSON or Parquet session's
    `timestamps` checked as a labelled file's are), `forced` (up, units, mirrored, fps) as
    given.
    A built-in `layout` (declared, or named by a posecoach.json in the session's folder) and
    the manifest may declare up, units, mirrored and zeros_lost (the manifest over the layout,
    the session file over both), the manifest also `layout_file`. With a layout file (the
    argument over the manifest's), a session in that layout's skeleton is mapped onto the
    canonical joints; its `zeros_lost` goes over the layout's, under the manifest's. The
    `zeros_lost` argument goes over all of them, under the session file's own.
    A session that is one repetition (`segmented`: the argument, the file's field or the
    manifest's) has meta["segmented"] true, and is scored whole rather than cut."""
    path = Path(path)
    if not path.is_file():
        raise SequenceError(str(path), "no such file (a session is one file)", "unreadable")
    reader = SESSION_READERS.get(path.suffix.lower())
    if reader is None:
        raise SequenceError(str(path), f"unknown session file type (known: "
                                       f"{', '.join(SESSION_READERS)})", "unknown_format")
    manifest = _manifest(path.parent, path.parent)
    layout_name = layout or manifest.get("layout")
    layout_file = layout_file or manifest.get(LAYOUT_FILE)
    mapping = load_layout(layout_file) if layout_file else None
    fields = {**(_layout(layout_name, path) if layout_name else {}),
              **(mapping.declared() if mapping else {}), **manifest,
              **({} if zeros_lost is None else {ZEROS_LOST: zeros_lost})}
    defaults = {k: fields[k] for k in (ZEROS_LOST,) if k in fields}
    session = with_declared(reader(path, defaults), fields)
    [session] = settle([to_canonical(session, mapping) if mapping else session], forced,
                       str(path))
    if isinstance(session, SequenceError):
        raise session
    if segmented or flag(manifest.get(SEGMENTED), SEGMENTED, str(path)):
        session.meta[SEGMENTED] = True
    return session
