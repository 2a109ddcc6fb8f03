"""The ingest flow: read -> validate -> write -> quarantine, one Prefect task per stage.

Every input ends as a row of the dataset or as an error record: a sequence that fails
validation, a file that cannot be read at all, a file with nothing in it. Each rejected file is
copied to `<quarantine>/<dataset>/` and described in `_errors.jsonl` there, one JSON line per
rejection (file, original, sequence, kind, reason, time, the fields the file was read with:
those its file-name pattern gave, not the pattern, so the copy is read again without it).
The report says, per file, which up axis, units and mirroring its rows got and from where
(declared, an option, or the data), and which CSV columns were read past (per-joint
confidence columns, `ignored_columns`).
Ingesting a file from the quarantine folder again, once fixed, takes it out of quarantine when
nothing in it is rejected any more.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flows.output import console
from model.data.card import ensure_card, load_card
from model.data.conventions import FORCEABLE, file_conventions
from model.data.dataset import Dataset, WriteResult
from model.data.formats import IGNORED_COLUMNS
from model.data.labels import no_correct_warning, without_correct
from model.data.names import safe_file_name
from model.data.readers import (
    LAYOUT_FILE,
    PATTERN,
    folder_files,
    iter_sequences,
    recorded_fields,
)
from model.data.sequence import Sequence, SequenceError, validate_many
from model.settings import get_settings

ERRORS_FILE = "_errors.jsonl"
VALIDATE_BATCH = 1024  # sequences checked at once (model.data.sequence.validate_many)


@dataclass(frozen=True)
class Rejection:
    """One input that did not become a row: which file, which sequence in it, why."""

    file: str
    sequence: str | None
    kind: str
    reason: str
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass
class IngestReport:
    dataset: str
    files: int
    inputs: int
    accepted: int
    inserted: int
    duplicates: int
    updated: int
    rejections: list[Rejection]
    version: int | None
    quarantined: list[str]
    released: list[str]
    seconds: float
    conventions: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    @property
    def rejected_by_kind(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.rejections).most_common())

    @property
    def accounted(self) -> bool:
        """Every input is a row (inserted, duplicate or updated) or an error record."""
        return (self.inputs == self.accepted + self.rejected
                and self.accepted == self.inserted + self.duplicates + self.updated)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(rejected=self.rejected, rejected_by_kind=self.rejected_by_kind,
                   accounted=self.accounted,
                   per_second=round(self.inputs / self.seconds, 1) if self.seconds else None)
        return out


@dataclass
class ReadResult:
    """The read stage's output: sequences with the file each came from, and rejections."""

    sequences: list[tuple[str, Sequence]]
    rejections: list[Rejection]
    conventions: dict[str, dict[str, Any]] = field(default_factory=dict)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)  # per file, read past

    @property
    def inputs(self) -> int:
        return len(self.sequences) + len(self.rejections)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def input_files(source: Path) -> list[Path]:
    """The files a source stands for, as the readers walk a folder."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise SequenceError(str(source), "no such file or folder", "missing_source")
    return folder_files(source)


@dataclass(frozen=True)
class Unit:
    """One call of the readers: a file or folder, its declared options, the files it covers."""

    path: Path
    options: dict[str, Any]
    files: tuple[Path, ...]


def plan(sources: Iterable[str | Path], dataset: str, declared: dict[str, Any]) -> list[Unit]:
    """What to read. A folder is read whole (its manifests apply); a file in quarantine is read
    alone with the fields recorded when it was quarantined, each option declared now replacing
    the recorded field of its name. The recorded up axis, units and mirroring are not made
    options (options override the data): the data tells them again, unless an option does;
    nor is a pattern, which was searched in the original's path, not the copy's (records keep
    the fields it gave)."""
    folder = quarantine_dir(dataset)
    recorded = {
        r["file"]: {k: v for k, v in (r.get("fields") or {}).items()
                    if k not in (*FORCEABLE, PATTERN)}
        for r in read_errors(folder)}
    units: list[Unit] = []
    for src in map(Path, sources):
        files = input_files(src)
        if src.is_dir() and not _inside(src, folder):
            units.append(Unit(src, declared, tuple(files)))
        else:
            units += [Unit(f, {**recorded.get(str(f.resolve()), {}), **declared}, (f,))
                      for f in files]
    return units


def _file_of(source: str) -> str:
    """The file a reader's item came from (readers name pieces `file#where`)."""
    return source.split("#", 1)[0]


