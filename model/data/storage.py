"""Files on a local path or an object-store URI (s3://, gs://, file://), one API for both.

Built on pyarrow.fs, so S3-compatible servers are reached the way the AWS SDKs are: credentials,
region and endpoint from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_ENDPOINT_URL), the same variables deltalake reads for the Delta tables. A plain path (no
scheme) is a local file. Writes are whole-object: an object-store PUT is atomic, and a local
write goes to a temporary file renamed into place, so a reader never sees half a report.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pyarrow.fs as pafs


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


def exists(uri: str | Path) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_bytes(uri: str | Path, data: bytes) -> str:
    """Write one whole object or file (parent folders created); returns `uri` as a string. A
    local path is written as named (the OS resolves it; no resolving beforehand)."""
    fs, path = (None, str(uri)) if "://" not in str(uri) else resolve(uri)
    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
        return str(uri)
    with fs.open_output_stream(path) as stream:
        stream.write(data)
    return str(uri)


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


def list_files(uri: str | Path, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Files under a folder or prefix (recursive, sorted), as URIs of the same form as `uri`;
    hidden names (".", "_") are skipped; a file given directly is returned alone."""
    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [str(uri)]
    if info.type == pafs.FileType.NotFound:
        return []
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        name = entry.base_name
        if entry.type != pafs.FileType.File or name.startswith((".", "_")):
            continue
        if suffixes is None or name.lower().endswith(suffixes):
            found.append(_joined(uri, entry.path[len(path):]))
    return sorted(found)


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
