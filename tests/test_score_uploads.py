"""What the score flow does with a folder's odd contents: names that are not UTF-8, links, files of
other formats, uploads that share a session id or their bytes, and repetitions that cannot be
scored. Every input ends as a report, a skip, a duplicate or an error record naming it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from score_fixtures import INFO, save_tiny_model
from typer.testing import CliRunner

import flows.score as score_module
from flows.cli import app
from flows.cmd_score import show
from flows.score import LEDGER, TABLE, OutUnusable, check_out, merge_new, read_ledger, score_folder
from model.data.formats import write_session
from model.data.synth import make_session


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("uploads") / "model")


def upload(path: Path, seed: int, session_id: str | None = "s") -> Path:
    """A squat session at `path`: its id `session_id`, or none (the file name gives it)."""
    seq, _ = make_session("u1", "squat", ["correct", "knees_inward", "correct"], seed=seed)
    meta = {} if session_id is None else {"session_id": session_id}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_session(replace(seq, meta=meta), path)


def ledger_rows(out: Path) -> list[dict]:
    return read_ledger(str(out), ["key", "input", "report", "html"]).to_pylist()


def table_keys(out: Path) -> list[tuple[str, int]]:
    table = DeltaTable(str(out / TABLE)).to_pyarrow_table(columns=["key", "rep"])
    return list(zip(table.column("key").to_pylist(), table.column("rep").to_pylist(),
                    strict=True))


def test_odd_entries_are_error_records_and_the_rest_is_scored(model_dir, tmp_path):
    folder = tmp_path / "in"
    upload(folder / "good.json", seed=1, session_id="good")
    outside = upload(tmp_path / "outside" / "private.json", seed=2, session_id="private")
    bad_name = os.path.join(os.fsencode(folder), b"bad\xff\xfename.json")
    with open(bad_name, "wb") as handle:
        handle.write(outside.read_bytes())
    (folder / "link.json").symlink_to(outside)
    (folder / "dangling.json").symlink_to(tmp_path / "nothing.json")
    (folder / "loop").symlink_to(".")
    (folder / "inside.json").symlink_to(folder / "good.json")
    os.mkfifo(folder / "pipe.json")
    for name in ("notes.csv", "s.json.gz", "t.csv.gz", "u.parquet.gz"):
        (folder / name).write_bytes(b"1,2,3\n")
    for hidden in (".hidden.json", "_skip.csv", ".git/config", "_old/x.json"):
        (folder / hidden).parent.mkdir(exist_ok=True)
        (folder / hidden).write_text("{}")

    summary = score_folder(str(folder), str(tmp_path / "out"), model_dir, INFO)
    kinds = {Path(e["input"]).name: e["kind"] for e in summary.error_records}
    assert kinds == {"bad\\xff\\xfename.json": "bad_file_name", "link.json": "link_outside",
                     "dangling.json": "dangling_link", "pipe.json": "not_a_file",
                     "notes.csv": "unknown_format", "s.json.gz": "unknown_format",
                     "t.csv.gz": "unknown_format", "u.parquet.gz": "unknown_format"}
    assert all(e["reason"].startswith(e["input"]) for e in summary.error_records)
    assert (summary.reports, summary.duplicates, summary.sessions) == (1, 1, 10)
    assert summary.duplicate_files == [{"input": str(folder / "inside.json"),
                                        "of": str(folder / "good.json")}]
    assert summary.accounted
    errors = (tmp_path / "out" / "_errors.jsonl").read_text().splitlines()
    assert len(errors) == len(kinds)


def test_a_fifo_scored_by_its_own_name_is_an_error_record_and_never_opened(model_dir, tmp_path):
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    summary = score_folder(str(pipe), str(tmp_path / "out"), model_dir, INFO)
    assert [(e["input"], e["kind"]) for e in summary.error_records] == [(str(pipe), "not_a_file")]
    assert (summary.sessions, summary.errors) == (1, 1) and summary.accounted


def test_a_repetition_that_cannot_be_scored_is_counted_apart(model_dir, tmp_path,
                                                            monkeypatch, capsys):
    upload(tmp_path / "in" / "a.json", seed=3, session_id="a")
    cut = score_module.score_cut

    def first_fails(model, sessions, **kwargs):
        scored = cut(model, sessions, **kwargs)
        for s in scored:
            s.results[0] = replace(s.results[0], predicted=None, label=None, confidence=None,
                                   unsure=None, corrected=None, error="a.json: rep 0: all NaN",
                                   error_kind="no_joints")
        return scored

    monkeypatch.setattr(score_module, "score_cut", first_fails)
    summary = score_folder(str(tmp_path / "in"), str(tmp_path / "out"), model_dir, INFO)
    assert summary.failed_repetitions == 1 and summary.repetitions >= 2
    assert None not in summary.mistakes and "null" not in json.dumps(summary.mistakes)
    assert sum(summary.mistakes.values()) + summary.unsure + 1 <= summary.repetitions
    [report] = [json.loads(Path(r).read_text()) for r in summary.report_files]
    assert report["summary"]["failed"] == 1
    overview = (tmp_path / "out" / "index.html").read_text()
    assert "1 repetitions not scored" in overview and "a.json: rep 0: all NaN" in overview
    show({**summary.to_dict(), "reference_caution": None})
    assert "repetitions not scored: 1" in capsys.readouterr().err


def test_uploads_of_one_session_id_keep_their_own_reports(model_dir, tmp_path):
    folder = tmp_path / "in"
    for n, name in enumerate(["x.json", "x.v2.json", "x.npz", "sub/x.json"]):
        upload(folder / name, seed=10 + n, session_id=None)
    upload(folder / "one.json", seed=20, session_id="same")
    upload(folder / "two.json", seed=21, session_id="same")
    out = tmp_path / "out"

    summary = score_folder(str(folder), str(out), model_dir, INFO)
    assert (summary.reports, summary.errors) == (6, 0) and summary.accounted
    rows = ledger_rows(out)
    assert len({r["report"] for r in rows}) == len({r["html"] for r in rows}) == 6
    for row in rows:
        report = json.loads(Path(row["report"]).read_text())
        assert report["source"] == row["input"]
        assert row["html"] == row["report"].removesuffix(".json") + ".html"
        assert report["repetitions"][0]["corrected_motion"]["file"] == (
            row["report"].removesuffix(".json") + ".npz")
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    again = score_folder(str(folder), str(out), model_dir, INFO)
    assert (again.skipped, again.reports) == (6, 0)
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == files


def test_the_same_bytes_under_two_names_are_scored_once(model_dir, tmp_path):
    folder = tmp_path / "in"
    first = upload(folder / "a.json", seed=4, session_id="dup")
    shutil.copy(first, folder / "copy of a.json")
    (folder / "sub").mkdir()
    shutil.copy(first, folder / "sub" / "a.json")
    upload(folder / "b.json", seed=5, session_id="b")
    out = tmp_path / "out"

    summary = score_folder(str(folder), str(out), model_dir, INFO)
    assert (summary.reports, summary.duplicates, summary.sessions) == (2, 2, 4)
    assert {d["of"] for d in summary.duplicate_files} == {str(first)}
    keys = [r["key"] for r in ledger_rows(out)]
    assert len(keys) == len(set(keys)) == 2
    reps = table_keys(out)
    assert len(reps) == len(set(reps)) == summary.repetitions
    assert "copy of a.json" in (out / "index.html").read_text()
    again = score_folder(str(folder), str(out), model_dir, INFO)
    assert (again.skipped, again.duplicates, again.reports) == (2, 2, 0) and again.accounted


def test_reports_written_inside_the_folder_scored_are_not_inputs(model_dir, tmp_path):
    folder = tmp_path / "in"
    upload(folder / "a.json", seed=6, session_id="a")
    out = folder / "reports"
    first = score_folder(str(folder), str(out), model_dir, INFO)
    assert (first.sessions, first.reports, first.errors) == (1, 1, 0)
    again = score_folder(str(folder), str(out), model_dir, INFO)
    assert (again.sessions, again.skipped, again.errors) == (1, 1, 0) and again.accounted


@pytest.mark.parametrize("others", [1, 2])
def test_one_rule_says_a_session_disagrees_with_its_exercise(model_dir, tmp_path, monkeypatch,
                                                             capsys, others):
    """More than half of the scored repetitions taken for another exercise, the same on the
    report, the page, the summary and the terminal; each such repetition says so on the page."""
    upload(tmp_path / "in" / "a.json", seed=3, session_id="a")
    cut = score_module.score_cut

    def taken_for_lunges(model, sessions, **kwargs):
        scored = cut(model, sessions, **kwargs)
        for s in scored:
            s.results[:] = [replace(r, predicted=f"{'lunge' if k < others else 'squat'}/correct",
                                    exercise_mismatch=k < others)
                            for k, r in enumerate(s.results)]
        return scored

    monkeypatch.setattr(score_module, "score_cut", taken_for_lunges)
    summary = score_folder(str(tmp_path / "in"), str(tmp_path / "out"), model_dir, INFO)
    [report] = [json.loads(Path(r).read_text()) for r in summary.report_files]
    scored = report["summary"]["repetitions"] - report["summary"]["failed"]
    disagrees = others > scored / 2
    assert scored == 3
    assert report["summary"]["exercise_disagreement"] is disagrees
    assert summary.exercise_disagreements == (["a"] if disagrees else [])
    page = next((tmp_path / "out").glob("a-*.html")).read_text()
    assert page.count("took this repetition for a lunge, not a squat") == others
    assert ("Most repetitions do not look like a squat" in page) is disagrees
    show({**summary.to_dict(), "reference_caution": None})
    assert ("another exercise than the declared one in: a" in capsys.readouterr().err) is disagrees


def test_the_review_queue_holds_absolute_sources_and_is_not_written_empty(model_dir, tmp_path,
                                                                          monkeypatch, capsys):
    upload(tmp_path / "in" / "a.json", seed=3, session_id="a")
    monkeypatch.chdir(tmp_path)
    summary = score_folder("in", str(tmp_path / "out"), model_dir, INFO)
    rows = [json.loads(line) for line in Path(summary.review["jsonl"]).read_text().splitlines()]
    assert rows and {r["source"] for r in rows} == {str(tmp_path / "in" / "a.json")}
    monkeypatch.setenv("POSECOACH_REVIEW_AUDIT", "0")
    monkeypatch.setattr(score_module, "score_cut", no_flags(score_module.score_cut))
    empty = score_folder(str(tmp_path / "in"), str(tmp_path / "out2"), model_dir, INFO)
    assert empty.review is None and not (tmp_path / "out2" / "review").exists()
    show({**empty.to_dict(), "reference_caution": None})
    assert "review queue" not in capsys.readouterr().err


def no_flags(cut):
    """score_cut with every repetition confident and of its declared exercise."""
    def confident(model, sessions, **kwargs):
        scored = cut(model, sessions, **kwargs)
        for s in scored:
            s.results[:] = [replace(r, unsure=False, exercise_mismatch=False) for r in s.results]
        return scored
    return confident


def out_problem(tmp_path: Path, case: str) -> Path:
    """An --out that cannot take the reports: a file, a folder under a file, or a path whose
    characters deltalake reads as a URL's."""
    (tmp_path / "file").write_text("x")
    return tmp_path / {"a file": "file", "under a file": "file/sub", "bracket": "out[1]",
                       "percent": "out%20x"}[case]


