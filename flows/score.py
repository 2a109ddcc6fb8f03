"""The score flow: a folder (or object-store prefix) of uploaded sessions in, mistake reports out.

Every session is scored with the registered model's champion (or a pinned version). Sessions
are scored in blocks: each block's files are read and cut into repetitions, and all their
repetitions go through model/'s one scoring path together (model.serve.sessions), in this
process; on a Ray cluster (RAY_ADDRESS set) a large batch goes to Ray Data instead
(workers.scoring), where spreading it over the nodes pays for the actors' start-up. Per session a
JSON report, the corrected motions (.npz) and an animated HTML page (flows.report_html) are
written; per run an overview page, `<out>/index.html`, links them all and lists the errors.

The driver brings the records up to date as blocks finish (at least every `block_seconds`):
every scored repetition goes into one Delta table, `<out>/repetitions`, every scored session
into the ledger, the Delta table `<out>/_ledger`, and every session that could not be scored
into `<out>/_errors.jsonl` with its reason. Table and ledger are written by Delta merges keyed
on (model version, file content[, repetition]), which Delta's atomic commits keep exact on an
object store too: two runs of one folder at once, or a rerun after a crash, record each session
and each repetition once. A rerun scores only the sessions the ledger does not hold: sessions in
= reports + skipped + errors.

Declarations of the uploads' conventions (`declared`: up, units, mirrored, fps, zeros_lost,
layout, layout_file) go with every file to its reader, here, in the reader processes or on Ray; each
file is settled against its own data, and one that contradicts a declaration is an error
record naming it.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable, Field, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from prefect import flow, task
from prefect.cache_policies import NONE
from rich.progress import Progress

from flows.output import console
from flows.report_html import overview_page
from flows.reports import ModelInfo, write_session
from flows.review import run_name, write_review
from model.data import storage
from model.data.formats import SESSION_READERS
from model.data.readers import MANIFEST
from model.data.sequence import Sequence
from model.evaluate.features import features_json_many
from model.learn.saved import TrainedModel
from model.serve.reference import References, ReferenceUnusable, reference_caution
from model.serve.scoring import RepResult
from model.serve.sessions import (
    SCORED,
    SessionScore,
    SessionWorkers,
    cut_upload,
    score_cut,
    upload_references,
)
from model.settings import get_settings
from registry.lookup import resolve, saved_model_dir
from registry.tracking import code_version
from registry.versions import model_name

UPLOAD_SUFFIXES = tuple(SESSION_READERS)
LEDGER = "_ledger"
#: The ledger of earlier releases (JSON lines with the same keys); its sessions count as scored.
OLD_LEDGER = "_scored.jsonl"
ERRORS = "_errors.jsonl"
TABLE = "repetitions"
OVERVIEW = "index.html"
#: Sessions a worker scores together, at most (their repetitions in one score() call).
BLOCK_SESSIONS = 128
#: The ledger and the table are brought up to date at least this often (and at the end).
BLOCK_SECONDS = 2.0
#: Ray Data only pays on a cluster, for batches at least this large (actor start-up per node).
RAY_MIN_SESSIONS = 1024
#: Fewer sessions than this are scored in this process (forking workers would cost more).
PARALLEL_MIN_SESSIONS = 16
#: A worker's next chunk is this share of the sessions left per worker (guided scheduling): large
#: chunks first, each scored in one score() call, then ever smaller ones, so that the workers'
#: last chunks finish close together.
CHUNK_SHARE = 0.5
#: Sessions in a chunk, at the least (unless block_sessions is smaller, or fewer are left).
MIN_CHUNK_SESSIONS = 4
MERGE_TRIES = 20
TABLE_COLUMNS = ("session_id", "input", "rep", "predicted", "label", "confidence", "unsure",
                 "exercise_mismatch", "exercise", "subject")


class SessionReports:
    """What each Ray scoring worker does with a scored session: write its reports (named by its
    session id and its file's content, read again here)."""

    def __init__(self, out: str, info: ModelInfo, html: bool = True):
        self.out = out
        self.info = info
        self.html = html

    def __call__(self, session: Sequence, results: list[RepResult],
                 model: TrainedModel) -> dict[str, str]:
        uris, report = write_session(self.out, session, results, model, self.info,
                                     storage.sha256(session.source), self.html)
        return {"report": uris["json"], "html": uris.get("html", ""),
                "summary": json.dumps(session_summary(report, uris))}


@dataclass
class ScoreSummary:
    model: dict
    out: str
    sessions: int
    reports: int
    skipped: int
    errors: int
    repetitions: int
    duplicates: int = 0
    failed_repetitions: int = 0
    mistakes: dict[str, int] = field(default_factory=dict)
    unsure: int = 0
    duplicate_files: list[dict] = field(default_factory=list)
    exercise_disagreements: list[str] = field(default_factory=list)
    error_records: list[dict] = field(default_factory=list)
    report_files: list[str] = field(default_factory=list)
    overview: str | None = None
    review: dict | None = None
    seconds: float = 0.0

    @property
    def accounted(self) -> bool:
        return self.sessions == self.reports + self.skipped + self.duplicates + self.errors

    def to_dict(self) -> dict:
        return {**asdict(self), "accounted": self.accounted}


def ledger_key(file_digest: str, info: ModelInfo) -> str:
    """The ledger key of a file scored by this model version (and against this reference)."""
    scorer = info.version if info.reference is None else f"{info.version}+ref-{info.reference}"
    return f"{info.name}:{scorer}:{file_digest}"


def session_summary(report: dict, uris: dict[str, str]) -> dict:
    """What the ledger keeps of a session for the overview page."""
    s = report["summary"]
    return {
        "session_id": report["session_id"], "subject": report["subject"],
        "exercise": report["declared_exercise"], "repetitions": s["repetitions"],
        "correct": s["correct"], "unsure": s["unsure"], "failed": s["failed"],
        "mistakes": s["mistakes"],
        "exercise_disagreement": s["exercise_disagreement"],
        "page": uris.get("html", "").rsplit("/", 1)[-1],
        "unsure_reps": [{"rep": r["index"], "label": r["predicted_label"],
                         "confidence": r["confidence"]}
                        for r in report["repetitions"] if r["mistake"] == "unsure"],
        "exercises": dict(Counter(r["exercise"] for r in report["repetitions"]
                                  if r["error"] is None)),
        "failed_reps": [{"rep": r["index"], "reason": r["error"]}
                        for r in report["repetitions"] if r["error"] is not None],
    }


def read_ledger(out: str, columns: list[str] | None = None) -> pa.Table | None:
    uri = storage.join(out, LEDGER)
    if not DeltaTable.is_deltatable(uri):
        return None
    return DeltaTable(uri).to_pyarrow_table(columns=columns)


def add_missing_columns(target: DeltaTable, schema: pa.Schema) -> DeltaTable:
    """`target` with the columns of `schema` it lacks added, null in its rows: a table written
    by an earlier release (no `key`, no `features`) takes today's rows."""
    have = {f.name for f in target.schema().fields}
    missing = [Field.from_arrow(f.with_nullable(True)) for f in schema if f.name not in have]
    if missing:
        target.alter.add_columns(missing)
    return target


def create_empty(uri: str, schema: pa.Schema) -> None:
    """Create `uri` with no rows. Rows are only ever merged in: two writers creating the table
    at once would otherwise both commit theirs as blind appends, and double them."""
    try:
        write_deltalake(uri, schema.empty_table(), mode="error")
    except DeltaError:
        if not DeltaTable.is_deltatable(uri):
            raise


def merge_new(uri: str, table: pa.Table, keys: tuple[str, ...]) -> None:
    """Insert the rows of `table` whose keys `uri` does not hold yet (creating the table empty
    when there is none), retried when a concurrent writer commits first (a commit conflict);
    any other failure (no space left, say) is raised at once."""
    on = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    for attempt in range(MERGE_TRIES):
        try:
            if not DeltaTable.is_deltatable(uri):
                create_empty(uri, table.schema)
            (add_missing_columns(DeltaTable(uri), table.schema)
             .merge(table, on, source_alias="s", target_alias="t")
             .when_not_matched_insert_all().execute())
            return
        except CommitFailedError as exc:
            if attempt == MERGE_TRIES - 1:
                raise DeltaError(f"{uri}: still conflicting with other writers after "
                                 f"{MERGE_TRIES} tries: {exc}") from exc
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))


