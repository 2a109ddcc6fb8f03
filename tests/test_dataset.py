"""The Delta dataset's promises: merge on sequence_id, versions, delete, restore, compaction,
atomic commits under SIGKILL and concurrent writers (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from model.data import dataset as dataset_module
from model.data.dataset import Dataset
from model.data.sequence import Sequence, SequenceError

ROOT = Path(__file__).resolve().parents[1]

# A plain writer process: writes `batches` batches of `size` distinct sequences (seeded by
# `tag`), printing "begin i" before and "done i" after each commit.
WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from model.data.dataset import Dataset
    from model.data.sequence import Sequence

    root, tag, batches, size, frames = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    shared = len(sys.argv) > 6
    ds = Dataset("w", root=root)
    for b in range(batches):
        rng = np.random.default_rng([b, size, frames] if shared else [sum(tag.encode()), b])
        seqs = [Sequence(poses=rng.normal(0, 0.3, (frames, 19, 3)).astype(np.float32),
                         subject=f"{tag if not shared else 'both'}", exercise="squat",
                         label="correct", rep=b * size + i) for i in range(size)]
        print("begin", b, flush=True)
        ds.write(seqs)
        print("done", b, flush=True)
""")


def writer(root: Path, tag: str, batches: int, size: int, frames: int = 30,
           shared: bool = False) -> subprocess.Popen:
    args = [sys.executable, "-c", WRITER, str(root), tag, str(batches), str(size), str(frames)]
    return subprocess.Popen(args + (["shared"] if shared else []), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def make(subject: str, rep: int, exercise: str = "squat", label: str = "correct",
         seed: int = 0) -> Sequence:
    rng = np.random.default_rng([seed, rep])
    return Sequence(poses=rng.normal(0, 0.3, (20, 19, 3)).astype(np.float32), subject=subject,
                    exercise=exercise, label=label, rep=rep, source=f"{subject}-{rep}")


@pytest.fixture()
def ds(tmp_path: Path) -> Dataset:
    return Dataset("t", root=str(tmp_path))


def test_write_read_roundtrip_keeps_poses_and_fields(ds: Dataset) -> None:
    seq = make("s1", 3, "lunge", "knee_passes_toe")
    seq.poses[2, 4] = np.nan
    seq.meta["session_id"] = "abc"
    assert ds.version() is None
    result = ds.write([seq], note="one")
    assert (result.inserted, result.duplicates, result.updated) == (1, 0, 0)
    [back] = ds.read()
    assert back.sequence_id == seq.sequence_id
    np.testing.assert_array_equal(back.poses, seq.poses)
    assert (back.subject, back.exercise, back.label, back.rep, back.meta) == (
        "s1", "lunge", "knee_passes_toe", 3, {"session_id": "abc"})
    assert ds.history()[0]["note"] == "one"


def test_reingest_adds_nothing_and_relabel_updates_in_new_version(ds: Dataset) -> None:
    seqs = [make("s1", i) for i in range(4)]
    first = ds.write(seqs)
    again = ds.write(seqs + seqs[:1])
    assert (again.inserted, again.duplicates, again.updated) == (0, 5, 0)
    assert again.version == first.version
    relabel = ds.write([seqs[0].with_label("knees_inward")])
    assert (relabel.inserted, relabel.updated) == (0, 1)
    assert relabel.version == first.version + 1
    assert ds.count() == 4
    assert [s.label for s in ds.read(labels=["knees_inward"])] == ["knees_inward"]
    assert {s.label for s in ds.read(version=first.version)} == {"correct"}


def test_filters_select_exactly(ds: Dataset) -> None:
    ds.write([make(s, r, ex, lab) for s in ("s1", "s2", "s3") for r in range(2)
              for ex, lab in (("squat", "correct"), ("plank", "arched_back"))])
    assert len(ds.read()) == 12
    assert {s.exercise for s in ds.read(exercise="plank")} == {"plank"}
    got = ds.read(exercise="squat", subjects=["s1", "s3"])
    assert sorted({s.subject for s in got}) == ["s1", "s3"] and len(got) == 4
    assert len(ds.read(labels=["arched_back"], subjects=["s2"])) == 2
    assert ds.read(subjects=["nobody"]) == []


def test_every_version_readable_and_restore_undoes(ds: Dataset) -> None:
    v1 = ds.write([make("s1", i) for i in range(3)]).version
    v2 = ds.write([make("s2", i) for i in range(5)]).version
    assert (ds.count(version=v1), ds.count(version=v2)) == (3, 8)
    restored = ds.restore(v1)
    assert restored["version"] > v2 and ds.count() == 3
    assert ds.count(version=v2) == 8
    with pytest.raises(SequenceError, match="no version 99"):
        ds.restore(99)
    with pytest.raises(SequenceError, match="no readable version"):
        ds.read(version=99)


def test_a_restore_records_the_rows_it_changed(ds: Dataset) -> None:
    v1 = ds.write([make("s1", i) for i in range(3)]).version
    ds.write([make("s2", i) for i in range(5)] + [make("s1", 0, label="knees_inward")])
    restored = ds.restore(v1)
    changed = {"rows_before": 8, "rows_after": 3, "inserted": 0, "updated": 1, "deleted": 5}
    assert restored == {"restored": v1, "version": ds.version(), **changed}
    ds.delete_subject("s1")
    ds.restore(restored["version"])
    back, restore = ds.history()[0], ds.history()[2]
    assert (back["operation"], back["inserted"], back["deleted"]) == ("RESTORE", 3, 0)
    assert restore["operation"] == "RESTORE"
    assert {k: restore[k] for k in ("inserted", "updated", "deleted")} == {
        "inserted": 0, "updated": 1, "deleted": 5}
    assert restore["note"] == f"restore of version {v1}: 8 -> 3 rows"
    DeltaTable(ds.uri).restore(v1)  # recorded no figures: none claimed
    assert [ds.history()[0][k] for k in ("operation", "inserted", "updated", "deleted")] == [
        "RESTORE", None, None, None]


def test_restoring_the_current_or_a_purged_version_is_a_clear_error(ds: Dataset) -> None:
    v1 = ds.write([make(s, i) for s in ("s1", "s2") for i in range(3)]).version
    with pytest.raises(SequenceError, match=rf"version {v1} is the current version of dataset "
                                            "'t': nothing to restore"):
        ds.restore(v1)
    ds.delete_subject("s2", purge=True)
    with pytest.raises(SequenceError, match=rf"version {v1} of dataset 't' cannot be restored: "
                                            "its files were purged"):
        ds.restore(v1)
    assert ds.count() == 3 and ds.history()[0]["operation"] != "RESTORE"


def test_delete_subject_and_purge(ds: Dataset) -> None:
    v1 = ds.write([make(s, i) for s in ("s1", "s2") for i in range(3)]).version
    gone = ds.delete_subject("s2")
    assert gone["deleted"] == 3 and gone["purged_files"] == 0
    assert {s.subject for s in ds.read()} == {"s1"}
    assert ds.count(version=v1) == 6
    assert ds.delete_subject("nobody")["deleted"] == 0
    purged = ds.delete_subject("s1", purge=True)
    assert purged["deleted"] == 3 and purged["purged_files"] >= 1
    assert ds.count() == 0
    with pytest.raises(SequenceError, match="purged"):
        ds.read(version=v1)


def test_compact_merges_small_files_keeps_rows(ds: Dataset) -> None:
    for i in range(4):
        ds.write([make("s1", i)])
    before = sorted(s.sequence_id for s in ds.read())
    out = ds.compact()
    assert out["files_removed"] == 4 and out["files_added"] == 1
    assert sorted(s.sequence_id for s in ds.read()) == before


def test_missing_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SequenceError, match="no dataset 'nope'"):
        Dataset("nope", root=str(tmp_path)).read()
    with pytest.raises(ValueError, match="plain non-empty name"):
        Dataset("../x")


