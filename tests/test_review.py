"""The review queue: which scored repetitions are picked, and filled-in files read back with
clear errors per row while the other rows still go in."""

import csv
import io
import json
from dataclasses import replace

from model.serve.review import AUDIT, MISMATCH, UNSURE, read_labelled, select, to_csv, to_jsonl

FORMULAS = ('=HYPERLINK("http://x","y")', "@SUM(1)", "+1+2", "'=already quoted", "-1.5")


def scored_rows(n: int = 20) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append({"session_id": f"sess{i // 4}", "input": f"/up/sess{i // 4}.json",
                     "rep": i % 4, "frames": [10 * i, 10 * i + 9], "exercise": "squat",
                     "predicted": "squat/correct", "confidence": 0.9, "unsure": i in (3, 7),
                     "exercise_mismatch": i == 11, "report": f"sess{i // 4}.html"})
    rows.append({"session_id": "bad", "input": "/up/bad.json", "error": "broken"})
    return rows


def test_select_takes_unsure_and_mismatches_then_an_audit_sample():
    picked = select(scored_rows(), audit=3, limit=50, seed=1)
    reasons = [r.reason for r in picked]
    assert reasons.count(UNSURE) == 2 and reasons.count(MISMATCH) == 1
    assert reasons.count(AUDIT) == 3
    assert len({(r.session_id, r.rep) for r in picked}) == 6  # no repetition twice
    assert picked[0].report == "sess0.html#rep-4"
    assert select(scored_rows(), audit=3, limit=50, seed=1) == picked  # seeded
    assert len(select(scored_rows(), audit=10, limit=4)) == 4


def test_a_filled_csv_reads_back_labelled_rows_and_counts_the_rest():
    picked = select(scored_rows(), audit=2, limit=50)
    text = to_csv(picked)
    lines = text.splitlines()
    lines[1] = lines[1] + "knees_inward"  # the person labels the first row
    rows, errors, unlabelled = read_labelled("\n".join(lines) + "\n", "review.csv")
    assert errors == [] and unlabelled == len(picked) - 1
    assert [(line, r.session_id, r.rep, r.label) for line, r in rows] == [
        (2, picked[0].session_id, picked[0].rep, "knees_inward")]
    assert rows[0][1].start_frame == picked[0].start_frame


def test_bad_rows_get_errors_naming_their_line_and_the_others_go_in():
    picked = select(scored_rows(), audit=0, limit=50)
    records = [json.loads(line) for line in to_jsonl(picked).splitlines()]
    for r in records:
        r["label"] = "correct"
    records[1]["end_frame"] = "late"
    records[2]["start_frame"] = 50
    records[2]["end_frame"] = 20
    text = "\n".join(json.dumps(r) for r in records) + "\n{not json\n"
    rows, errors, _ = read_labelled(text, "review.jsonl")
    assert len(rows) == len(records) - 2
    assert [e.line for e in errors] == [2, 3, len(records) + 1]
    assert "not a whole number" in errors[0].reason and "not a range" in errors[1].reason
    malformed, errors, _ = read_labelled("a,b\n1,2\n", "review.csv")
    assert malformed == [] and "header lacks" in errors[0].reason


def test_formula_values_are_quoted_in_the_csv_and_read_back_as_they_were():
    rows = scored_rows(len(FORMULAS))
    for r, value in zip(rows, FORMULAS, strict=False):
        r.update(session_id=value, input=value, unsure=True)
    picked = select(rows, audit=0, limit=50)
    assert [r.session_id for r in picked] == list(FORMULAS)
    text = to_csv(picked)
    cells = list(csv.DictReader(io.StringIO(text)))
    assert [c["session_id"] for c in cells] == [
        '\'=HYPERLINK("http://x","y")', "'@SUM(1)", "'+1+2", "''=already quoted", "-1.5"]
    assert cells[1]["source"] == "'@SUM(1)" and cells[0]["confidence"] == "0.9"
    lines = text.splitlines()
    labelled = [lines[0]] + [line + "correct" for line in lines[1:]]
    back, errors, _ = read_labelled("\n".join(labelled) + "\n", "review.csv")
    assert errors == []
    assert [(r.session_id, r.source) for _, r in back] == [(v, v) for v in FORMULAS]
    assert [r for _, r in back] == [replace(r, label="correct") for r in picked]