def append_jsonl(uri: str, records: list[dict]) -> None:
    """Append JSON lines: locally by one append (concurrent writers' lines stay whole); on an
    object store by rewriting the object (object stores have no append)."""
    if not records:
        return
    text = "".join(json.dumps(r) + "\n" for r in records)
    if storage.is_remote(uri):
        old = storage.read_text(uri) if storage.exists(uri) else ""
        storage.write_text(uri, old + text)
        return
    _, path = storage.resolve(uri)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def read_jsonl(uri: str) -> list[dict]:
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def _table(rows: list[dict], info: ModelInfo, scored_at: str) -> pa.Table:
    data: dict[str, list] = {c: [r.get(c) for r in rows] for c in TABLE_COLUMNS}
    data["key"] = [r["key"] for r in rows]
    data["start_frame"] = [(r.get("frames") or [None, None])[0] for r in rows]
    data["end_frame"] = [(r.get("frames") or [None, None])[1] for r in rows]
    data["cues"] = [" ".join(r.get("cues") or []) for r in rows]
    data["features"] = pa.array([r.get("features") for r in rows], pa.string())
    data["model"] = [info.name] * len(rows)
    data["model_version"] = [info.version] * len(rows)
    data["reference"] = pa.array([r.get("reference") for r in rows], pa.string())
    data["scored_at"] = [scored_at] * len(rows)
    return pa.table(data)


