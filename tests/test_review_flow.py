"""The review loop through the service: a score run writes its review queue (JSON lines and a
CSV linking each repetition on its page); `posecoach ingest <review file>` turns the labelled
rows into dataset rows once (a second ingest counts duplicates), leaves unlabelled rows, and
gives each bad row (unknown session, frames outside the session, a label the dataset lacks, a
malformed field) an error naming its line while the good rows still go in."""

import csv
import io
import json
import re
from pathlib import Path

import pytest
from score_fixtures import INFO, save_tiny_model
from typer.testing import CliRunner

from flows.cli import app
from flows.review import fill_from_truth, ingest_review, write_review
from flows.score import score_folder
from flows.synth import write_sessions
from model.data.dataset import Dataset
from model.data.formats import write_session
from model.data.synth import make_dataset, make_session
from model.serve.sessions import read_upload

DATASET = "reviewtest"


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> tuple[dict, list[dict], Path]:
    root = tmp_path_factory.mktemp("review")
    model_dir = save_tiny_model(root / "model")
    truth = write_sessions(root, 3, seed=4, fmt=None)
    summary = score_folder(str(root / "sessions"), str(root / "out"), model_dir, INFO)
    Dataset(DATASET).write(make_dataset(n_subjects=1, reps=1, seed=9))
    return summary.review, truth, root


def test_a_score_run_writes_its_review_queue(scored):
    review, _, root = scored
    assert review["rows"] > 0
    assert Path(review["jsonl"]).parent == root / "out" / "review"
    rows = list(csv.DictReader(io.StringIO(Path(review["csv"]).read_text())))
    assert len(rows) == review["rows"] == len(Path(review["jsonl"]).read_text().splitlines())
    for r in rows:
        assert r["label"] == "" and int(r["start_frame"]) < int(r["end_frame"])
        page, anchor = r["report"].split("#")
        assert (root / "out" / "review" / page).resolve().is_file()
        assert anchor == f"rep-{int(r['rep']) + 1}"


def filled(review: dict, truth: list[dict], folder: Path) -> tuple[Path, list[dict]]:
    """The CSV with its first row labelled from the truth, then four bad labelled rows."""
    rows = list(csv.DictReader(io.StringIO(Path(review["csv"]).read_text())))
    first = rows[0]
    known = next(t for t in truth if t["session_id"] == first["session_id"])
    first["label"] = known["labels"][int(first["rep"])]
    unknown = {**first, "session_id": "nobody", "label": "correct"}
    outside = {**first, "start_frame": "100000", "end_frame": "100050", "label": "correct"}
    foreign = {**first, "label": "cartwheel"}
    broken = {**first, "rep": "second", "label": "correct"}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(first), lineterminator="\n")
    writer.writeheader()
    writer.writerows([first, *rows[1:], unknown, outside, foreign, broken])
    path = folder / "filled.csv"
    path.write_text(out.getvalue())
    return path, rows


def test_labelled_rows_go_in_once_and_bad_rows_get_errors(scored, tmp_path):
    review, truth, _ = scored
    path, rows = filled(review, truth, tmp_path)
    before = Dataset(DATASET).count()
    first = ingest_review(path, DATASET)
    assert (first.inserted, first.duplicates, first.labelled) == (1, 0, 5)
    assert first.unlabelled == len(rows) - 1
    bad = len(rows) + 2
    assert [e["line"] for e in first.errors] == [bad, bad + 1, bad + 2, bad + 3]
    reasons = [e["reason"] for e in first.errors]
    assert "not 'nobody'" in reasons[0] and "outside the session" in reasons[1]
    assert f"'cartwheel' is not one of the classes of dataset '{DATASET}' (" in reasons[2]
    assert "not a whole number" in reasons[3]
    assert all(r.startswith("session ") for r in reasons[:3])  # the line is said once, by `line`
    assert not any(re.search(r"\bline \d", r) for r in reasons)
    result = CliRunner().invoke(app, ["ingest", str(path), "--dataset", DATASET, "--json"])
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert (again["inserted"], again["duplicates"]) == (0, 1)
    ds = Dataset(DATASET)
    assert ds.count() == before + 1
    [new] = [s for s in ds.read() if "review" in s.meta]
    label = rows[0]
    assert new.label == truth_label(truth, label)
    assert new.subject == read_upload(label["source"]).subject
    assert len(new.poses) == int(label["end_frame"]) - int(label["start_frame"])
    assert new.meta["review"]["session_id"] == label["session_id"]
    assert new.meta["review"]["frames"] == [int(label["start_frame"]), int(label["end_frame"])]


