"""Resource bombs: files that decompress to gigabytes, declare ten million frames or nest JSON
100,000 deep are refused before they are read whole, each with its kind; a child process reading
any one of them peaks under 2 GiB; a batch holding them goes on, and ingest quarantines them."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.ingest import ingest_flow, quarantine_dir, read_errors
from model.data.formats import coordinate_columns, write_sequences_json
from model.data.readers import iter_sequences, read_session
from model.data.sequence import SequenceError
from model.data.synth import make_dataset

ROOT = Path(__file__).resolve().parents[1]
GIB = 1 << 30
FRAMES = 40 * (1 << 18)  # 10,485,760 frames
JOINTS = 19  # ec3d19
CHILD = """
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
    """An NPZ whose `poses` (FRAMES, 19, 3) float32 zeros inflate to 2.4 GB (2 MB on disk)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (FRAMES, JOINTS, 3)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    chunk = bytes(4 * JOINTS * 3 * (1 << 18))
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
    """A session Parquet of FRAMES rows of the 57 coordinate columns, all null (1 MB on disk,
    2.4 GB as Arrow arrays)."""
    empty = pa.nulls(FRAMES, pa.float32())
    table = pa.table({c: empty for c in coordinate_columns("ec3d19")})
    fields = {"session_id": "bomb", "skeleton": "ec3d19", "units": "m", "fps": 30.0,
              "subject": "s1", "exercise": "squat"}
    pq.write_table(table.replace_schema_metadata({b"posecoach": json.dumps(fields)}), path,
                   row_group_size=1 << 22)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, tuple[Path, str, str]]:
    """name -> (file, "labelled" or "session", expected kind)."""
    folder = tmp_path_factory.mktemp("bombs")
    labelled, sessions = folder / "labelled", folder / "sessions"
    labelled.mkdir()
    sessions.mkdir()
    deep = b"[" * 100_000 + b"]" * 100_000
    (labelled / "deep.json").write_bytes(deep)
    (sessions / "deep.json").write_bytes(b'{"format": "posecoach-session", "poses": ' + deep + b"}")
    row = ",".join(["0"] * JOINTS * 3).encode() + b"\n"
    head = b"# skeleton: ec3d19\n# units: m\n# fps: 30\n# subject: s1\n# exercise: squat\n"
    _gzip_bomb(labelled / "frames.csv.gz", head + b"# label: correct\n", row * (1 << 18), 40)
    frame = b"[" + b",".join([b"[0,0,0]"] * JOINTS) + b"]"
    _gzip_bomb(labelled / "frames.json.gz",
               b'{"format":"posecoach-sequence","skeleton":"ec3d19","units":"m","fps":30,'
               b'"subject":"s1","exercise":"squat","label":"correct","poses":[',
               (frame + b",") * (1 << 16), 160, frame + b"]}")
    chunk = 1 << 24
    _gzip_bomb(labelled / "poses.pickle.gz",
               b"\x80\x04}\x8c\x05poses\x8e" + struct.pack("<Q", chunk * 160), bytes(chunk), 160,
               b"s.")
    _npz_bomb(labelled / "poses.npz")
    _npz_bomb(sessions / "poses.npz")
    _parquet_bomb(sessions / "poses.parquet")
    return {
        "deep labelled JSON": (labelled / "deep.json", "labelled", "too_deep"),
        "deep session JSON": (sessions / "deep.json", "session", "too_deep"),
        "10M-frame gzip'd CSV": (labelled / "frames.csv.gz", "labelled", "too_large"),
        "10M-frame gzip'd JSON": (labelled / "frames.json.gz", "labelled", "too_large"),
        "2.7 GB gzip'd pickle": (labelled / "poses.pickle.gz", "labelled", "too_large"),
        "2.4 GB NPZ (labelled)": (labelled / "poses.npz", "labelled", "too_large"),
        "2.4 GB NPZ (session)": (sessions / "poses.npz", "session", "too_large"),
        "2.4 GB Parquet session": (sessions / "poses.parquet", "session", "too_large"),
    }


def _child(mode: str, path: Path, env: dict[str, str] | None = None) -> tuple[list[str], int]:
    """Read one file in a child process: (kinds it yielded, its peak RSS in bytes)."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err.decode()[-2000:]
    return json.loads(out), usage.ru_maxrss * 1024


@pytest.mark.parametrize("name", [
    "deep labelled JSON", "deep session JSON", "10M-frame gzip'd CSV", "10M-frame gzip'd JSON",
    "2.7 GB gzip'd pickle", "2.4 GB NPZ (labelled)", "2.4 GB NPZ (session)",
    "2.4 GB Parquet session"])
def test_a_bomb_is_refused_with_its_kind_and_memory_stays_bounded(bombs, name) -> None:
    path, mode, kind = bombs[name]
    kinds, peak = _child(mode, path)
    assert kinds == [kind]
    assert peak < 2 * GIB, f"{name}: peak RSS {peak / GIB:.2f} GiB"


def test_limits_are_settings(tmp_path) -> None:
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    path = write_sequences_json([seq], tmp_path / "one.json")
    assert _child("labelled", path)[0] == ["accepted"]
    frames = {"POSECOACH_LIMIT_MAX_FRAMES": str(seq.n_frames - 1)}
    assert _child("labelled", path, frames)[0] == ["too_large"]
    assert _child("labelled", path, {"POSECOACH_LIMIT_MAX_TEXT_MB": "0"})[0] == ["too_large"]


def test_the_batch_goes_on_past_every_bomb(bombs, tmp_path) -> None:
    folder = bombs["deep labelled JSON"][0].parent
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    write_sequences_json([seq], folder / "good.json")
    try:
        items = list(iter_sequences(folder))
    finally:
        (folder / "good.json").unlink()
    errors = {Path(e.source).name: e.kind for e in items if isinstance(e, SequenceError)}
    assert errors == {p.name: kind for p, mode, kind in bombs.values() if mode == "labelled"}
    assert [s.subject for s in items if not isinstance(s, SequenceError)] == [seq.subject]
    for path, mode, kind in bombs.values():
        if mode == "session":
            with pytest.raises(SequenceError) as err:
                read_session(path)
            assert err.value.kind == kind and str(path) in str(err.value)


def test_ingest_quarantines_every_bomb_with_its_kind(prefect_api, bombs) -> None:
    folder = bombs["deep labelled JSON"][0].parent
    expected = {p.name: kind for p, mode, kind in bombs.values() if mode == "labelled"}
    report = ingest_flow([str(folder)], "bombs")
    assert report.accounted and report.inserted == 0
    assert report.rejected_by_kind == {"too_large": len(expected) - 1, "too_deep": 1}
    records = read_errors(quarantine_dir("bombs"))
    assert {Path(r["file"]).name: r["kind"] for r in records} == expected
    assert all(Path(r["file"]).is_file() and r["reason"] for r in records)
