"""Many uploaded sessions scored together: each file read and cut into repetitions, then every
repetition of the lot classified and corrected in large batches by the one scoring path
(model.serve.scoring.score), then handed back per session.

Work per session (reading, cutting, scoring, and the score flow's reports) can run in forked
worker processes that hold the model (`SessionWorkers`), each on a few sessions at a time; the
workers die with the process that forked them.

Every input comes back: as a scored session, or with the reason it could not be scored
(`status` REJECTED for bad input, EMPTY when no repetition was found, FAILED for an unexpected
error). Files on an object store (s3://, gs://) are read through model.data.storage.

With references (`upload_references`: uploads of people's repetitions known to be correct),
every repetition is decided relative to its person's (model.serve.reference).

Declarations of the uploads' conventions (`declared`: up, units, mirrored, fps, zeros_lost,
layout, layout_file, as model.data.readers.read_session takes them) reach the reader of every
file, in whichever process reads it; each file is its own source, settled against its own data.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import TypeVar

import torch

from model.data import storage
from model.data.formats import SESSION_READERS
from model.data.readers import read_session
from model.data.sequence import Sequence, SequenceError
from model.learn.saved import TrainedModel
from model.serve.reference import (
    Reference,
    References,
    ReferenceUnusable,
    reference_cut,
    reference_of,
)
from model.serve.scoring import BATCH_SIZE, RepResult, cut_session, normalize_valid, score

SCORED, REJECTED, FAILED, EMPTY = "scored", "rejected", "failed", "empty"
T, R = TypeVar("T"), TypeVar("R")


@dataclass
class SessionScore:
    """One uploaded session: its repetitions' results, or why it has none."""

    input: str
    session: Sequence | None = None
    results: list[RepResult] = field(default_factory=list)
    status: str = SCORED
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SCORED

    @property
    def session_id(self) -> str | None:
        return None if self.session is None else self.session.meta.get("session_id")


def read_upload(uri: str, declared: dict | None = None) -> Sequence:
    """An uploaded session from a local path or an object-store URI (the URI kept as source),
    read with the `declared` conventions (model.data.readers.read_session)."""
    declared = declared or {}
    if not storage.is_remote(uri):
        return read_session(Path(uri), **declared)
    suffix = Path(uri.rsplit("/", 1)[-1]).suffix
    with tempfile.TemporaryDirectory(prefix="posecoach-upload-") as tmp:
        local = Path(tmp) / f"upload{suffix}"
        local.write_bytes(storage.read_bytes(uri))
        try:
            session = read_session(local, **declared)
        except SequenceError as exc:
            raise SequenceError(uri, exc.reason, exc.kind) from exc
    session.source = uri
    return session


def _failed(uri: str, exc: Exception, kind: str = "failed") -> SessionScore:
    return SessionScore(uri, status=FAILED, error=f"{uri}: {type(exc).__name__}: {exc}",
                        error_kind=kind)


def cut_upload(model: TrainedModel, uri: str, declared: dict | None = None
               ) -> tuple[SessionScore, list[Sequence]]:
    """Read one upload (with the `declared` conventions) and cut it into repetitions; a
    SessionScore saying why not, if not."""
    try:
        session = read_upload(uri, declared)
        return SessionScore(uri, session=session), cut_session(model, session)
    except SequenceError as exc:
        status = EMPTY if exc.kind == "no_repetitions" else REJECTED
        message = str(exc) if str(exc).startswith(uri) else f"{uri}: {exc}"
        return SessionScore(uri, status=status, error=message, error_kind=exc.kind), []
    except Exception as exc:  # noqa: BLE001 - an upload must never vanish from the batch
        return _failed(uri, exc), []


Cut = tuple[SessionScore, list[Sequence]]


def score_cut(model: TrainedModel, cut: list[Cut], batch_size: int = BATCH_SIZE,
              references: References | None = None) -> list[SessionScore]:
    """Score the repetitions of sessions already cut (`cut_upload`), all in one go."""
    reps = [rep for _, session_reps in cut for rep in session_reps]
    results = iter(score(model, reps, batch_size, references))
    out = []
    for scored, session_reps in cut:
        if scored.ok:
            scored.results = [next(results) for _ in session_reps]
        out.append(scored)
    return out


def score_uploads(model: TrainedModel, uris: Iterable[str], batch_size: int = BATCH_SIZE,
                  declared: dict | None = None, references: References | None = None
                  ) -> list[SessionScore]:
    """Score uploaded session files together; one SessionScore per input, in input order."""
    return score_cut(model, [cut_upload(model, uri, declared) for uri in uris], batch_size,
                     references)