class OutUnusable(RuntimeError):
    """The folder the reports go to cannot take them: refused before the run (`check_out`), or a
    write into it failed during the run (`Records.writing`)."""


_COLOURS = re.compile(r"\x1b\[[0-9;]*m")


def failure(exc: BaseException) -> str:
    """Why a write failed, in a line: an OSError's own words (and its file), else the last line
    of the message (deltalake's name their causes one per line, the innermost last)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    lines = [_COLOURS.sub("", line).strip().lstrip("↳ ") for line in str(exc).splitlines()]
    return next((line for line in reversed(lines) if line), type(exc).__name__)


def check_out(out: str) -> None:
    """Before any work, OutUnusable saying why when the run could not write into the local folder
    `out`: its path holds characters the Delta tables cannot take, or the folder cannot be made
    or written (a file in its way, a read-only file system, no permission); it is made here.
    An object-store prefix is tried by the run itself (StoreUnavailable)."""
    problem = storage.delta_path_problem(out)
    if problem is None:
        try:
            storage.writable_folder(out)
        except OSError as exc:
            problem = failure(exc)
    if problem is None:
        problem = _table_blocked(out)
    if problem is not None:
        raise OutUnusable(f"cannot write reports to {out}: {problem}")


def _table_blocked(out: str) -> str | None:
    """Why the run's Delta tables cannot be kept in the local folder `out`: something not a
    folder where one of them goes; None otherwise (and for an object store)."""
    if storage.is_remote(out):
        return None
    folder = Path(storage.resolve(out)[1])
    for name in (LEDGER, TABLE):
        path = folder / name
        if path.exists() and not path.is_dir():
            return f"{path} is not a folder, and the run keeps its {name} table there"
    return None


class Records:
    """The run's records, brought up to date in blocks: repetitions table, ledger, errors."""

    def __init__(self, out: str, info: ModelInfo, block_seconds: float = BLOCK_SECONDS):
        self.out, self.info, self.block_seconds = out, info, block_seconds
        self.rows: list[dict] = []
        self.ledger: list[dict] = []
        self.errors: list[dict] = []
        self.scored: list[dict] = []
        self.error_records: list[dict] = []
        self.reports: list[str] = []
        self.summaries: dict[str, str] = {}
        self.skipped: list[str] = []
        self.duplicates: list[dict] = []
        self.last = time.perf_counter()

    def session(self, uri: str, key: str, rows: list[dict], report: str, html: str,
                summary: dict) -> None:
        self.rows += [{**r, "key": key, "page": html} for r in rows]
        self.ledger.append({"key": key, "input": uri, "session_id": summary["session_id"],
                            "report": report, "html": html, "summary": json.dumps(summary)})

    def error(self, uri: str, kind: str | None, reason: str | None) -> None:
        self.errors.append({"input": uri, "kind": kind or "not_scored",
                            "reason": reason or f"{uri}: no result came back",
                            "model": f"{self.info.name} v{self.info.version}"})

    def block_done(self) -> None:
        if time.perf_counter() - self.last >= self.block_seconds:
            self.flush()

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A write into the local out folder that fails (no space left, the folder read-only
        or gone) ends the run with OutUnusable naming the folder, the reason and what the run
        has recorded; on an object store, store_errors tells."""
        try:
            yield
        except (OSError, DeltaError) as exc:
            if storage.is_remote(self.out):
                raise
            raise OutUnusable(
                f"cannot write reports to {self.out}: {failure(exc)}; recorded before it: "
                f"{len(self.reports)} sessions scored, {len(self.error_records)} error "
                "records; the next run scores the rest again") from exc

    def flush(self) -> None:
        """Merge the pending repetitions, then the ledger (so a crash between the two leaves a
        session to rescore, never a ledger entry without its rows), then the errors."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        errors = [{**e, "time": now} for e in self.errors]
        with self.writing():
            if self.rows:
                merge_new(storage.join(self.out, TABLE), _table(self.rows, self.info, now),
                          ("key", "rep"))
            if self.ledger:
                ledger = pa.Table.from_pylist([{**e, "time": now, "model": self.info.name,
                                                "model_version": self.info.version}
                                               for e in self.ledger])
                merge_new(storage.join(self.out, LEDGER), ledger, ("key",))
            append_jsonl(storage.join(self.out, ERRORS), errors)
        self.scored += self.rows
        self.reports += [e["report"] for e in self.ledger]
        self.summaries |= {e["key"]: e["summary"] for e in self.ledger}
        self.error_records += errors
        self.rows, self.ledger, self.errors = [], [], []
        self.last = time.perf_counter()


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