def test_sigkill_mid_write_leaves_table_as_before_or_after(tmp_path: Path) -> None:
    size = 40
    ds = Dataset("w", root=str(tmp_path))
    done_total = 0
    for round_, delay in enumerate((0.0, 0.05, 0.15, 0.3, 0.6)):
        proc = writer(tmp_path, f"k{round_}", batches=50, size=size, frames=120)
        assert proc.stdout is not None
        while (line := proc.stdout.readline()) and line.split() != ["begin", "1"]:
            pass
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, err
        done = 1 + rest.split().count("done")
        rows = ds.count()
        assert rows in (done_total + done * size, done_total + (done + 1) * size), (round_, rows)
        assert all(s.poses.shape == (120, 19, 3) for s in ds.read(subjects=[f"k{round_}"]))
        done_total = rows
    after = ds.write([make("s9", 0)])
    assert after.inserted == 1 and ds.count() == done_total + 1


def test_two_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    procs = [writer(tmp_path, tag, batches=6, size=5) for tag in ("a", "b")]
    procs += [writer(tmp_path, tag, batches=3, size=4, shared=True) for tag in ("c", "d")]
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
    table = Dataset("w", root=str(tmp_path)).read_table(columns=["sequence_id", "subject"])
    ids = table.column("sequence_id").to_pylist()
    assert len(ids) == len(set(ids)) == 2 * 6 * 5 + 3 * 4
    assert sorted(set(table.column("subject").to_pylist())) == ["a", "b", "both"]