def _read_unit(unit: Unit, on_file: Any) -> ReadResult:
    out = ReadResult([], [])
    seen: set[str] = set()
    try:
        for item in iter_sequences(unit.path, **unit.options):
            file = _file_of(item.source)
            if file not in seen:
                seen.add(file)
                on_file()
            if isinstance(item, SequenceError):
                out.rejections.append(Rejection(file, item.source, item.kind, item.reason))
            else:
                out.sequences.append((file, item))
                out.conventions.setdefault(file, file_conventions(item))
                if item.meta.get(IGNORED_COLUMNS):
                    out.ignored_columns.setdefault(file, item.meta[IGNORED_COLUMNS])
    except SequenceError as exc:  # the reason names what failed when it is not the file itself
        reason = exc.reason if exc.source == str(unit.path) else f"{exc.source}: {exc.reason}"
        out.rejections.append(Rejection(str(unit.path), None, exc.kind, reason))
    except Exception as exc:  # a reader bug or an exotic failure must still leave a record
        out.rejections.append(Rejection(str(unit.path), None, "unreadable",
                                        f"{type(exc).__name__}: {exc}"))
    recorded = seen | {r.file for r in out.rejections}
    for file in unit.files:
        if str(file) not in recorded:
            out.rejections.append(Rejection(str(file), None, "empty", "no sequences in this file"))
        if str(file) not in seen:
            on_file()
    return out


@task(name="read", cache_policy=NONE)
def read_inputs(units: list[Unit]) -> ReadResult:
    """Read every unit with the readers; every file yields sequences or rejections."""
    out = ReadResult([], [])
    with _progress() as bar:
        job = bar.add_task("read", total=sum(len(u.files) for u in units))
        for unit in units:
            got = _read_unit(unit, lambda: bar.advance(job))
            out.sequences += got.sequences
            out.rejections += got.rejections
            out.conventions |= got.conventions
            out.ignored_columns |= got.ignored_columns
    return out


def _describe(seq: Sequence) -> str:
    return f"{seq.subject}/{seq.exercise}/{seq.label}/rep {seq.rep}"


@task(name="validate", cache_policy=NONE)
def validate_sequences(read: ReadResult, exercises: tuple[str, ...] = ()
                       ) -> tuple[list[Sequence], list[Rejection]]:
    """Keep the sequences that pass validate_many and are of the dataset card's `exercises`
    (any, when it lists none); the others become rejections."""
    good: list[Sequence] = []
    bad: list[Rejection] = []
    with _progress() as bar:
        job = bar.add_task("validate", total=len(read.sequences))
        for start in range(0, len(read.sequences), VALIDATE_BATCH):
            batch = read.sequences[start:start + VALIDATE_BATCH]
            checked = validate_many(seq for _, seq in batch)
            for (path, seq), result in zip(batch, checked, strict=True):
                if not isinstance(result, SequenceError) and exercises and (
                        result.exercise not in exercises):
                    result = SequenceError(str(path), f"exercise {result.exercise!r} is not on "
                                           f"the dataset's card ({', '.join(exercises)})",
                                           "unknown_exercise")
                if isinstance(result, SequenceError):
                    bad.append(Rejection(path, _describe(seq), result.kind, result.reason))
                else:
                    good.append(result)
            bar.advance(job, len(batch))
    return good, bad


@task(name="write", cache_policy=NONE)
def write_dataset(dataset: str, seqs: list[Sequence], note: str) -> WriteResult:
    """Merge the good sequences into the dataset in one commit."""
    return Dataset(dataset).write(seqs, note=note)


def quarantine_dir(dataset: str) -> Path:
    return get_settings().quarantine / dataset