@dataclass
class Plan:
    """What a run does with what is under its path: `uploads` to score (those whose ledger key is
    in `done` skipped), `refused` ones that are no session file of the folder (input, kind,
    reason) and `duplicates`, each copy with the upload that has the same bytes."""

    uploads: list[str]
    done: frozenset[str]
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> int:
        return len(self.uploads) + len(self.refused) + len(self.duplicates)


def plan(path: str, out: str, info: ModelInfo) -> Plan:
    """The inputs under `path` (not the folder's manifest, nor `out` inside it), and the ledger
    keys of the sessions this model version has already scored. Each upload's own key
    (`upload_key`) is taken by whoever reads it: here only for Ray, else by the worker that
    scores it."""
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: no such folder, prefix or file")
    ledger = read_ledger(out, ["key"])
    done = set() if ledger is None else set(ledger.column("key").to_pylist())
    done |= {r["key"] for r in read_jsonl(storage.join(out, OLD_LEDGER))}
    mine = ledger_key("", info)
    entries = [e for e in storage.list_entries(path)
               if e.uri.rsplit("/", 1)[-1] != MANIFEST]  # the folder's declarations
    if storage.inside(out, path):  # the reports go into the folder scored: not inputs
        entries = [e for e in entries if not storage.inside(e.uri, out)]
    files = [e for e in entries if e.problem is None and is_upload(e.uri)]
    refused = [(e.uri, *refusal(e)) for e in entries if e.problem or not is_upload(e.uri)]
    uploads, duplicates = distinct(files)
    return Plan(uploads, frozenset(k for k in done if k.startswith(mine)), refused, duplicates)


