"""Names from uploads are never trusted: a corpus of hostile values (climbing paths, absolute
paths, both slashes, NUL and control characters, 300 characters, unicode, names that collide
once slugged, HTML/JS) in every string field of uploads and labelled files. Scored reports,
locally and on S3, stay inside their folder or prefix, one distinct file per session, with no
markup of the upload's in the HTML and the values kept in the JSON; ingest keeps the values as
data, writes only under the dataset and quarantines under safe names; MLflow keys stay distinct."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from test_object_storage import s3_env  # noqa: F401 (the S3 server fixture)

from flows.ingest import ingest_flow, quarantine_dir, read_errors
from flows.reports import ModelInfo
from flows.score import SessionReports
from model.data import storage
from model.data.dataset import Dataset
from model.data.formats import write_sequences_json, write_session
from model.data.hostile import COLLIDING, HOSTILE_NAMES
from model.data.names import (
    csv_cell,
    csv_row,
    csv_value,
    html_text,
    metric_key,
    safe_file_name,
    safe_name,
    short_hash,
    slug,
    sql_text,
)
from model.data.readers import read_session
from model.data.sequence import SequenceError
from model.data.synth import make_dataset, make_session
from model.learn.train import train
from model.serve.scoring import calibrate, score_session
from model.settings import PROFILES, run_config

HOSTILE = list(HOSTILE_NAMES)
SQL_SUBJECT = "' OR '1'='1"
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
INFO = ModelInfo(name="posecoach-hostile", version="1", dataset="hostile", dataset_version=None,
                 code_version="test")

def test_names_are_plain_bounded_and_distinct() -> None:
    names = [safe_name(v) for v in HOSTILE]
    for value, name in zip(HOSTILE, names, strict=True):
        assert PLAIN.fullmatch(name) and name.isascii() and len(name) <= 61, (value, name)
        assert name not in (".", "..") and name == safe_name(value)
        assert name.endswith(short_hash(value))
    assert len(set(names)) == len(HOSTILE)
    assert len({slug(v) for v in COLLIDING}) == 1
    assert len({safe_name(v) for v in COLLIDING}) == len(COLLIDING)
    for value in HOSTILE:
        file_name = safe_file_name(value + ".json")
        assert PLAIN.fullmatch(file_name) and file_name.endswith(".json")
        key = metric_key(value)
        assert re.fullmatch(r"[A-Za-z0-9_/.-]+", key) and ".." not in key.split("/")
        text = html_text(value)
        assert not set(text) & set("<>\"'\x00\x01\x1b\x7f")
        assert sql_text(value.replace("\x00", "")).count("'") % 2 == 0
    assert safe_file_name("good_name-1.json.gz") == "good_name-1.json.gz"
    assert len({metric_key(v) for v in HOSTILE}) == len(HOSTILE)
    with pytest.raises(ValueError, match="NUL"):
        sql_text("a\x00b")


def test_csv_cells_never_start_a_formula_and_read_back_as_they_were() -> None:
    formulas = ['=HYPERLINK("http://x","y")', "@SUM(1)", "+A1", "-rf", "\tx", "\rx", "'=x",
                "''@x"]
    for value in formulas:
        assert csv_cell(value) == "'" + value
    kept = ["-1.5", "+2", "-1e3", "'-1.5", "plain", "'quoted", "", "a=b"]
    assert [csv_cell(v) for v in kept] == kept
    for value in (*formulas, *kept, *HOSTILE):
        assert csv_value(csv_cell(value)) == value
    assert csv_value('=HYPERLINK("a")') == '=HYPERLINK("a")'  # saved by a spreadsheet unquoted
    assert csv_cell(-1.5) == "-1.5"
    assert csv_row({"class": "=1+1", "n": 4, "accuracy": -0.5, "x": None}) == {
        "class": "'=1+1", "n": 4, "accuracy": -0.5, "x": None}


def test_per_class_csv_quotes_formula_class_names() -> None:
    from registry.tracking import per_class_csv

    rows = [{"class": "squat/correct", "accuracy": -0.5}, {"class": "@SUM(1)", "accuracy": None}]
    assert per_class_csv(rows).splitlines() == [
        "class,accuracy", "squat/correct,-0.5", "'@SUM(1),"]


@pytest.mark.parametrize("part", ["..", "a/../../b", "./x", "a\\b", "nul\x00"])
def test_storage_join_refuses_a_name_that_climbs(part) -> None:
    with pytest.raises(ValueError, match="not a plain name"):
        storage.join("s3://reports/run", part)


class _Page(HTMLParser):
    """A page's markup: each start tag with its attribute names, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.markup: list[tuple[str, tuple[str, ...]]] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.markup.append((tag, tuple(sorted(name for name, _ in attrs))))


