"""Named datasets as Delta Lake tables: one row per sequence, partitioned by exercise.

A dataset lives at `<settings.lake>/<name>` (a local path or an object-store URI). Every commit
is atomic (Delta's transaction log: a writer killed at any moment leaves the table as before or
as after) and numbered; any version can be read back. Writing merges on `sequence_id`, so
re-ingesting the same data adds nothing and a changed label updates its row in a new version:
a write reads the ids and labels already in its partitions (two columns), then appends only the
new sequences (or merges them with the relabelled ones) in one commit.
Concurrent writers are serialised by Delta's optimistic concurrency: every commit that decided
what to write from what it read carries a token (a Delta txn action) per partition it read, so
two such commits on the same partitions conflict, and the later one is retried, with backoff,
against the new state of the table.

Deleting a subject removes their rows from the current version; their data files stay on disk
for time travel until `vacuum(retention_hours=0)` (or `delete_subject(..., purge=True)`) removes
them, after which versions older than the deletion can no longer be read.

deltalake's runtime does not survive fork(): processes that use this module start with spawn.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import Transaction

from model.data.names import safe_file_name, sql_text
from model.data.sequence import Sequence, SequenceError
from model.settings import get_settings

MAX_COMMIT_ATTEMPTS = 30
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 2.0
PARTITION_COLUMN = "exercise"
PARTITION_TOKEN = "posecoach.dataset.partition:"
RESTORE_KEY = "posecoach.restore"  # a restore commit's rows changed (Delta counts only files)
CHANGES = ("inserted", "updated", "deleted")

SCHEMA = pa.schema(
    [
        pa.field("sequence_id", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("exercise", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("rep", pa.int32(), nullable=False),
        pa.field("fps", pa.float64(), nullable=False),
        pa.field("skeleton", pa.string(), nullable=False),
        pa.field("units", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("n_frames", pa.int32(), nullable=False),
        pa.field("n_joints", pa.int32(), nullable=False),
        pa.field("poses", pa.list_(pa.float32()), nullable=False),
        pa.field("meta", pa.string()),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

T = TypeVar("T")


@dataclass(frozen=True)
class WriteResult:
    """What one write did: rows inserted, inputs already present, labels updated, new version."""

    inserted: int
    duplicates: int
    updated: int
    version: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"inserted": self.inserted, "duplicates": self.duplicates,
                "updated": self.updated, "version": self.version}


def _retry_commit(action: Callable[[], T], what: str) -> T:
    """Run `action` until its commit goes through; a conflict with another writer is retried."""
    attempt = 0
    while True:
        try:
            return action()
        except CommitFailedError as exc:
            attempt += 1
            if attempt >= MAX_COMMIT_ATTEMPTS:
                raise RuntimeError(
                    f"{what}: still conflicting with other writers after {attempt} attempts"
                ) from exc
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)
            time.sleep(delay * (0.5 + random.random()))


def to_table(seqs: Iterable[Sequence], ingested_at: datetime | None = None,
             ids: list[str] | None = None) -> pa.Table:
    """Sequences as rows of the dataset's schema (poses flat, their shape alongside).

    `ids` are the sequences' sequence_id when the caller has them already (each is a hash of
    the poses)."""
    seqs = list(seqs)
    now = ingested_at or datetime.now(UTC)
    poses = [np.ascontiguousarray(s.poses, dtype=np.float32) for s in seqs]
    flat = np.concatenate([p.reshape(-1) for p in poses]) if poses else np.empty(0, np.float32)
    offsets = np.concatenate([[0], np.cumsum([p.size for p in poses])]).astype(np.int32)
    columns = {
        "sequence_id": ids if ids is not None else [s.sequence_id for s in seqs],
        "subject": [str(s.subject) for s in seqs],
        "exercise": [s.exercise for s in seqs],
        "label": [s.label for s in seqs],
        "rep": [int(s.rep) for s in seqs],
        "fps": [float(s.fps) for s in seqs],
        "skeleton": [s.skeleton for s in seqs],
        "units": [s.units for s in seqs],
        "source": [s.source for s in seqs],
        "n_frames": [p.shape[0] for p in poses],
        "n_joints": [p.shape[1] for p in poses],
        "poses": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32())),
        "meta": [json.dumps(s.meta, default=str, sort_keys=True) if s.meta else "{}"
                 for s in seqs],
        "ingested_at": [now] * len(seqs),
    }
    return pa.table(columns, schema=SCHEMA)


def from_table(table: pa.Table) -> list[Sequence]:
    """Rows of the dataset's schema back as Sequences."""
    poses_col = table.column("poses").combine_chunks()
    values = poses_col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    offsets = poses_col.offsets.to_numpy()
    rows = table.drop_columns(["poses"]).to_pylist()
    out = []
    for i, row in enumerate(rows):
        poses = values[offsets[i]:offsets[i + 1]].reshape(row["n_frames"], row["n_joints"], 3)
        out.append(Sequence(
            poses=poses.copy(), subject=row["subject"], exercise=row["exercise"],
            skeleton=row["skeleton"], fps=row["fps"], label=row["label"], rep=row["rep"],
            source=row["source"] or "", units=row["units"], meta=json.loads(row["meta"] or "{}"),
        ))
    return out