def upload_reference(model: TrainedModel, uri: str, declared: dict | None = None) -> Reference:
    """The Reference of an upload whose repetitions are all known to be correct: read, cut and
    classified; identified by the file's SHA-256, its person by the session's subject.
    ReferenceUnusable naming the file when it cannot be read or cut, whatever the reason (the
    reason of an unexpected error with its type, as a `failed` upload's), or when the model has
    no fitted cut."""
    reference_cut(model.meta)
    try:
        session = read_upload(uri, declared)
        reps = cut_session(model, session)
        poses, _ = normalize_valid(model, reps)
        digest = storage.sha256(uri)
    except SequenceError as exc:
        message = str(exc) if str(exc).startswith(uri) else f"{uri}: {exc}"
        raise ReferenceUnusable(f"reference {message}") from exc
    except Exception as exc:  # noqa: BLE001 - whatever the file holds, never a traceback
        raise ReferenceUnusable(f"reference {uri}: {type(exc).__name__}: {exc}") from exc
    return reference_of(model.infer(poses).log_probs, [tuple(c) for c in model.classes],
                        [r.exercise for r in reps], digest, uri, str(session.subject))


def upload_references(model: TrainedModel, uri: str, declared: dict | None = None
                      ) -> References:
    """A file: the reference of everyone scored with it. A folder or prefix: reference sessions
    of people (a person's sessions of different exercises together), each judging the uploads of
    its subject; others are judged without one. ReferenceUnusable naming the file(s) when one is
    unusable, when two hold one person's same exercise, or when there is none."""
    files = _reference_files(uri)
    if files == [str(uri)]:
        return References(everyone=upload_reference(model, uri, declared))
    if not files:
        raise ReferenceUnusable(f"reference {uri}: no such file, or no session file in it")
    people: dict[str, Reference] = {}
    where: dict[tuple[str, str], str] = {}
    for path in files:
        mine = upload_reference(model, path, declared)
        for exercise in mine.offsets:
            if (mine.subject, exercise) in where:
                raise ReferenceUnusable(
                    f"reference {path}: a second {exercise} reference of {mine.subject!r} "
                    f"(the first: {where[mine.subject, exercise]})")
            where[mine.subject, exercise] = path
        people[mine.subject] = (mine if mine.subject not in people
                                else people[mine.subject].joined(mine))
    return References(by_subject=people)


def _reference_files(uri: str) -> list[str]:
    """The session files `uri` is or holds; ReferenceUnusable naming it when it cannot be listed
    or is no file to read (a FIFO, say)."""
    try:
        entries = storage.list_entries(uri)
    except OSError as exc:
        raise ReferenceUnusable(f"reference {uri}: {exc.strerror or exc}") from exc
    refused = [e.problem[1] for e in entries if e.uri == str(uri) and e.problem is not None]
    if refused:
        raise ReferenceUnusable(f"reference {uri}: {refused[0]}")
    return [e.uri for e in entries
            if e.problem is None and storage.named(e.uri, tuple(SESSION_READERS))]


_WORKER_MODEL: TrainedModel | None = None
_PR_SET_PDEATHSIG = 1


def _start_worker() -> None:
    """Pool worker start: one torch thread (the workers share the cores among themselves, and
    OpenMP's thread pool does not survive a fork); SIGTERM (the pool's terminate) ends this
    worker outright, whatever handler the parent had installed (a Prefect flow's turns it into
    an exception, which can leave the pool's queue lock held and the pool's join waiting
    forever); on Linux, the kernel kills this worker when its parent dies."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@contextmanager
def heap_frozen_for_fork() -> Iterator[None]:
    """Every object alive now moved out of the cycle collector's reach in the processes forked
    inside the block: their collections then walk only the objects they make themselves, rather
    than the parent's whole heap (Prefect, MLflow, torch: several hundred thousand objects),
    which also copies the parent's pages into each of them. The parent's collector gets its
    objects back after the block."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _apply_in_worker(job: tuple[Callable[[TrainedModel, T], R], T]) -> R:
    assert _WORKER_MODEL is not None
    fn, item = job
    return fn(_WORKER_MODEL, item)


class SessionWorkers:
    """`workers` forked processes that hold the model (this process alone when workers < 1 or
    fork is not available); `each` runs fn(model, item) over items in them, a few at a time,
    and hands the results back in input order as they come."""

    def __init__(self, model: TrainedModel, workers: int):
        self.model = model
        can_fork = "fork" in multiprocessing.get_all_start_methods()
        self.workers = workers if can_fork else 0
        self.pool: Pool | None = None

    def __enter__(self) -> SessionWorkers:
        global _WORKER_MODEL
        if self.workers >= 1:
            _WORKER_MODEL = self.model
            with heap_frozen_for_fork():
                self.pool = multiprocessing.get_context("fork").Pool(
                    self.workers, initializer=_start_worker)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def each(self, fn: Callable[[TrainedModel, T], R], items: list[T]) -> Iterator[R]:
        """fn(model, item) for each item (fn and items picklable), in input order."""
        if self.pool is None:
            return (fn(self.model, item) for item in items)
        return self.pool.imap(_apply_in_worker, [(fn, item) for item in items])