def _markup(page: str) -> list[tuple[str, tuple[str, ...]]]:
    parsed = _Page()
    parsed.feed(page)
    return parsed.markup


HOSTILE_LABELS = {"knees_inward": "<script>alert('label')</script>",
                  "feet_too_wide": "\"><img src=x onerror=alert(2)>"}


@pytest.fixture(scope="module")
def model():
    """A tiny model whose classes carry markup in their labels (as a labelled file may)."""
    torch.set_num_threads(1)
    data = [replace(s, label=HOSTILE_LABELS.get(s.label, s.label))
            for s in make_dataset(n_subjects=2, reps=1, seed=7, exercises=("squat",))]
    m = train(data, run_config(PROFILES["test"], threads=1), progress=False)
    calibrate(m, data)
    return m


def _uploads(folder: Path) -> list[tuple[Path, str]]:
    """One upload per hostile value, in turn as JSON, NPZ and Parquet, the value in every string
    field (session_id and subject as given; exercise and skeleton, which must be known, in one
    upload each); returns (file, value)."""
    base, _ = make_session("s1", "squat", ["knees_inward"], seed=3)
    out = []
    for i, value in enumerate(HOSTILE):
        path = folder / f"upload_{i:02d}{('.json', '.npz', '.parquet')[i % 3]}"
        write_session(replace(base, subject=value, meta={"session_id": value}), path)
        out.append((path, value))
    for field in ("exercise", "skeleton"):
        path = folder / f"bad_{field}.json"
        write_session(replace(base, **{field: HOSTILE[13]}), path)
        out.append((path, HOSTILE[13]))
    return out


def _score_into(out: str, uploads: list[tuple[Path, str]], model) -> tuple[dict, dict]:
    """What each scoring worker does per upload: {file: report uris}, {file: error kind}."""
    hook = SessionReports(out, INFO)
    written, errors = {}, {}
    for path, _ in uploads:
        try:
            session = read_session(path)
            written[path] = hook(session, score_session(model, session), model)
        except SequenceError as exc:
            errors[path] = exc.kind
    return written, errors


def _check_page(page: str, reference: str, values: Iterable[str]) -> None:
    """The page has exactly the markup of the same report made of plain values, and none of the
    values with markup characters appears raw in it."""
    assert _markup(page) == _markup(reference)
    for value in values:
        if set(value) & set("<>&\"'"):
            assert value not in page


def _reference_page(model, path: Path, folder: Path) -> str:
    """The page of the upload at `path` with plain session_id and subject."""
    session = read_session(path)
    plain = replace(session, subject="reference", meta={**session.meta, "session_id": "ref"})
    uris = SessionReports(str(folder), INFO)(plain, score_session(model, plain), model)
    return storage.read_text(uris["html"])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_reports_from_hostile_uploads_stay_in_their_folder(s3_env, model, tmp_path,  # noqa: F811
                                                           where) -> None:
    uploads = _uploads(tmp_path / "uploads")
    root = tmp_path / "root"
    out = "s3://reports/hostile" if where == "s3" else str(root / "reports")
    written, errors = _score_into(out, uploads, model)
    by_value = dict(uploads)
    assert errors == {tmp_path / "uploads" / "bad_exercise.json": "unknown_exercise",
                      tmp_path / "uploads" / "bad_skeleton.json": "unknown_skeleton"}
    assert len(written) == len(HOSTILE)
    reference = _reference_page(model, uploads[0][0], tmp_path / "reference")
    if where == "s3":
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
            Bucket="reports")["Contents"]]
        assert all(k.startswith("hostile/") and "/" not in k.removeprefix("hostile/")
                   for k in keys)
        files = {"s3://reports/" + k for k in keys}
    else:
        files = {str(p) for p in root.rglob("*") if p.is_file()}
        assert all(Path(f).parent == root / "reports" for f in files)
    expected = {uris[kind] for uris in written.values() for kind in ("report", "html")}
    expected |= {uris["report"].removesuffix(".json") + ".npz" for uris in written.values()}
    assert files == expected
    assert len({uris["report"] for uris in written.values()}) == len(written)
    for path, uris in written.items():
        name = uris["report"].rsplit("/", 1)[1]
        assert PLAIN.fullmatch(name) and uris["report"] == storage.join(out, name)
        report = json.loads(storage.read_text(uris["report"]))
        session = read_session(path)
        assert report["session_id"] == session.meta["session_id"] == by_value[path]
        assert report["subject"] == by_value[path]
        _check_page(storage.read_text(uris["html"]), reference, [by_value[path]])