def read_errors(folder: Path) -> list[dict[str, Any]]:
    """The error records of a quarantine folder (oldest first)."""
    path = folder / ERRORS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_errors(folder: Path, records: list[dict[str, Any]]) -> None:
    tmp = folder / f".{ERRORS_FILE}.{os.getpid()}.tmp"
    tmp.write_text("".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records))
    os.replace(tmp, folder / ERRORS_FILE)


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _quarantine_copy(path: Path, folder: Path) -> Path:
    """Copy a rejected file into the quarantine folder under a safe name (its own when plain);
    same bytes reuse the existing copy."""
    target = folder / safe_file_name(path.name)
    if target.exists() and _digest(target) != _digest(path):
        target = target.with_name(f"{target.stem}-{_digest(path)[:8]}{target.suffix}")
    if not target.exists():
        shutil.copy2(path, target)
    return target


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _fields(file: Path, unit: Unit, recorded: dict[str, Any]) -> dict[str, Any]:
    """The fields a file was read with (layout, manifest, options, the fields its file-name
    pattern gave, not the pattern; for a file in quarantine, those `recorded` with the options
    over them), its layout file an absolute path, so that a re-ingest from any folder finds it
    and needs no pattern to match the quarantined copy's path."""
    root = unit.path if unit.path.is_dir() else file.parent
    kept = {k: v for k, v in recorded.items() if k != PATTERN}
    fields = {**kept, **recorded_fields(file, root, unit.options)}
    if fields.get(LAYOUT_FILE):
        fields[LAYOUT_FILE] = str(Path(fields[LAYOUT_FILE]).resolve())
    return fields


@task(name="quarantine", cache_policy=NONE)
def quarantine(dataset: str, units: list[Unit],
               rejections: list[Rejection]) -> tuple[list[str], list[str]]:
    """Copy rejected files to quarantine with their error records; release fixed ones.

    Returns (quarantined copies, released files).
    """
    folder = quarantine_dir(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[Rejection]] = {}
    for rej in rejections:
        by_file.setdefault(rej.file, []).append(rej)
    unit_of = {str(f): u for u in units for f in u.files}
    records = read_errors(folder)
    replaced: set[str] = set()
    new: list[dict[str, Any]] = []
    quarantined: list[str] = []
    released: list[str] = []
    for name in dict.fromkeys([*unit_of, *by_file]):
        path = Path(name)
        inside = _inside(path, folder)
        if name not in by_file:
            if inside:
                replaced.add(str(path.resolve()))
                path.unlink()
                released.append(name)
            continue
        if not path.is_file():
            continue
        copy = path if inside else _quarantine_copy(path, folder)
        key = str(copy.resolve())
        replaced.add(key)
        quarantined.append(str(copy))
        old = next((r for r in records if r["file"] == key), None)
        recorded = old["fields"] if old and inside else {}
        fields = _fields(path, unit_of[name], recorded) if name in unit_of else recorded
        original = old["original"] if old else str(path.resolve())
        new += [{**asdict(r), "file": key, "original": original, "fields": fields}
                for r in by_file[name]]
    _write_errors(folder, [r for r in records if r["file"] not in replaced] + new)
    return quarantined, released


@flow(name="ingest")
def ingest_flow(sources: list[str], dataset: str = "ec3d", **declared: Any) -> IngestReport:
    """Ingest labelled sequences from files or folders into a dataset; account for every input.

    Files re-ingested from the quarantine folder are read with the fields recorded when they
    were quarantined, each declared option replacing the recorded field of its name.
    """
    start = time.perf_counter()
    units = plan(sources, dataset, declared)
    read = read_inputs(units)
    card = load_card(Dataset(dataset))
    good, invalid = validate_sequences(read, card.exercises)
    note = f"ingest of {', '.join(map(str, sources))}"[:500]
    written = write_dataset(dataset, good, note)
    ensure_card(Dataset(dataset))  # a dataset's first ingest writes its default card
    rejections = read.rejections + invalid
    quarantined, released = quarantine(dataset, units, rejections)
    return IngestReport(
        dataset=dataset, files=sum(len(u.files) for u in units), inputs=read.inputs,
        accepted=len(good), inserted=written.inserted, duplicates=written.duplicates,
        updated=written.updated, rejections=rejections, version=written.version,
        quarantined=quarantined, released=released,
        seconds=round(time.perf_counter() - start, 3), conventions=read.conventions,
        warnings=dataset_warnings(dataset), ignored_columns=read.ignored_columns,
    )


def dataset_warnings(dataset: str) -> list[str]:
    """What is wrong with the dataset as a whole after an ingest: exercises without a correct
    class, whose repetitions a model trained on it cannot correct."""
    warning = no_correct_warning(without_correct(Dataset(dataset).classes()))
    return [warning] if warning else []