def _racing(monkeypatch: pytest.MonkeyPatch, before_first_read) -> list[int]:
    """Make another writer commit (`before_first_read()`) between a write's read of the ids
    and its commit, once; return a list that counts the reads."""
    reads: list[int] = []
    read = dataset_module._labels

    def labels(table, exercises):
        reads.append(table.version())
        present = read(table, exercises)
        if len(reads) == 1:
            before_first_read()
        return present

    monkeypatch.setattr(dataset_module, "_labels", labels)
    return reads


def test_a_write_overtaken_on_its_partition_is_rerun_and_adds_no_duplicate(
        ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds.write([make("s1", 0)])
    batch = [make("s1", i) for i in range(1, 4)]
    other = Dataset(ds.name, root=ds.root)
    reads = _racing(monkeypatch, lambda: other.write(batch[:2]))
    result = ds.write(batch)
    assert len(reads) == 3 and reads[2] == reads[0] + 1  # read, the other's read, re-read
    assert (result.inserted, result.duplicates) == (1, 2)
    assert result.version == reads[0] + 2
    ids = ds.read_table(columns=["sequence_id"]).column("sequence_id").to_pylist()
    assert sorted(ids) == sorted({s.sequence_id for s in [make("s1", 0), *batch]})


def test_a_write_overtaken_on_another_partition_commits_without_rerun(
        ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds.write([make("s1", 0)])
    other = Dataset(ds.name, root=ds.root)
    reads = _racing(monkeypatch, lambda: other.write([make("s1", 0, "plank", "arched_back")]))
    result = ds.write([make("s1", 1)])
    assert len(reads) == 2 and result.inserted == 1 and result.version == reads[0] + 2
    assert ds.count() == 3


def test_a_delete_between_a_writes_read_and_commit_makes_it_rerun(
        ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds.write([make("s1", 0)])
    other = Dataset(ds.name, root=ds.root)
    reads = _racing(monkeypatch, lambda: other.delete_subject("s1"))
    result = ds.write([make("s1", 0), make("s1", 1)])
    assert len(reads) == 2 and reads[1] == reads[0] + 1
    assert (result.inserted, result.duplicates) == (2, 0)
    assert sorted(s.rep for s in ds.read()) == [0, 1]


def test_new_and_relabelled_sequences_go_in_one_commit(ds: Dataset) -> None:
    first = ds.write([make("s1", i) for i in range(3)])
    result = ds.write([make("s1", 0, label="knees_inward"), make("s1", 1), make("s1", 7)])
    assert (result.inserted, result.duplicates, result.updated) == (1, 1, 1)
    assert result.version == first.version + 1
    assert {s.rep: s.label for s in ds.read()} == {0: "knees_inward", 1: "correct",
                                                   2: "correct", 7: "correct"}
    assert (ds.history()[0]["inserted"], ds.history()[0]["updated"]) == (1, 1)


def _commit_overtaken(monkeypatch: pytest.MonkeyPatch, method: str, other_commit) -> list[int]:
    """Make `other_commit()` run just before DeltaTable.<method> commits, the first time;
    return the versions the method was called at."""
    calls: list[int] = []
    original = getattr(DeltaTable, method)

    def overtaken(table, *args, **kwargs):
        calls.append(table.version())
        if len(calls) == 1:
            other_commit()
        return original(table, *args, **kwargs)

    monkeypatch.setattr(DeltaTable, method, overtaken)
    return calls


def test_an_ingest_before_a_delete_commits_makes_the_delete_rerun(
        ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    ds.write([make("s1", 0)])
    other = Dataset(ds.name, root=ds.root)
    calls = _commit_overtaken(monkeypatch, "delete", lambda: other.write([make("s1", 1)]))
    gone = ds.delete_subject("s1")
    assert len(calls) == 2 and calls[1] == calls[0] + 1
    assert gone["deleted"] == 2 and ds.count() == 0


def test_an_ingest_before_a_restore_commits_leaves_no_duplicate(
        ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = ds.write([make("s1", 0)]).version
    ds.delete_subject("s1")
    other = Dataset(ds.name, root=ds.root)
    calls = _commit_overtaken(monkeypatch, "restore", lambda: other.write([make("s1", 0)]))
    ds.restore(v1)
    assert len(calls) == 2 and [s.rep for s in ds.read()] == [0]