def is_upload(uri: str) -> bool:
    """Whether a file's name is one of a session format scoring reads (any case)."""
    return uri.rsplit("/", 1)[-1].lower().endswith(UPLOAD_SUFFIXES)


def refusal(entry: storage.Entry) -> tuple[str, str]:
    """Why an entry is not scored (kind, reason naming it): its listing's problem, or a format
    that is not a session's."""
    if entry.problem is not None:
        kind, reason = entry.problem
        return kind, f"{entry.uri}: {reason}"
    return "unknown_format", (f"{entry.uri}: not a session file; sessions are "
                              f"{', '.join(UPLOAD_SUFFIXES)} (docs/input-formats.md)")


def distinct(files: list[storage.Entry]) -> tuple[list[str], dict[str, str]]:
    """The files with distinct bytes, in order, and each later copy with the first file of its
    bytes. Only files that share their size with another are read (hashed)."""
    sizes = Counter(e.size for e in files)
    first: dict[str, str] = {}
    uploads, copies = [], {}
    for entry in files:
        digest = storage.sha256(entry.uri) if sizes[entry.size] > 1 else entry.uri
        if digest in first:
            copies[entry.uri] = first[digest]
        else:
            first[digest] = entry.uri
            uploads.append(entry.uri)
    return uploads, copies


def upload_key(uri: str, info: ModelInfo) -> str:
    """The ledger key of an upload: this model version and the file's content."""
    return ledger_key(storage.sha256(uri), info)


def _rows(scored: SessionScore, features: list[str | None]) -> list[dict]:
    """The table rows of a scored session's repetitions, with their movement features (JSON)."""
    return [{**r.to_dict(), "input": scored.input, "session_id": scored.session_id,
             "status": SCORED, "features": f}
            for r, f in zip(scored.results, features, strict=True)]


def workers_for(n_sessions: int) -> int:
    """Worker processes that score uploads: one per core this process may run on, none (this
    process scores) for a few sessions."""
    if n_sessions < PARALLEL_MIN_SESSIONS:
        return 0
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def score_here(uploads: list[str], done: frozenset[str], model_dir: Path, out: str,
               info: ModelInfo, records: Records, html: bool, block_sessions: int,
               advance: Callable[[int], None], declared: dict | None = None,
               references: References | None = None) -> None:
    """Score on this machine through model.serve.sessions: worker processes (one per core) each
    key, read, cut, score and write the reports of a few uploads at a time (skipping those in
    `done`), and hand back their records; this process only keeps the records."""
    model = TrainedModel.load(model_dir)
    workers = workers_for(len(uploads))
    chunks, start = [], 0
    for size in chunk_sizes(len(uploads), workers, block_sessions):
        chunks.append(uploads[start : start + size])
        start += size
    work = partial(score_chunk, out=out, info=info, html=html, declared=declared, done=done,
                   references=references)
    with SessionWorkers(model, workers) as pool:
        for written in pool.each(work, chunks):
            record_written(records, written, advance)


def chunk_sizes(n_sessions: int, workers: int, block_sessions: int) -> list[int]:
    """Sessions in each chunk the workers take, in order (guided scheduling): CHUNK_SHARE of the
    sessions left per worker, at least MIN_CHUNK_SESSIONS and at most block_sessions, so that
    the first chunks are large and the last ones small, and no worker waits long on another's
    last chunk."""
    sizes, left = [], n_sessions
    while left > 0:
        size = math.ceil(CHUNK_SHARE * left / max(workers, 1))
        size = min(left, block_sessions, max(MIN_CHUNK_SESSIONS, size))
        sizes.append(max(1, size))
        left -= sizes[-1]
    return sizes