def truth_label(truth: list[dict], row: dict) -> str:
    return next(t for t in truth if t["session_id"] == row["session_id"])["labels"][
        int(row["rep"])]


def test_a_formula_session_id_is_quoted_in_the_csv_and_ingested_as_it_was(tmp_path):
    """A session id a spreadsheet would run (`=HYPERLINK(...)`) starts with `'` in the review
    CSV, and still there once the demo's labeller has filled the file in; ingested, the dataset
    row keeps the id as the upload gave it."""
    hostile = '=HYPERLINK("http://x","y")'
    session, bounds = make_session("u1", "squat", ["correct", "correct"], seed=5)
    session.meta["session_id"] = hostile
    upload = write_session(session, tmp_path / "sessions" / "formula.json")
    start, end = bounds[0]
    scored = [{"session_id": hostile, "input": str(upload), "rep": 0, "frames": [start, end],
               "exercise": "squat", "predicted": "squat/correct", "confidence": 0.4,
               "unsure": True, "page": str(tmp_path / "out" / "formula.html")}]
    review = write_review(str(tmp_path / "out"), "run", scored)
    text = Path(review["csv"]).read_text()
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert row["session_id"] == "'" + hostile and row["confidence"] == "0.4"
    truth = [{"session_id": hostile, "exercise": "squat", "labels": ["correct", "correct"],
              "boundaries": [list(b) for b in bounds]}]
    filled = tmp_path / "filled.csv"
    assert fill_from_truth(review["csv"], truth, filled) == 1
    assert list(csv.DictReader(io.StringIO(filled.read_text())))[0]["session_id"] == "'" + hostile
    dataset = "reviewformula"
    Dataset(dataset).write(make_dataset(n_subjects=1, reps=1, seed=9))
    report = ingest_review(filled, dataset)
    assert (report.inserted, report.errors) == (1, [])
    [new] = [s for s in Dataset(dataset).read() if "review" in s.meta]
    assert new.meta["review"]["session_id"] == hostile
    assert new.meta["review"]["source"] == str(upload)
    assert len(new.poses) == end - start


def test_relative_sources_of_an_older_queue_resolve_above_it_or_fail_the_command(
        scored, tmp_path, monkeypatch):
    """An older queue kept sources relative to the folder its run was in: from another folder
    they are found above the review file, and where they are not, every row is an error and
    the command fails."""
    review, truth, root = scored
    rows = list(csv.DictReader(io.StringIO(Path(review["csv"]).read_text())))
    first = rows[0]
    assert Path(first["source"]).is_absolute()
    known = next(t for t in truth if t["session_id"] == first["session_id"])
    old = {**first, "source": str(Path(first["source"]).relative_to(root)),
           "label": known["labels"][int(first["rep"])]}
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    here = write_filled(root / "out" / "review" / "old.csv", [old])
    assert ingest_review(here, DATASET).errors == []
    lost = write_filled(tmp_path / "lost.csv", [old, {**old, "rep": "1"}])
    result = CliRunner().invoke(app, ["ingest", str(lost), "--dataset", DATASET])
    assert result.exit_code == 1
    assert "none of its 2 labelled rows went in" in result.output
    assert result.output.count("a relative source (from an older score run)") == 2


def write_filled(path: Path, rows: list[dict]) -> Path:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())
    return path
