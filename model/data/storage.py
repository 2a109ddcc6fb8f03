"""Files on a local path or an object-store URI (s3://, gs://, file://), one API for both.

Built on pyarrow.fs, so S3-compatible servers are reached the way the AWS SDKs are: credentials,
region and endpoint from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_ENDPOINT_URL), the same variables deltalake reads for the Delta tables. A plain path (no
scheme) is a local file. Writes are whole-object: an object-store PUT is atomic, and a local
write goes to a temporary file renamed into place, so a reader never sees half a report.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

import pyarrow.fs as pafs

from model.data.names import file_name_text


def is_remote(uri: str | Path) -> bool:
    """True for a URI with a scheme other than file:// (an object store)."""
    text = str(uri)
    return "://" in text and not text.startswith("file://")


def resolve(uri: str | Path) -> tuple[pafs.FileSystem, str]:
    """The filesystem that holds `uri` and the path inside it."""
    text = str(uri)
    if "://" not in text:
        return pafs.LocalFileSystem(), str(Path(text).resolve())
    return pafs.FileSystem.from_uri(text)


def absolute(uri: str | Path) -> str:
    """`uri` as it reads from any folder: a local path made absolute (links kept as named), a
    URI as it is."""
    text = str(uri)
    return text if "://" in text else os.path.abspath(text)


def inside(uri: str | Path, folder: str | Path) -> bool:
    """Whether `uri` is `folder` or under it, on one filesystem (local paths resolved)."""
    (fs, path), (folder_fs, folder_path) = resolve(uri), resolve(folder)
    return type(fs) is type(folder_fs) and (
        path == folder_path or path.startswith(folder_path.rstrip("/") + "/"))


def join(base: str | Path, *parts: str) -> str:
    """`base` and `parts` joined with "/", the scheme of `base` kept; ValueError for a part that
    would climb out of `base` (a `.` or `..` segment, a backslash, a NUL: names from uploads go
    through model.data.names first)."""
    for part in parts:
        if "\\" in part or "\x00" in part or {".", ".."} & set(part.split("/")):
            raise ValueError(f"{part!r} is not a plain name under {base}")
    return _joined(base, *parts)


def _joined(base: str | Path, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts)])


#: What deltalake (1.6) cannot take in a local table's path: it reads the path as a URL, so these
#: characters make it panic ("Invalid object store url") or look elsewhere, and a %xx is decoded
#: when the table is read but not when it is written.
_NOT_FOR_DELTA = re.compile(r"[\x00-\x1f\x7f\[\]^|\\]|%[0-9A-Fa-f]{2}")


def delta_path_problem(uri: str | Path) -> str | None:
    """Why deltalake cannot keep Delta tables in the local folder `uri` (its path as deltalake
    sees it, links resolved), or None; None for an object store."""
    if is_remote(uri):
        return None
    found = _NOT_FOR_DELTA.search(resolve(uri)[1])
    if found is None:
        return None
    return (f"its path holds {found.group()!r}, which deltalake cannot take in a Delta table's "
            "path (it reads the path as a URL); choose a folder without [ ] ^ | \\, %xx or "
            "control characters")


def writable_folder(uri: str | Path) -> None:
    """Make the local folder `uri` (and its parents) unless it is there, and create a file in it
    (removed at once): OSError saying why it cannot hold files (a file in its way, a read-only
    file system, no permission). Nothing for an object store, whose prefixes need no making."""
    if is_remote(uri):
        return
    path = Path(resolve(uri)[1])
    for above in (path, *path.parents):
        if above.exists():
            if not above.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{above} is a file, not a folder")
            break
    path.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:  # the reason, not the name of a file that was never there
        raise OSError(exc.errno, exc.strerror) from exc


def exists(uri: str | Path) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_bytes(uri: str | Path, data: bytes) -> str:
    """Write one whole object or file (parent folders created); returns `uri` as a string. A
    local path is written as named (the OS resolves it; no resolving beforehand)."""
    fs, path = (None, str(uri)) if "://" not in str(uri) else resolve(uri)
    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        _write_local(Path(path), data)
        return str(uri)
    with fs.open_output_stream(path) as stream:
        stream.write(data)
    return str(uri)


def _write_local(target: Path, data: bytes) -> None:
    """`data` into a hidden temporary file beside `target`, renamed onto it: its mode is what
    the umask leaves of 0666, as for open(); the temporary file is removed if the write or the
    rename fails (no space left, say)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(uri: str | Path, text: str) -> str:
    return write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str | Path) -> bytes:
    fs, path = resolve(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def sha256(uri: str | Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file or object, read in chunks (memory stays bounded for any size)."""
    fs, path = resolve(uri)
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def size(uri: str | Path) -> int:
    """The size in bytes of a file or object."""
    fs, path = resolve(uri)
    return fs.get_file_info(path).size


