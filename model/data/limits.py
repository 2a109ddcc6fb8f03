"""Bounds on one input file (model.settings.InputLimits), checked before the file is read whole.

A file larger than `max_file_mb` on disk, text (or a gzip'd file) longer than `max_text_mb` once
decompressed, or poses declared with more than `max_frames` frames or `max_values` coordinates
are refused with a SequenceError of kind "too_large" that names the file and the limit, so a
batch goes on and memory stays bounded whatever one file holds; a text field longer than
`max_field_chars` is refused as "bad_field" (`check_field_length`). JSON text is also refused before
it is parsed when it holds more values than the limits' poses would (`check_json_values`): more
numbers than max_values and max_frames, or more lists, objects and strings than poses of its
numbers; a parser makes an object of every value, so `[],[],...`, `{},{},...` or `"","",...`
under the text limit would take gigabytes.
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


def check_field_length(src: str, name: str, chars: int, limits: InputLimits | None = None
                       ) -> None:
    """SequenceError (bad_field) when a text field `name` of `chars` characters is longer than
    max_field_chars: a field is copied into every output, so its length is bounded too."""
    limits = limits or input_limits()
    if chars > limits.max_field_chars:
        raise SequenceError(src, f"{name} is {chars:,} characters long, over the limit of "
                                 f"{limits.max_field_chars:,} (POSECOACH_LIMIT_MAX_FIELD_CHARS)",
                            "bad_field")


#: Bytes that begin a JSON value other than a string, a list or an object: a number, null, NaN,
#: Infinity, true or false; each becomes "0" for counting.
_VALUE_STARTS = bytes.maketrans(b"-0123456789nNItf", b"0" * 16)
_WHITESPACE = b" \t\r\n"
#: Lists, objects and strings few enough to parse whatever they hold (under 100 MiB of them;
#: JSON nested 100,000 deep is left to the parser, which refuses it as too_deep), and numbers
#: allowed beyond what the limits' poses and timestamps hold (the fields).
FREE_JSON_VALUES = 1 << 20
_CHUNK = 1 << 24  # bytes of text counted at a time


def _numbers(text: bytes) -> int:
    """The values in a piece of JSON text other than strings, lists and objects: the bytes that
    begin one after a `[`, `,` or `:` (whitespace aside)."""
    compact = text.translate(_VALUE_STARTS, _WHITESPACE)
    return sum(compact.count(sep + b"0") for sep in (b"[", b",", b":"))


def _containers(text: bytes) -> int:
    """The lists, objects and strings (keys too) in JSON text, at most: its `[`, its `{` and
    half its `"` (any inside a string counted too)."""
    return text.count(b"[") + text.count(b"{") + text.count(b'"') // 2


def check_json_values(src: str, text: bytes, limits: InputLimits | None = None) -> None:
    """SequenceError (too_large) when JSON text holds more values than the limits' poses would,
    counted on the raw bytes before any parser makes an object of each: more numbers than
    max_values coordinates and max_frames timestamps, or more lists, objects and strings than
    poses of its numbers (T (x, y, z) joints in F <= T frames are 1 + F + T lists for 3T
    numbers: at most two for every three). Text that passes costs no more to parse than poses
    of its size, whatever its shape. Numbers are counted 16 MiB at a time; one split between
    two of them goes uncounted (stricter, by a few)."""
    limits = limits or input_limits()
    most_numbers = limits.max_values + limits.max_frames + FREE_JSON_VALUES
    containers = _containers(text)
    if containers <= FREE_JSON_VALUES and len(text) // 2 <= most_numbers:
        return  # a number takes two bytes at least (a separator and its first)
    numbers = sum(_numbers(text[i:i + _CHUNK]) for i in range(0, len(text), _CHUNK))
    if numbers > most_numbers:
        raise _refuse(src, f"{numbers:,} JSON numbers", f"{limits.max_values:,} coordinates and "
                                                        f"{limits.max_frames:,} frame times")
    if containers > FREE_JSON_VALUES + 2 * numbers // 3:
        raise SequenceError(src, f"{containers:,} JSON lists, objects and strings for {numbers:,} "
                                 "numbers, more than poses of (x, y, z) joints hold (two lists "
                                 "for every three numbers); refused before parsing", TOO_LARGE)