def test_hostile_labels_cues_and_errors_are_text_on_the_page(model, tmp_path) -> None:
    """Every string a report shows (mistake names from the model's labels, predicted exercise,
    cues, errors) may come from a labelled file: each is escaped on the page, kept in the JSON."""
    path, value = _uploads(tmp_path / "uploads")[13]
    session = read_session(path)
    scored = score_session(model, session)

    def page_of(texts: list[str], folder: str) -> tuple[str, list, dict]:
        results = [replace(r, label=texts[1 + i % 3], predicted=f"{texts[0]}/x", unsure=False,
                           cues=[texts[0], texts[1]]) for i, r in enumerate(scored)]
        results[-1] = replace(results[-1], error=texts[1], corrected=None)
        uris = SessionReports(str(tmp_path / folder), INFO)(session, results, model)
        return storage.read_text(uris["html"]), results, uris

    page, results, uris = page_of(HOSTILE[13:17], "reports")
    reference, _, _ = page_of(["plain", "b", "c", "d"], "reference")
    _check_page(page, reference, HOSTILE[13:17])
    for shown in (value, HOSTILE[13], HOSTILE[14]):
        assert html_text(shown) in page
    report = json.loads(storage.read_text(uris["report"]))
    assert [r["predicted_label"] for r in report["repetitions"]] == [r.label for r in results]
    assert report["repetitions"][-1]["error"] == HOSTILE[14]


def test_hostile_uploads_scored_on_ray_leave_reports_only_in_their_folder(
        ray_local, model, tmp_path) -> None:
    from workers.scoring import SCORED, score_batch

    uploads = _uploads(tmp_path / "uploads")
    folder = model.save(tmp_path / "model")
    out = tmp_path / "root" / "reports"
    records = score_batch([str(p) for p, _ in uploads], folder,
                          on_session=SessionReports(str(out), INFO), progress=False)
    assert {r["input"] for r in records} == {str(p) for p, _ in uploads}
    reports = {r["report"] for r in records if r["status"] == SCORED}
    assert all(Path(r).parent == out for r in reports) and len(reports) == len(HOSTILE)
    assert {str(p) for p in (tmp_path / "root").rglob("*") if p.is_file()} == reports | {
        r.removesuffix(".json") + s for r in reports for s in (".html", ".npz")}


def _labelled(folder: Path) -> dict[str, str | None]:
    """Labelled files with hostile names and subjects, and one with a hostile label (refused:
    labels are plain names); file name -> expected kind."""
    folder.mkdir(parents=True)
    seqs = make_dataset(n_subjects=1, reps=1, seed=9, exercises=("squat",))
    names = ["<svg onload=alert(1)>", "日本語", "a b", "a?b", "x" * 200, "ctrl\x01\x1b",
             "back\\slash", "-rf", " lead", "'; DROP TABLE t; --", "a..b", "e\u0301"]
    expected: dict[str, str | None] = {}
    for i, name in enumerate(names):
        subject = SQL_SUBJECT if i == 9 else HOSTILE[i]
        seq = replace(seqs[i % len(seqs)], subject=subject)
        write_sequences_json([seq], folder / f"{name}.json")
        expected[f"{name}.json"] = None
    write_sequences_json([replace(seqs[0], exercise=HOSTILE[13])], folder / "<b onclick=x>ex.json")
    write_sequences_json([replace(seqs[0], skeleton=HOSTILE[2])], folder / "skel..json")
    write_sequences_json([replace(seqs[0], label=HOSTILE[5])], folder / "label.json")
    (folder / "\x1b[2J broken.json").write_text('{"poses": [[[')
    expected |= {"<b onclick=x>ex.json": "unknown_exercise", "skel..json": "unknown_skeleton",
                 "label.json": "bad_label", "\x1b[2J broken.json": "bad_json"}
    return expected