def score_chunk(model: TrainedModel, chunk: list[str], out: str, info: ModelInfo,
                html: bool, declared: dict | None, done: frozenset[str] = frozenset(),
                references: References | None = None) -> list[dict]:
    """Key a few uploads by their content (as `upload_key`), then read, cut and score those not
    in `done` together (their repetitions in one score() call) and write each one's reports:
    `write_reports'` records, and {"skipped": key} for each done one, in input order."""
    digests = {uri: storage.sha256(uri) for uri in chunk}
    keys = {uri: ledger_key(digest, info) for uri, digest in digests.items()}
    todo = [uri for uri in chunk if keys[uri] not in done]
    scored = score_cut(model, [cut_upload(model, uri, declared) for uri in todo],
                       references=references)
    features = iter(features_json_many([r for s in scored for r in s.results], model))
    written = {s.input: write_reports(model, (s, digests[s.input]), out, info, html,
                                      [next(features) for _ in s.results]) for s in scored}
    return [written.get(uri, {"skipped": keys[uri]}) for uri in chunk]


def record_written(records: Records, written: list[dict], advance: Callable[[int], None]
                   ) -> None:
    """Add a block's written sessions (`write_reports`) and skipped ones to the records."""
    for done in written:
        if "error" in done:
            records.error(*done["error"])
        elif "skipped" in done:
            records.skipped.append(done["skipped"])
        else:
            records.session(*done["session"])
    if written:
        advance(len(written))
        records.block_done()


def write_reports(model: TrainedModel, job: tuple[SessionScore, str], out: str, info: ModelInfo,
                  html: bool, features: list[str | None] | None = None) -> dict:
    """One scored session's report files, and its records: {"session": Records.session's
    arguments} or, for a session not scored or its reports not written, {"error":
    Records.error's}. `job`: the session and its file's SHA-256. `features`: its repetitions'
    movement features (features_json_many), computed here when not given."""
    scored, digest = job
    if not scored.ok:
        return {"error": (scored.input, scored.error_kind, scored.error)}
    key = ledger_key(digest, info)
    try:
        uris, report = write_session(out, scored.session, scored.results, model, info, digest,
                                     html)
    except Exception as exc:  # noqa: BLE001 - reported as the session's error record
        return {"error": (scored.input, "report_failed",
                          f"{scored.input}: {type(exc).__name__}: {exc}")}
    if features is None:
        features = features_json_many(scored.results, model)
    return {"session": (scored.input, key, _rows(scored, features), uris["json"],
                        uris.get("html", ""), session_summary(report, uris))}


def score_on_ray(uploads: list[str], done: frozenset[str], model_dir: Path, out: str,
                 info: ModelInfo, records: Records, html: bool, block_sessions: int,
                 advance: Callable[[int], None], declared: dict | None = None,
                 references: References | None = None) -> None:
    """Score on a Ray cluster (workers.scoring.score_batch), a block of sessions per batch; the
    uploads in `done` skipped."""
    from workers.scoring import score_batch

    todo = []
    for uri in uploads:
        key = upload_key(uri, info)
        (records.skipped.append(key) if key in done else todo.append((uri, key)))
    advance(len(records.skipped))
    for start in range(0, len(todo), block_sessions):
        block = todo[start : start + block_sessions]
        found = score_batch([u for u, _ in block], model_dir,
                            on_session=SessionReports(out, info, html), progress=False,
                            declared=declared, references=references)
        by_input: dict[str, list[dict]] = {}
        for r in found:
            by_input.setdefault(r["input"], []).append(r)
        for uri, key in block:
            recs = by_input.get(uri, [])
            ok = [r for r in recs if r.get("report")]  # its repetitions, failed ones too
            if ok:
                records.session(uri, key, ok, ok[0]["report"], ok[0]["html"],
                                json.loads(ok[0]["summary"]))
                continue
            records.error(uri, next((r["error_kind"] for r in recs if r.get("error_kind")), None),
                          next((r["error"] for r in recs if r.get("error")), None))
        advance(len(block))
        records.block_done()


