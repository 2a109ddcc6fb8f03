"""Two score runs of one folder at once (forced to overlap at their first write by a barrier)
leave each session with one report, one ledger entry and its repetitions once in the table; a
run killed (SIGKILL) after some blocks were recorded leaves no reader process behind and is
resumed by a rerun that scores only what was not recorded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable
from score_fixtures import INFO, save_tiny_model, write_uploads

import flows.score as score_module
from flows.score import LEDGER, TABLE, read_ledger, score_folder

SESSIONS = 10
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("concurrency")
    return save_tiny_model(work / "model"), write_uploads(work / "up", SESSIONS, seed=5)


def recorded(out: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Ledger keys and (key, repetition) pairs of the table, as stored (duplicates kept)."""
    ledger = read_ledger(str(out), ["key"])
    keys = [] if ledger is None else ledger.column("key").to_pylist()
    if not DeltaTable.is_deltatable(str(out / TABLE)):
        return keys, []
    table = DeltaTable(str(out / TABLE)).to_pyarrow_table(columns=["key", "rep"])
    return keys, list(zip(table.column("key").to_pylist(), table.column("rep").to_pylist(),
                          strict=True))


def assert_each_session_once(out: Path) -> None:
    keys, reps = recorded(out)
    assert len(keys) == len(set(keys)) == SESSIONS
    assert len(reps) == len(set(reps)) and {k for k, _ in reps} == set(keys)
    reports = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(reports) == SESSIONS
    assert len(reps) == sum(r["summary"]["repetitions"] for r in reports)


def test_two_runs_at_once_record_each_session_once(setup, tmp_path, monkeypatch):
    model_dir, uploads = setup
    out = tmp_path / "reports"
    barrier = threading.Barrier(2, timeout=120)
    waited: set[int] = set()
    merge = score_module.merge_new

    def overlapping(uri, table, keys):
        if threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            barrier.wait()
        merge(uri, table, keys)

    monkeypatch.setattr(score_module, "merge_new", overlapping)
    results: list = []

    def run() -> None:
        results.append(score_folder(str(uploads), str(out), model_dir, INFO))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 2 and len(waited) == 2, "the runs did not overlap"
    assert all(r.accounted and r.errors == 0 for r in results)
    assert_each_session_once(out)
    again = score_folder(str(uploads), str(out), model_dir, INFO)
    assert (again.skipped, again.reports) == (SESSIONS, 0)


CHILD = """
import sys, time
from pathlib import Path
import flows.score as s
from score_fixtures import INFO
merge = s.merge_new
def slowly(uri, table, keys):
    merge(uri, table, keys)
    time.sleep(0.5)
s.merge_new = slowly
s.PARALLEL_MIN_SESSIONS = 1
s.score_folder(sys.argv[1], sys.argv[2], Path(sys.argv[3]), INFO, block_sessions=2,
               block_seconds=0)
"""


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_killed_run_is_resumed_scoring_only_what_was_not_recorded(setup, tmp_path):
    model_dir, uploads = setup
    out = tmp_path / "reports"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(uploads), str(out),
                              str(model_dir)], env=env)
    deadline = time.monotonic() + 300
    try:
        while len(recorded(out)[0]) < 4:
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no block was recorded in time"
            time.sleep(0.05)
        readers = children(child.pid)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    assert readers, "the uploads were not read by worker processes"
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in readers):
        assert time.monotonic() < deadline, "reader processes outlived the killed run"
        time.sleep(0.1)
    done = len(set(recorded(out)[0]))
    assert 0 < done < SESSIONS
    assert (out / LEDGER).is_dir()
    rerun = score_folder(str(uploads), str(out), model_dir, INFO)
    assert 0 < rerun.skipped < SESSIONS and rerun.skipped == done
    assert rerun.reports == SESSIONS - done and rerun.accounted
    assert_each_session_once(out)
