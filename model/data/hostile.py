"""Hostile and broken inputs, for the tests, the demos and the reliability figures
(docs/figures/corpus.py): values that try to climb out of folders or inject markup, and
resource bombs, files that inflate to gigabytes, nest JSON 100,000 deep or hold 44 million
empty JSON lists.

The bombs are written without ever holding what they inflate to: each repeats one deflate block
that stands alone, so a 2.4 GB NPZ is written in a second as 2 MB.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model.data.formats import coordinate_columns

HOSTILE_NAMES: tuple[str, ...] = (
    "..", ".", "../../../../tmp/owned", "/etc/passwd", "C:\\Windows\\owned", "a/b", "a\\b",
    "nul\x00byte", "ctrl\x01\x1b[31m\x7f\x9b", "x" * 300, "é" * 300, "日本語のセッション",
    "🏋️‍♀️", "<script>alert(1)</script>", "\"><img src=x onerror=alert(1)>",
    "' OR '1'='1", "_scored", ".hidden", "-rf", "a b", "a?b", "a*b", "a_b", "A_B",
    "line\nbreak", "tab\there", "%2e%2e%2f", "\u202eevil", "\ufeffbom",
)
"""Values for every string field of an upload: climbing and absolute paths, both slashes, NUL
and control characters, 300 characters, unicode, HTML/JS, SQL, hidden names, and names that
collide once slugged (COLLIDING)."""
COLLIDING: tuple[str, ...] = ("a b", "a?b", "a*b", "a_b")
BOMB_FRAMES = 40 * (1 << 18)  # 10,485,760 frames
_REPOSITORY = Path(__file__).resolve().parents[2]
_CHILD = """
import json, sys
from pathlib import Path
from model.data.readers import iter_sequences, read_session
from model.data.sequence import SequenceError
mode, path = sys.argv[1:]
try:
    items = [read_session(Path(path))] if mode == "session" else list(iter_sequences(Path(path)))
except SequenceError as exc:
    items = [exc]
print(json.dumps([getattr(item, "kind", "accepted") for item in items]))
"""
_JOINTS = 19  # ec3d19


@dataclass(frozen=True)
class Bomb:
    """A resource bomb: its file, read as a "labelled" file or a "session", and the kind it must
    be refused as."""

    problem: str
    path: Path
    mode: str
    kind: str


def _deflated(prefix: bytes, chunk: bytes, times: int, suffix: bytes = b"") -> tuple[bytes, int]:
    """Raw deflate of prefix + chunk * times + suffix, made without inflating it: the chunk is
    compressed once to a block that stands alone (a full flush) and repeated; and its CRC-32."""
    def block(data: bytes) -> bytes:
        z = zlib.compressobj(9, zlib.DEFLATED, -15)
        return z.compress(data) + z.flush(zlib.Z_FULL_FLUSH)

    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = zlib.crc32(prefix)
    for _ in range(times):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(suffix, crc)
    return block(prefix) + block(chunk) * times + block(suffix) + end, crc


def _gzip_bomb(path: Path, prefix: bytes, chunk: bytes, times: int, suffix: bytes = b"") -> Path:
    body, crc = _deflated(prefix, chunk, times, suffix)
    size = len(prefix) + len(chunk) * times + len(suffix)
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    path.write_bytes(head + body + struct.pack("<II", crc, size & 0xFFFFFFFF))
    return path


def _npz_bomb(path: Path) -> Path:
    """An NPZ whose `poses` (BOMB_FRAMES, 19, 3) float32 zeros inflate to 2.4 GB (2 MB on disk)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (BOMB_FRAMES, _JOINTS, 3)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    chunk = bytes(4 * _JOINTS * 3 * (1 << 18))
    body, crc = _deflated(buf.getvalue(), chunk, 40)
    size = len(buf.getvalue()) + len(chunk) * 40
    name = b"poses.npy"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(body), size,
                        len(name), 0) + name
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc,
                          len(body), size, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central),
                      len(local) + len(body), 0)
    path.write_bytes(local + body + central + end)
    return path