def on_cluster() -> bool:
    return bool(get_settings().ray_address or os.environ.get("RAY_ADDRESS"))


def overview(out: str, info: ModelInfo, records: Records) -> str:
    """Write the run's overview page: the sessions it scored (their summaries as recorded) and
    those it skipped (theirs read back from the ledger), and its errors."""
    entries = dict(records.summaries)
    if records.skipped:
        skipped = set(records.skipped)
        ledger = read_ledger(out, ["key", "summary"])
        entries |= {} if ledger is None else {e["key"]: e["summary"] for e in ledger.to_pylist()
                                              if e["key"] in skipped}
    sessions, unsure, failed, failed_reps = [], [], 0, []
    mistakes: Counter[str] = Counter()
    exercises: Counter[str] = Counter()
    summaries = {key: json.loads(summary) for key, summary in entries.items()}
    for key, s in sorted(summaries.items(), key=lambda e: e[1]["session_id"]):
        sessions.append({**s, "status": "scored" if key in records.summaries else "skipped"})
        mistakes.update(s["mistakes"])
        exercises.update(s["exercises"])
        failed += s.get("failed", 0)  # summaries of earlier releases have none
        unsure += [{**u, "page": s["page"], "session_id": s["session_id"]}
                   for u in s["unsure_reps"]]
        failed_reps += [{**f, "page": s["page"], "session_id": s["session_id"]}
                        for f in s.get("failed_reps", [])]
    page = overview_page({"model": info.to_dict(), "sessions": sessions,
                          "mistakes": dict(mistakes), "exercises": dict(exercises),
                          "unsure": unsure, "failed": failed,
                          "failed_reps": failed_reps, "errors": records.error_records,
                          "duplicates": records.duplicates,
                          "time": datetime.now(UTC).isoformat(timespec="seconds")})
    return storage.write_text(storage.join(out, OVERVIEW), page)


def score_all(run: Plan, model_dir: Path, out: str, info: ModelInfo, html: bool,
              block_sessions: int, block_seconds: float, progress: bool,
              declared: dict | None = None, references: References | None = None) -> Records:
    """Record the run's refused inputs and duplicates, and score its uploads not done, here or
    on Ray, with one progress bar; records kept up to date."""
    records = Records(out, info, block_seconds)
    for uri, kind, reason in run.refused:
        records.error(uri, kind, reason)
    records.duplicates = [{"input": copy, "of": first} for copy, first in run.duplicates.items()]
    ray = on_cluster() and len(run.uploads) >= RAY_MIN_SESSIONS
    with Progress(console=console, disable=not progress, transient=True) as bar:
        job = bar.add_task("scoring sessions", total=len(run.uploads))
        (score_on_ray if ray else score_here)(
            run.uploads, run.done, model_dir, out, info, records, html,
            max(block_sessions, RAY_MIN_SESSIONS) if ray else block_sessions,
            lambda n: bar.advance(job, n), declared, references)
    records.flush()
    return records