@pytest.mark.parametrize("where", ["local", "s3"])
def test_ingest_keeps_hostile_values_as_data_and_names_safe(
        s3_env, prefect_api, tmp_path, monkeypatch, where) -> None:  # noqa: F811
    name = f"hostile_{where}"
    lake = "s3://lake/hostile" if where == "s3" else str(tmp_path / "lake")
    monkeypatch.setenv("POSECOACH_LAKE", lake)
    expected = _labelled(tmp_path / "in")
    report = ingest_flow([str(tmp_path / "in")], name)
    assert report.accounted and report.inputs == len(expected)
    kinds = {Path(r.file).name: r.kind for r in report.rejections}
    assert kinds == {k: v for k, v in expected.items() if v}
    ds = Dataset(name)
    rows = ds.read()
    assert len(rows) == sum(v is None for v in expected.values())
    assert {r.subject for r in rows} == set(HOSTILE[:9]) | set(HOSTILE[10:12]) | {SQL_SUBJECT}
    assert {r.label for r in rows} == {s.label for s in make_dataset(
        n_subjects=1, reps=1, seed=9, exercises=("squat",))}
    if where == "s3":
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
            Bucket="lake", Prefix="")["Contents"]]
        assert keys and all(k.startswith(f"hostile/{name}/") for k in keys)
        parts = {k.split("/")[2] for k in keys}
    else:
        files = [p for p in Path(lake).rglob("*") if p.is_file()]
        assert all(p.is_relative_to(Path(lake) / name) for p in files)
        parts = {p.relative_to(Path(lake) / name).parts[0] for p in files}
    assert "_delta_log" in parts and {p for p in parts if not p.startswith("_")} == {
        "exercise=squat"}
    qdir = quarantine_dir(name)
    copies = list(qdir.iterdir())
    assert all(p.is_file() and p.parent == qdir for p in copies)
    assert all(PLAIN.fullmatch(p.name) or p.name == "_errors.jsonl" for p in copies)
    records = read_errors(qdir)
    originals = {Path(r["original"]).name for r in records}
    assert originals == {k for k, v in expected.items() if v}
    assert all(Path(r["file"]).parent == qdir and Path(r["file"]).is_file() for r in records)
    gone = ds.delete_subject(SQL_SUBJECT)
    assert gone["deleted"] == 1 and ds.count() == len(rows) - 1


def test_mlflow_keys_of_hostile_classes_stay_distinct(mlflow_uri) -> None:
    import mlflow

    from registry.tracking import configure_tracking, log_training_run

    configure_tracking(mlflow_uri)
    classes = [f"squat/{v}" for v in (*COLLIDING, "<script>", "../x", "é")]
    rows = [{"class": c, "accuracy": i / 10} for i, c in enumerate(classes)]
    run_id = log_training_run(dataset="hostile", dataset_version=None, profile="test",
                              params={}, skeleton="ec3d19", classes=classes,
                              gate={"macro": 0.5, "per_class": rows})
    metrics = mlflow.get_run(run_id).data.metrics
    keys = sorted(k for k in metrics if k.startswith("gate.class."))
    assert len(keys) == len(classes)
    assert sorted(metrics[k] for k in keys) == sorted(r["accuracy"] for r in rows)
    assert all(re.fullmatch(r"[/\w.\- :]+", k) and ".." not in k.split("/") for k in keys)
    assert np.isclose(metrics["gate.macro"], 0.5)
