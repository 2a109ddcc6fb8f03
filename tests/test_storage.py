"""Local writes through model/data/storage.py: files come out with the mode a plain open() gives
them (the umask's), and a write that fails leaves no temporary file behind."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from model.data import storage
from model.data.formats import write_session
from model.data.synth import make_session


@pytest.fixture(params=[0o022, 0o027], ids=oct)
def umask(request) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_written_files_follow_the_umask(tmp_path, umask):
    report = storage.write_text(tmp_path / "out" / "index.html", "<html></html>")
    seq, _ = make_session("u1", "squat", ["correct"], seed=1)
    session = write_session(seq, tmp_path / "out" / "s.npz")
    for path in (report, session):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    taken = tmp_path / "report.json"
    taken.mkdir()
    (taken / "inside").write_text("x")  # the rename onto a folder that is not empty fails
    with pytest.raises(OSError):
        storage.write_text(taken, "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