def _partition_tokens(exercises: Iterable[str], read_version: int) -> list[Transaction]:
    """One Delta application transaction (txn action) per exercise partition a commit read.

    Delta fails a commit when a commit made since its read version carries a txn with the same
    app id, so two writes that read the same partition and decided from what they read conflict
    and the later one is re-run on the new state. Without it two appends never conflict; deletes
    and restores already conflict with a concurrent append (deltalake 1.6 does not mark appends
    as blind)."""
    return [Transaction(PARTITION_TOKEN + exercise, read_version + 1)
            for exercise in sorted(set(exercises))]


def _labels(table: DeltaTable, exercises: Iterable[str]) -> dict[str, str | None]:
    """sequence_id -> label of every row in these exercises' partitions (two columns read).

    Read with deltalake's own engine: a pyarrow dataset scan here left writer processes
    aborting at exit now and then ("terminate called without an active exception")."""
    wanted = ", ".join(sql_text(exercise) for exercise in sorted(set(exercises)))
    rows = pa.table(QueryBuilder().register("t", table).execute(
        f"SELECT sequence_id, label FROM t WHERE {PARTITION_COLUMN} IN ({wanted})"))
    return dict(zip(rows.column("sequence_id").to_pylist(), rows.column("label").to_pylist(),
                    strict=True))


def _row_changes(before: pa.Table, after: pa.Table) -> dict[str, int]:
    """What replacing the rows `before` by `after` changes (both with sequence_id and label):
    rows inserted, relabelled (updated) and deleted, and the row counts before and after."""
    old = dict(zip(before.column("sequence_id").to_pylist(), before.column("label").to_pylist(),
                   strict=True))
    new = dict(zip(after.column("sequence_id").to_pylist(), after.column("label").to_pylist(),
                   strict=True))
    return {"rows_before": before.num_rows, "rows_after": after.num_rows,
            "inserted": sum(sid not in old for sid in new),
            "updated": sum(sid in old and old[sid] != label for sid, label in new.items()),
            "deleted": sum(sid not in new for sid in old)}


def _commit_changes(commit: dict[str, Any]) -> dict[str, int | None]:
    """Rows inserted, updated and deleted by one commit of the history: Delta's operation
    metrics, or for a restore the figures it recorded (None when it recorded none)."""
    if commit.get("operation") == "RESTORE":
        recorded = commit.get(RESTORE_KEY) or {}
        return {key: recorded.get(key) for key in CHANGES}
    metrics = commit.get("operationMetrics", {})
    return {"inserted": int(metrics.get("num_target_rows_inserted")
                            or metrics.get("num_added_rows") or 0),
            "updated": int(metrics.get("num_target_rows_updated", 0) or 0),
            "deleted": int(metrics.get("num_deleted_rows", 0) or 0)}