def read_text(uri: str | Path) -> str:
    return read_bytes(uri).decode("utf-8")


@dataclass(frozen=True)
class Entry:
    """One thing found under a folder or prefix: a file to read (`problem` None, its `size` in
    bytes) or one that cannot be read as a file of the folder, with `problem` (kind, reason)."""

    uri: str
    size: int = 0
    problem: tuple[str, str] | None = None


def list_entries(uri: str | Path) -> list[Entry]:
    """What is under a folder or prefix (recursive, sorted by URI), as URIs of the same form as
    `uri`; hidden names ("." or "_" first, a folder's contents too) are skipped; a file given
    directly is returned alone. Locally, links are not followed out of the folder: a link to a
    file in it is listed, a link to a folder in it is not walked (its files are listed where
    they are), and a link leading outside, a dangling link, something that is not a file (a
    FIFO, a socket, a device; `uri` itself too) or a name that is not UTF-8 come with their
    problem."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [Entry(str(uri), info.size or 0)]
    if info.type == pafs.FileType.NotFound:
        return []
    if isinstance(fs, pafs.LocalFileSystem):
        if info.type != pafs.FileType.Directory:  # a FIFO, socket or device given directly
            return [_file_entry(str(uri), os.stat(path))]
        return sorted(_local_entries(str(uri), path), key=lambda e: e.uri)
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        inner = entry.path[len(path):]
        if entry.type == pafs.FileType.File and not _hidden(inner):
            found.append(Entry(_joined(uri, inner), entry.size or 0))
    return sorted(found, key=lambda e: e.uri)


def list_files(uri: str | Path, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """The readable files of `list_entries(uri)` whose names end with one of `suffixes` (any
    case; all of them when None)."""
    return [e.uri for e in list_entries(uri) if e.problem is None
            and (suffixes is None or named(e.uri, suffixes))]


def named(uri: str, suffixes: tuple[str, ...]) -> bool:
    """Whether the name of `uri` (its last segment) ends with one of `suffixes` (any case)."""
    return uri.rsplit("/", 1)[-1].lower().endswith(suffixes)


def _hidden(inner: str) -> bool:
    return any(part.startswith((".", "_")) for part in inner.split("/") if part)


def _local_entries(uri: str, root: str) -> Iterator[Entry]:
    """`list_entries` of a local folder (`root`, resolved), walked without following links."""
    folders = [""]
    while folders:
        inner = folders.pop()
        with os.scandir(os.path.join(root, inner)) as found:
            for entry in found:
                if entry.name.startswith((".", "_")):
                    continue
                name = f"{inner}/{entry.name}" if inner else entry.name
                if file_name_text(entry.name) != entry.name:
                    yield Entry(_joined(uri, file_name_text(name)), problem=(
                        "bad_file_name", "the name is not UTF-8 text; rename it"))
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(name)
                elif entry.is_symlink():
                    yield from _link_entry(_joined(uri, name), entry.path, root)
                else:
                    yield _file_entry(_joined(uri, name), entry.stat(follow_symlinks=False))


def _link_entry(uri: str, path: str, root: str) -> Iterator[Entry]:
    """A link under `root`: the file it leads to in the folder, nothing for a folder in it (walked
    where it is), else its problem."""
    target = os.path.realpath(path)
    if not os.path.exists(target):
        yield Entry(uri, problem=("dangling_link", f"a link to {target}, which does not exist"))
    elif os.path.commonpath([root, target]) != root:
        yield Entry(uri, problem=("link_outside", f"a link to {target}, outside the folder "
                                  "scored; links are not followed out of it"))
    elif not os.path.isdir(target):
        yield _file_entry(uri, os.stat(target))


def _file_entry(uri: str, stat: os.stat_result) -> Entry:
    if not S_ISREG(stat.st_mode):
        return Entry(uri, problem=("not_a_file", "not a regular file (a FIFO, socket or "
                                   "device); only files are read"))
    return Entry(uri, stat.st_size)


def upload_dir(folder: str | Path, uri: str | Path) -> str:
    """Copy a local folder (e.g. a saved model) to `uri`; returns `uri` as a string."""
    fs, path = resolve(uri)
    pafs.copy_files(str(Path(folder).resolve()), path,
                    source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    return str(uri)


def download_dir(uri: str | Path, folder: str | Path) -> Path:
    """Copy the folder or prefix at `uri` to a local folder; returns the local folder."""
    fs, path = resolve(uri)
    dest = Path(folder)
    dest.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(dest.resolve()), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    return dest