def score_folder(path: str, out: str, model_dir: Path, info: ModelInfo, html: bool = True,
                 block_sessions: int = BLOCK_SESSIONS, block_seconds: float = BLOCK_SECONDS,
                 progress: bool = False, declared: dict | None = None,
                 references: References | None = None) -> ScoreSummary:
    """Plan, score and record every session under `path` not yet scored by this model version
    (and `references`, whose digest the run's records and reports carry in `info.reference`;
    read with the `declared` conventions), then write the run's overview page. A repetition
    that could not be scored counts in `failed_repetitions`, never as a mistake."""
    began = time.perf_counter()
    info = replace(info, reference=None if references is None else references.digest)
    run = plan(path, out, info)
    records = score_all(run, model_dir, out, info, html, block_sessions, block_seconds,
                        progress, declared, references)
    with records.writing():
        page = overview(out, info, records) if html else None
        review = write_review(out, run_name(), records.scored)
    scored = [r for r in records.scored if r.get("error") is None]
    labels = Counter("unsure" if r.get("unsure") else r.get("label") for r in scored)
    return ScoreSummary(
        model=info.to_dict(), out=out, sessions=run.inputs,
        reports=len(records.reports), skipped=len(records.skipped),
        errors=len(records.error_records),
        repetitions=len(records.scored), duplicates=len(records.duplicates),
        failed_repetitions=len(records.scored) - len(scored),
        mistakes={k: v for k, v in labels.items() if k not in ("correct", "unsure")},
        unsure=labels.get("unsure", 0), duplicate_files=records.duplicates,
        exercise_disagreements=disagreeing(records),
        error_records=records.error_records, report_files=records.reports, overview=page,
        review=review,
        seconds=time.perf_counter() - began,
    )


def disagreeing(records: Records) -> list[str]:
    """The sessions scored this run whose reports disagree with their declared exercise (the
    reports' rule, flows.reports.disagrees)."""
    summaries = [json.loads(s) for s in records.summaries.values()]
    return sorted(s["session_id"] for s in summaries if s.get("exercise_disagreement"))


class StoreUnavailable(RuntimeError):
    """The object store holding the uploads or the reports did not answer."""


def _io_error(exc: BaseException | None) -> OSError | None:
    """The I/O error `exc` is or was raised from (a failed merge wraps it), if any."""
    while exc is not None:
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def store_errors(path: str, out: str) -> Iterator[None]:
    """An I/O error on an object store (after pyarrow's and deltalake's own retries) becomes
    StoreUnavailable naming the endpoint; a missing path and local errors pass unchanged."""
    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, DeltaError) as exc:
        if _io_error(exc) is None or not (storage.is_remote(path) or storage.is_remote(out)):
            raise
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "its default endpoint"
        raise StoreUnavailable(
            f"the object store at {endpoint} did not answer while scoring {path} into {out} "
            f"({exc}); sessions without a ledger entry are scored again by the next run"
        ) from exc


@flow(name="score")
def score_flow(path: str, dataset: str = "ec3d", version: str | None = None,
               out: str | None = None, model: str | None = None, html: bool = True,
               block_sessions: int = BLOCK_SESSIONS, block_seconds: float = BLOCK_SECONDS,
               progress: bool = False, declared: dict | None = None,
               reference: str | None = None) -> dict[str, Any]:
    """Score every uploaded session under `path` with the champion (or a pinned version);
    `declared`: the uploads' conventions (model.data.readers.checked_declarations);
    `reference`: an upload of one person's repetitions known to be correct, or a folder of
    people's (matched to uploads by subject, a session per exercise); every repetition is then
    decided relative to its person's (model.serve.reference; ReferenceUnusable when one can't
    be). OutUnusable when `out` cannot take the reports: before any work when that shows
    (`check_out`), else when a write into it fails."""
    if reference is not None and not storage.exists(reference):
        raise ReferenceUnusable(f"reference {reference}: no such file or folder")
    out = out or get_settings().reports
    check_out(out)
    model_dir, info = resolve_model(dataset, version, model)
    people, caution = None, None
    if reference is not None:
        loaded = TrainedModel.load(model_dir)
        people = upload_references(loaded, reference, declared)
        caution = reference_caution(loaded.meta)
    with store_errors(path, out):
        summary = score_folder(path, out, model_dir, info, html, block_sessions, block_seconds,
                               progress, declared, people).to_dict()
    return {**summary, "reference_caution": caution}