class Dataset:
    """One named dataset (a Delta table under the lake root)."""

    def __init__(self, name: str, root: str | None = None,
                 storage_options: dict[str, str] | None = None):
        if not name or safe_file_name(name) != name:
            raise ValueError(f"dataset name {name!r} must be a plain non-empty name (ASCII "
                             "letters, digits, '.', '_', '-'; not hidden)")
        self.name = name
        self.root = str(root or get_settings().lake).rstrip("/")
        self.uri = f"{self.root}/{name}"
        self.storage_options = storage_options

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, uri={self.uri!r})"

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, self.storage_options)

    def table(self, version: int | None = None) -> DeltaTable:
        """The Delta table (at `version`, or the latest); SequenceError when there is none."""
        try:
            return DeltaTable(self.uri, version=version, storage_options=self.storage_options)
        except TableNotFoundError as exc:
            raise SequenceError(self.uri, f"no dataset {self.name!r} here", "no_dataset") from exc
        except Exception as exc:
            if version is not None and self.exists():
                latest = self.version()
                raise SequenceError(
                    self.uri, f"dataset {self.name!r} has no readable version {version} "
                    f"(latest is {latest}; purged versions cannot be read): {exc}", "no_version",
                ) from exc
            raise

    def _create(self) -> DeltaTable:
        def create() -> DeltaTable:
            if self.exists():
                return self.table()
            return DeltaTable.create(
                self.uri, SCHEMA, partition_by=[PARTITION_COLUMN], mode="ignore",
                name=self.name, storage_options=self.storage_options,
            )
        return _retry_commit(create, f"create {self.uri}")

    def version(self) -> int | None:
        """The latest version, or None when the dataset does not exist yet."""
        return self.table().version() if self.exists() else None

    def write(self, seqs: Iterable[Sequence], note: str | None = None) -> WriteResult:
        """Merge sequences on sequence_id: new ones are inserted, changed labels updated.

        One commit, or none when nothing changes. The ids (and labels) of the rows already in
        the batch's partitions are read first; only new and relabelled sequences are written:
        appended when there are only new ones, merged when labels change. The commit carries
        a token per partition read, so a concurrent write to the same partitions makes it
        conflict and re-run. `note` is kept in the commit (shown by `history()`), e.g. what was
        ingested.
        """
        unique: dict[str, Sequence] = {}
        given = 0
        for seq in seqs:
            given += 1
            unique.setdefault(seq.sequence_id, seq)
        repeats = given - len(unique)
        if not unique:
            return WriteResult(0, repeats, 0, self.version())
        exercises = {seq.exercise for seq in unique.values()}
        unsafe = sorted(e for e in exercises if safe_file_name(e) != e)
        if unsafe:
            raise SequenceError(self.uri, f"exercise {unsafe[0]!r} cannot name a partition "
                                          "folder (validate sequences before writing)",
                                "unsafe_name")
        snapshots = itertools.chain([self._create()], iter(self.table, None))  # fresh on retry
        ingested_at = datetime.now(UTC)

        def commit() -> WriteResult:
            table = next(snapshots)
            present = _labels(table, exercises)
            new = [sid for sid in unique if sid not in present]
            relabelled = [sid for sid in unique
                          if sid in present and present[sid] != unique[sid].label]
            duplicates = len(unique) - len(new) - len(relabelled) + repeats
            if not new and not relabelled:
                return WriteResult(0, duplicates, 0, table.version())
            ids = new + relabelled
            source = to_table([unique[sid] for sid in ids], ingested_at, ids)
            props = CommitProperties(
                custom_metadata={"userMetadata": note} if note else None,
                app_transactions=_partition_tokens(exercises, table.version()))
            if relabelled:
                (table.merge(source, "t.sequence_id = s.sequence_id AND t.exercise = s.exercise",
                             source_alias="s", target_alias="t", streamed_exec=False,
                             commit_properties=props)
                 .when_matched_update(updates={"label": "s.label"})
                 .when_not_matched_insert_all()
                 .execute())
            else:
                write_deltalake(table, source, mode="append", commit_properties=props)
            return WriteResult(len(new), duplicates, len(relabelled), table.version())

        return _retry_commit(commit, f"write into {self.uri}")

    def read_table(self, exercise: str | Iterable[str] | None = None,
                   subjects: Iterable[str] | None = None, labels: Iterable[str] | None = None,
                   version: int | None = None, columns: list[str] | None = None) -> pa.Table:
        """Rows as an Arrow table. The filters prune files in the Delta log (partitions for the
        exercise, per-file statistics for subjects and labels); rows are then filtered exactly."""
        dt = self.table(version)
        wanted: list[tuple[str, list[str]]] = []
        if exercise is not None:
            wanted.append((PARTITION_COLUMN, [exercise] if isinstance(exercise, str)
                           else list(exercise)))
        if subjects is not None:
            wanted.append(("subject", [str(s) for s in subjects]))
        if labels is not None:
            wanted.append(("label", list(labels)))
        pruning = [(col, "in", values) for col, values in wanted] or None
        try:
            table = dt.to_pyarrow_dataset(file_pruning_predicate=pruning).to_table(
                columns=None if columns is None else sorted({*columns, *(c for c, _ in wanted)}))
        except FileNotFoundError as exc:
            raise SequenceError(
                self.uri, f"version {dt.version()} of dataset {self.name!r} refers to files that "
                f"were purged (vacuum); read a later version: {exc}", "purged_version",
            ) from exc
        for col, values in wanted:
            table = table.filter(pc.is_in(table.column(col), pa.array(values, pa.string())))
        if columns is not None:
            table = table.select(columns)
        keys = [k for k in ("exercise", "subject", "rep", "sequence_id") if k in table.schema.names]
        return table.sort_by([(k, "ascending") for k in keys])

    def read(self, exercise: str | Iterable[str] | None = None,
             subjects: Iterable[str] | None = None, labels: Iterable[str] | None = None,
             version: int | None = None) -> list[Sequence]:
        """Sequences matching every filter given, from `version` (default: the latest).

        To record what a run read, take `v = ds.version()` first and pass `version=v`.
        """
        return from_table(self.read_table(exercise, subjects, labels, version))

    def count(self, version: int | None = None) -> int:
        return self.read_table(version=version, columns=["sequence_id"]).num_rows

    def classes(self) -> set[tuple[str, str]]:
        """The (exercise, label) classes the dataset holds now (none before its first write)."""
        if not self.exists() or self.version() is None:
            return set()
        table = self.read_table(columns=["exercise", "label"])
        return set(zip(table.column("exercise").to_pylist(), table.column("label").to_pylist(),
                       strict=True))

    def history(self) -> list[dict[str, Any]]:
        """One record per version, newest first: version, time, operation, rows changed (None
        for a restore that recorded none), note."""
        return [{"version": commit["version"],
                 "time": datetime.fromtimestamp(commit["timestamp"] / 1000, UTC).isoformat(),
                 "operation": commit.get("operation", ""), **_commit_changes(commit),
                 "note": commit.get("userMetadata") or ""}
                for commit in self.table().history()]

    def delete_subject(self, subject: str, purge: bool = False) -> dict[str, Any]:
        """Remove a subject's rows from the current version; `purge` also deletes old files.

        Purging vacuums with zero retention: every file no longer in the current version goes,
        so versions from before the deletion (and any other removed data) cannot be read again.
        """
        def delete() -> int:
            table = self.table()
            rows = self.read_table(subjects=[subject], version=table.version(),
                                   columns=["sequence_id"]).num_rows
            if rows:
                table.delete(f"subject = {sql_text(subject)}")
            return rows

        deleted = _retry_commit(delete, f"delete subject {subject}")
        purged = self.vacuum(retention_hours=0) if purge else []
        return {"subject": subject, "deleted": deleted, "version": self.version(),
                "purged_files": len(purged)}

    def restore(self, version: int) -> dict[str, Any]:
        """Make `version`'s rows the current state again, as a new version (undo a bad ingest).

        The commit records what it changed against the version it replaced (_row_changes),
        which `history()` reports. SequenceError naming the dataset and the version when it
        does not exist, is the current one, or its files were purged."""
        latest = self.version()
        if latest is None or not 0 <= version <= latest:
            raise SequenceError(self.uri, f"dataset {self.name!r} has no version {version} to "
                                f"restore (latest: {latest})", "no_version")
        if version == latest:
            raise SequenceError(self.uri, f"version {version} is the current version of dataset "
                                f"{self.name!r}: nothing to restore", "current_version")
        target = self._restorable(version)

        def commit() -> dict[str, Any]:
            table = self.table()
            changes = _row_changes(self.read_table(version=table.version(),
                                                  columns=["sequence_id", "label"]), target)
            note = (f"restore of version {version}: {changes['rows_before']} -> "
                    f"{changes['rows_after']} rows")
            table.restore(version, commit_properties=CommitProperties(
                custom_metadata={"userMetadata": note, RESTORE_KEY: changes}))
            return {"restored": version, "version": table.version(), **changes}

        return _retry_commit(commit, f"restore {version}")

    def _restorable(self, version: int) -> pa.Table:
        """The ids and labels of `version`'s rows; SequenceError when its files were purged."""
        try:
            return self.read_table(version=version, columns=["sequence_id", "label"])
        except SequenceError as exc:
            raise SequenceError(
                self.uri, f"version {version} of dataset {self.name!r} cannot be restored: "
                "its files were purged (data delete-subject --purge or data vacuum); restore a "
                "version from after the purge", "purged_version") from exc

    def compact(self, target_size: int | None = None) -> dict[str, Any]:
        """Rewrite small files into larger ones (a new version; rows unchanged)."""
        metrics = _retry_commit(
            lambda: self.table().optimize.compact(target_size=target_size), "compact")
        return {"version": self.version(), "files_added": metrics.get("numFilesAdded", 0),
                "files_removed": metrics.get("numFilesRemoved", 0)}

    def vacuum(self, retention_hours: int | None = None) -> list[str]:
        """Delete files no longer referenced and older than the retention (default: a week).

        With `retention_hours=0` every unreferenced file goes at once, including those of
        writers killed mid-write; older versions then may not be readable any more.
        """
        return self.table().vacuum(
            retention_hours=retention_hours, dry_run=False,
            enforce_retention_duration=retention_hours is None, full=retention_hours == 0,
        )