def _parquet_bomb(path: Path) -> Path:
    """A session Parquet of BOMB_FRAMES rows of the 57 coordinate columns, all null (1 MB on disk,
    2.4 GB as Arrow arrays)."""
    empty = pa.nulls(BOMB_FRAMES, pa.float32())
    table = pa.table({c: empty for c in coordinate_columns("ec3d19")})
    fields = {"session_id": "bomb", "skeleton": "ec3d19", "units": "m", "fps": 30.0,
              "subject": "s1", "exercise": "squat"}
    pq.write_table(table.replace_schema_metadata({b"posecoach": json.dumps(fields)}), path,
                   row_group_size=1 << 22)
    return path


def write_bombs(folder: Path) -> list[Bomb]:
    """Write the bombs under <folder>/labelled and <folder>/sessions (about 12 MB in all)."""
    labelled, sessions = Path(folder) / "labelled", Path(folder) / "sessions"
    labelled.mkdir(parents=True, exist_ok=True)
    sessions.mkdir(parents=True, exist_ok=True)
    deep = b"[" * 100_000 + b"]" * 100_000
    (labelled / "deep.json").write_bytes(deep)
    (sessions / "deep.json").write_bytes(b'{"format": "posecoach-session", "poses": ' + deep + b"}")
    row = ",".join(["0"] * _JOINTS * 3).encode() + b"\n"
    head = b"# skeleton: ec3d19\n# units: m\n# fps: 30\n# subject: s1\n# exercise: squat\n"
    _gzip_bomb(labelled / "frames.csv.gz", head + b"# label: correct\n", row * (1 << 18), 40)
    frame = b"[" + b",".join([b"[0,0,0]"] * _JOINTS) + b"]"
    sequence = (b'{"format":"posecoach-sequence","skeleton":"ec3d19","units":"m","fps":30,'
                b'"subject":"s1","exercise":"squat","label":"correct","poses":[')
    _gzip_bomb(labelled / "frames.json.gz", sequence, (frame + b",") * (1 << 16), 160,
               frame + b"]}")
    # 127 MB, under the text limit; gigabytes once parsed into lists
    _gzip_bomb(labelled / "lists.json.gz", sequence, b"[]," * (1 << 20), 42, b"[]]}")
    chunk = 1 << 24
    _gzip_bomb(labelled / "poses.pickle.gz",
               b"\x80\x04}\x8c\x05poses\x8e" + struct.pack("<Q", chunk * 160), bytes(chunk), 160,
               b"s.")
    _npz_bomb(labelled / "poses.npz")
    _npz_bomb(sessions / "poses.npz")
    _parquet_bomb(sessions / "poses.parquet")
    return [
        Bomb("JSON nested 100,000 deep", labelled / "deep.json", "labelled", "too_deep"),
        Bomb("session JSON nested 100,000 deep", sessions / "deep.json", "session", "too_deep"),
        Bomb("10M-frame gzip'd CSV (1.2 GB)", labelled / "frames.csv.gz", "labelled",
             "too_large"),
        Bomb("10M-frame gzip'd JSON (1.6 GB)", labelled / "frames.json.gz", "labelled",
             "too_large"),
        Bomb("127 MB of empty JSON lists, gzip'd", labelled / "lists.json.gz", "labelled",
             "too_large"),
        Bomb("gzip'd pickle of 2.7 GB", labelled / "poses.pickle.gz", "labelled", "too_large"),
        Bomb("NPZ of 2.4 GB, 10M frames", labelled / "poses.npz", "labelled", "too_large"),
        Bomb("session NPZ of 2.4 GB, 10M frames", sessions / "poses.npz", "session",
             "too_large"),
        Bomb("session Parquet of 2.4 GB, 10M frames", sessions / "poses.parquet", "session",
             "too_large"),
    ]


def read_in_child(mode: str, path: Path, env: dict[str, str] | None = None
                  ) -> tuple[list[str], int]:
    """Read one file in a child process as a "labelled" file or a "session": the kinds it came
    out as ("accepted" for a sequence) and the child's peak resident memory in bytes."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-c", _CHILD, mode, str(path)],
                                cwd=_REPOSITORY, stdout=subprocess.PIPE, stderr=err,
                                env={**os.environ, **(env or {})})
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            raise RuntimeError(f"reading {path} in a child failed: {err.read().decode()[-2000:]}")
    return json.loads(out), usage.ru_maxrss * 1024
