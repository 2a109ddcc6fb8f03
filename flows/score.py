"""The score flow: a folder (or object-store prefix) of uploaded sessions in, mistake reports out.

Every session is scored with the registered model's champion (or a pinned version) on Ray
(workers.scoring), cut into repetitions by model/'s one scoring path. Per session the workers
write a JSON report, an HTML page and the corrected motions; the driver appends every scored
repetition to one Parquet (Delta) table for analytics, `<out>/repetitions`, and every session
that could not be scored to `<out>/_errors.jsonl` with its reason. Sessions already scored by
the same model version (same file content) are skipped, so a re-run or a scheduled scan of the
same prefix duplicates nothing: sessions in = reports + skipped + errors.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from prefect import flow, task
from prefect.cache_policies import NONE

from flows.reports import ModelInfo, write_session
from model.data import storage
from model.data.sequence import Sequence
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult
from model.settings import get_settings
from registry.lookup import resolve, saved_model_dir
from registry.tracking import code_version
from registry.versions import model_name
from workers.scoring import SCORED, score_batch

UPLOAD_SUFFIXES = (".json", ".npz", ".parquet")
LEDGER = "_scored.jsonl"
ERRORS = "_errors.jsonl"
TABLE = "repetitions"
ROW_KEY = ("input", "model", "model_version", "rep", "start_frame")


class SessionReports:
    """What each Ray scoring worker does with a scored session: write its reports."""

    def __init__(self, out: str, info: ModelInfo):
        self.out = out
        self.info = info

    def __call__(self, session: Sequence, results: list[RepResult],
                 model: TrainedModel) -> dict[str, str]:
        uris = write_session(self.out, session, results, model, self.info)
        return {"report": uris["json"], "html": uris["html"]}


@dataclass
class ScoreSummary:
    model: dict
    out: str
    sessions: int
    reports: int
    skipped: int
    errors: int
    repetitions: int
    mistakes: dict[str, int] = field(default_factory=dict)
    unsure: int = 0
    exercise_disagreements: list[str] = field(default_factory=list)
    error_records: list[dict] = field(default_factory=list)
    report_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accounted(self) -> bool:
        return self.sessions == self.reports + self.skipped + self.errors

    def to_dict(self) -> dict:
        return {**asdict(self), "accounted": self.accounted}


def digest(uri: str) -> str:
    return storage.sha256(uri)


def ledger_key(file_digest: str, info: ModelInfo) -> str:
    return f"{info.name}:{info.version}:{file_digest}"


def read_jsonl(uri: str) -> list[dict]:
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def append_jsonl(uri: str, records: list[dict]) -> None:
    """Append records (rewrites the whole object: object stores have no append)."""
    if records:
        old = storage.read_text(uri) if storage.exists(uri) else ""
        storage.write_text(uri, old + "".join(json.dumps(r) + "\n" for r in records))


@task(name="resolve-model", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def resolve_model(dataset: str, version: str | None, name: str | None) -> tuple[Path, ModelInfo]:
    name = name or model_name(dataset)
    resolved = resolve(name, version)
    folder = saved_model_dir(name, resolved, get_settings().home / "registry")
    card = json.loads((folder / "model.json").read_text())
    info = ModelInfo(name=name, version=resolved, dataset=dataset,
                     dataset_version=card["versions"].get("dataset_version"),
                     code_version=code_version())
    return folder, info


@task(name="plan", cache_policy=NONE)
def plan(path: str, out: str, info: ModelInfo) -> tuple[list[tuple[str, str]], list[str]]:
    """(to score: (uri, digest)), already scored by this model version: uris."""
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: no such folder, prefix or file")
    done = {r["key"] for r in read_jsonl(storage.join(out, LEDGER))}
    todo, skipped = [], []
    for uri in storage.list_files(path, UPLOAD_SUFFIXES):
        d = digest(uri)
        (skipped.append(uri) if ledger_key(d, info) in done else todo.append((uri, d)))
    return todo, skipped


@task(name="score-sessions", retries=1, retry_delay_seconds=5, cache_policy=NONE)
def score_sessions(uris: list[str], model_dir: Path, out: str, info: ModelInfo) -> list[dict]:
    return score_batch(uris, model_dir, on_session=SessionReports(out, info), progress=False)


def _table(rows: list[dict], info: ModelInfo, scored_at: str) -> pa.Table:
    cols = ("session_id", "input", "rep", "predicted", "label", "confidence", "unsure",
            "exercise_mismatch", "exercise", "subject")
    data = {c: [r.get(c) for r in rows] for c in cols}
    data["start_frame"] = [(r.get("frames") or [None, None])[0] for r in rows]
    data["end_frame"] = [(r.get("frames") or [None, None])[1] for r in rows]
    data["cues"] = [" ".join(r.get("cues") or []) for r in rows]
    data["model"] = [info.name] * len(rows)
    data["model_version"] = [info.version] * len(rows)
    data["scored_at"] = [scored_at] * len(rows)
    return pa.table(data)


def add_repetitions(uri: str, rows: pa.Table) -> None:
    """Add scored repetitions to the table once: rows already there for the same input, model
    version and repetition (a retry, or a rerun after the ledger could not be written) are not
    added again."""
    if not DeltaTable.is_deltatable(uri):
        write_deltalake(uri, rows, mode="append", schema_mode="merge")
        return
    same = " AND ".join(f"t.{c} = s.{c}" for c in ROW_KEY)
    (DeltaTable(uri).merge(rows, predicate=same, source_alias="s", target_alias="t",
                           merge_schema=True).when_not_matched_insert_all().execute())


@task(name="write-outputs", retries=2, retry_delay_seconds=5, cache_policy=NONE)
def write_outputs(todo: list[tuple[str, str]], records: list[dict], out: str,
                  info: ModelInfo) -> tuple[list[dict], list[dict], list[str]]:
    """Append the repetitions table, the error records and the ledger; return
    (scored repetition rows, error records, report files)."""
    by_input: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_input[r["input"]].append(r)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    scored, errors, reports, ledger = [], [], [], []
    for uri, file_digest in todo:
        recs = by_input.get(uri, [])
        ok = [r for r in recs if r.get("status") == SCORED and r.get("report")]
        if ok:
            scored.extend(ok)
            reports.append(ok[0]["report"])
            ledger.append({"key": ledger_key(file_digest, info), "input": uri,
                           "report": ok[0]["report"], "time": now})
            continue
        reason = next((r.get("error") for r in recs if r.get("error")), None)
        kind = next((r.get("error_kind") for r in recs if r.get("error_kind")), None)
        errors.append({"input": uri, "kind": kind or "not_scored",
                       "reason": reason or f"{uri}: no result came back", "time": now,
                       "model": f"{info.name} v{info.version}"})
    if scored:
        add_repetitions(storage.join(out, TABLE), _table(scored, info, now))
    append_jsonl(storage.join(out, ERRORS), errors)
    append_jsonl(storage.join(out, LEDGER), ledger)
    return scored, errors, reports


class StoreUnavailable(RuntimeError):
    """The object store holding the uploads or the reports did not answer."""


@contextmanager
def store_errors(path: str, out: str) -> Iterator[None]:
    """An I/O error on an object store (after pyarrow's and the tasks' retries) becomes
    StoreUnavailable naming the endpoint; a missing path and local errors pass unchanged."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not (storage.is_remote(path) or storage.is_remote(out)):
            raise
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "its default endpoint"
        raise StoreUnavailable(
            f"the object store at {endpoint} did not answer while scoring {path} into {out} "
            f"({exc}); sessions without a ledger entry are scored again by the next run"
        ) from exc


@flow(name="score")
def score_flow(path: str, dataset: str = "ec3d", version: str | None = None,
               out: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Score every uploaded session under `path` with the champion (or a pinned version)."""
    began = time.perf_counter()
    out = out or get_settings().reports
    model_dir, info = resolve_model(dataset, version, model)
    with store_errors(path, out):
        todo, skipped = plan(path, out, info)
        records = score_sessions([u for u, _ in todo], model_dir, out, info) if todo else []
        scored, errors, reports = write_outputs(todo, records, out, info)
    labels = Counter("unsure" if r.get("unsure") else r.get("label") for r in scored)
    mismatched = sorted({r.get("session_id") or r["input"] for r in scored
                         if r.get("exercise_mismatch")})
    summary = ScoreSummary(
        model=info.to_dict(), out=out, sessions=len(todo) + len(skipped), reports=len(reports),
        skipped=len(skipped), errors=len(errors), repetitions=len(scored),
        mistakes={k: v for k, v in labels.items() if k not in ("correct", "unsure")},
        unsure=labels.get("unsure", 0), exercise_disagreements=mismatched,
        error_records=errors, report_files=reports, seconds=time.perf_counter() - began,
    )
    return summary.to_dict()