@pytest.mark.parametrize(("case", "reason"), [
    ("a file", "file is a file, not a folder"),
    ("under a file", "file is a file, not a folder"),
    ("bracket", "its path holds '['"),
    ("percent", "its path holds '%20'"),
])
def test_an_out_that_cannot_take_the_reports_is_refused_before_any_work(tmp_path, case, reason):
    out = out_problem(tmp_path, case)
    with pytest.raises(OutUnusable) as refused:
        check_out(str(out))
    assert str(refused.value).startswith(f"cannot write reports to {out}: ")
    assert reason in str(refused.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    check_out(str(tmp_path / "new" / "reports"))  # a folder that can take them is made
    assert (tmp_path / "new" / "reports").is_dir()


@pytest.mark.parametrize("table", ["_ledger", "repetitions"])
def test_an_out_with_a_file_where_a_table_goes_is_refused_before_any_work(tmp_path, table):
    out = tmp_path / "out"
    out.mkdir()
    (out / table).write_text("not a table")
    with pytest.raises(OutUnusable, match=f"{out / table} is not a folder, and the run keeps "
                                          f"its {table} table there"):
        check_out(str(out))
    assert sorted(p.name for p in out.iterdir()) == [table]


@pytest.mark.parametrize("case", ["under a file", "bracket"])
def test_the_cli_refuses_an_unusable_out_naming_it(tmp_path, prefect_api, case):
    out = out_problem(tmp_path, case)
    upload(tmp_path / "in" / "a.json", seed=1)
    done = CliRunner().invoke(app, ["score", str(tmp_path / "in"), "--out", str(out)])
    assert done.exit_code == 1 and "Traceback" not in done.output
    said = "".join(done.output.split())  # the terminal's line breaks taken out
    assert "".join(f"error: cannot write reports to {out}:".split()) in said
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in"]


def test_a_merge_that_fails_for_another_reason_than_a_conflict_is_not_retried(tmp_path,
                                                                              monkeypatch):
    (tmp_path / TABLE).write_text("not a table")
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with pytest.raises(OSError, match="Not a directory"):
        merge_new(str(tmp_path / TABLE), pa.table({"key": ["a"]}), ("key",))
    assert waits == []


def test_a_write_that_fails_mid_run_ends_it_naming_the_folder_with_what_was_recorded(
        model_dir, tmp_path, monkeypatch):
    for n in range(2):
        upload(tmp_path / "in" / f"{n}.json", seed=n, session_id=str(n))
    out = tmp_path / "out"
    merge, merges = score_module.merge_new, []

    def disk_fills_up(uri, table, keys):  # the second session's table merge: no space left
        merges.append(uri)
        if len(merges) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        merge(uri, table, keys)

    monkeypatch.setattr(score_module, "merge_new", disk_fills_up)
    with pytest.raises(OutUnusable, match=f"^cannot write reports to {out}: No space left on "
                       "device; recorded before it: 1 sessions scored, 0 error records"):
        score_folder(str(tmp_path / "in"), str(out), model_dir, INFO, block_sessions=1,
                     block_seconds=0)
    assert merges[1].endswith(LEDGER) and len(ledger_rows(out)) == 1
    monkeypatch.setattr(score_module, "merge_new", merge)
    rerun = score_folder(str(tmp_path / "in"), str(out), model_dir, INFO)
    assert (rerun.skipped, rerun.reports) == (1, 1) and rerun.accounted
