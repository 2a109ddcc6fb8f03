"""Local files through model/data/storage.py: files come out with the mode a plain open() gives
them (the umask's), a write that fails leaves no temporary file behind, and the folders whose
path deltalake would misread are told apart from those it takes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

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


@pytest.mark.parametrize("name", ["my reports", "out#1", "out?x", "réports", "100%", "a%zz"])
def test_a_folder_deltalake_takes_is_not_refused(tmp_path, name):
    table = str(tmp_path / name / "t")
    assert storage.delta_path_problem(tmp_path / name) is None
    write_deltalake(table, pa.table({"a": [1]}))
    assert DeltaTable(table).to_pyarrow_table().num_rows == 1
    assert (tmp_path / name / "t" / "_delta_log").is_dir()


@pytest.mark.parametrize("name", ["out[1]", "out]", "a^b", "a|b", "a\\b", "tab\there",
                                  "out%20x", "a%2Fb"])
def test_a_folder_deltalake_would_misread_is_refused_also_through_a_link(tmp_path, name):
    assert storage.delta_path_problem(tmp_path / name).startswith("its path holds ")
    (tmp_path / name).mkdir()
    (tmp_path / "link").symlink_to(tmp_path / name)  # deltalake resolves links
    assert storage.delta_path_problem(tmp_path / "link" / "reports") is not None
