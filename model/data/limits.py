"""Bounds on one input file (model.settings.InputLimits), checked before the file is read whole.

A file larger than `max_file_mb` on disk, text (or a gzip'd file) longer than `max_text_mb` once
decompressed, or poses declared with more than `max_frames` frames or `max_values` coordinates
are refused with a SequenceError of kind "too_large" that names the file and the limit, so a
batch goes on and memory stays bounded whatever one file holds.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from model.data.sequence import SequenceError
from model.settings import InputLimits, load_limits

MIB = 1 << 20
TOO_LARGE = "too_large"


def input_limits() -> InputLimits:
    """The limits as the environment sets them now (model.settings.load_limits)."""
    return load_limits()


def _refuse(src: str, what: str, limit: str) -> SequenceError:
    return SequenceError(src, f"{what}, over the limit of {limit} (POSECOACH_LIMIT_*)", TOO_LARGE)


def check_file_size(path: Path, limits: InputLimits | None = None) -> None:
    """SequenceError when the file on disk is larger than max_file_mb."""
    limits = limits or input_limits()
    try:
        size = Path(path).stat().st_size
    except OSError as e:
        raise SequenceError(str(path), f"cannot read the file ({e.strerror})", "unreadable") from e
    if size > limits.max_file_mb * MIB:
        raise _refuse(str(path), f"the file has {size / MIB:.0f} MiB", f"{limits.max_file_mb} MiB")


def read_bytes_bounded(path: Path, limits: InputLimits | None = None) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz, never more than max_text_mb of
    them decompressed (a gzip bomb stops there) nor a file over max_file_mb on disk."""
    limits = limits or input_limits()
    path = Path(path)
    check_file_size(path, limits)
    cap = limits.max_text_mb * MIB
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read(cap + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(cap + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise SequenceError(str(path), f"cannot read the file ({e})", "unreadable") from e
    if len(data) > cap:
        raise _refuse(str(path), "the content is longer", f"{limits.max_text_mb} MiB")
    return data


def check_poses_size(src: str, shape: tuple[int, ...], limits: InputLimits | None = None) -> None:
    """SequenceError when poses of this shape (frames first) are too many frames or values."""
    limits = limits or input_limits()
    frames = int(shape[0]) if shape else 0
    values = 1
    for n in shape:
        values *= int(n)
    if frames > limits.max_frames:
        raise _refuse(src, f"{frames:,} frames", f"{limits.max_frames:,} frames")
    if values > limits.max_values:
        raise _refuse(src, f"{values:,} coordinates", f"{limits.max_values:,}")
