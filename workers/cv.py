"""Leave-one-subject-out cross-validation with every fold as a Ray task.

Each fold calls model.evaluate.folds.run_fold in a Ray worker process (a GPU fraction where the
cluster has GPUs, `threads_per_fold` CPUs otherwise) and checkpoints under
`workdir/fold-<subject>/`.
A fold whose worker process dies (killed, out of memory, node lost) is submitted again and
resumes from its last checkpoint, at most `max_retries` times; an exception raised by the fold's
own code is not retried. Either way a fold that cannot finish fails the whole cross-validation
with a FoldError naming the fold and the cause: no figures are ever computed over a partial set
of folds. On a cluster, `workdir` must be storage every node sees at the same path (an NFS/EFS
mount, for instance) so that a retry on another node finds the checkpoint.

Without a `workdir`, each cross-validation gets a fresh folder under $POSECOACH_HOME/cv, held
(flock) while it runs. Its folds' checkpoints and models serve the run alone (the figures go on
in memory and to MLflow), so the folders of earlier runs beyond the newest `keep_cv` (settings,
POSECOACH_KEEP_CV) are removed when a new one is made, never one a running cross-validation
holds; a killed run's folder is no longer held, and goes in its turn.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from model.data.normalize import Normalization
from model.data.sequence import Sequence
from model.evaluate.folds import loso_folds, run_fold
from model.evaluate.summary import summarise
from model.learn.config import TrainConfig
from model.settings import get_settings
from workers.cluster import Placement, capacity, ensure_ray, placement, where

log = logging.getLogger(__name__)

#: Failures of the process or node running a fold, not of the fold's code: worth a retry.
WORKER_LOST = (
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.OutOfMemoryError,
    ray.exceptions.LocalRayletDiedError,
    ray.exceptions.ObjectLostError,
)
PID_FILE = "worker.pid"
HELD_FILE = "running.lock"  # flock-ed by the cross-validation using the folder
CV_FOLDER = re.compile(r"\d{8}-\d{6}-[0-9a-f]{6}")  # what fresh_workdir names them


class FoldError(RuntimeError):
    """A fold that failed for good; the message names the fold and the cause."""

    def __init__(self, held_out: str, cause: str, attempts: int):
        super().__init__(f"fold held_out={held_out!r} failed after {attempts} attempt(s): {cause}")
        self.held_out = held_out
        self.cause = cause
        self.attempts = attempts


@dataclass
class FoldOutcome:
    """One finished fold: its figures (FoldResult.to_dict()), saved model and where it ran."""

    held_out: str
    train_subjects: list[str]
    metrics: dict
    model_dir: str
    node_id: str
    pid: int
    attempts: int


@dataclass
class CVResult:
    """Every fold's outcome, and the mean and spread over folds of each scalar figure."""

    folds: list[FoldOutcome]
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"folds": [asdict(f) for f in self.folds], "mean": self.mean, "std": self.std}


def fold_in_process(sequences: list[Sequence], held_out: str, train_subjects: list[str],
                    config: TrainConfig, fold_dir: Path,
                    norm: Normalization = Normalization()) -> dict:
    """Run one fold in the current process (what each Ray task does); returns plain values.
    Training sets the process's torch threads from config.threads."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    (fold_dir / PID_FILE).write_text(str(os.getpid()))
    train = [s for s in sequences if s.subject in set(train_subjects)]
    test = [s for s in sequences if s.subject == held_out]
    result = run_fold(train, test, config, workdir=fold_dir, norm=norm, progress=False)
    return {"metrics": result.to_dict(), "model_dir": str(result.model_dir), **where()}


_fold_task = ray.remote(max_retries=0)(fold_in_process)


@contextmanager
def _held(folder: Path, wait: bool = True) -> Iterator[bool]:
    """Hold the folder's lock (flock) while in the block; False, holding nothing, when another
    process holds it and not `wait`."""
    with open(folder / HELD_FILE, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def prune_workdirs(root: Path, keep: int) -> list[Path]:
    """Remove the cross-validation folders under `root` beyond the newest `keep`, except those
    a running cross-validation holds; returns the removed ones."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and CV_FOLDER.fullmatch(p.name))
    removed = []
    for folder in folders[: max(0, len(folders) - keep)]:
        with _held(folder, wait=False) as mine:
            if not mine:
                continue
            try:
                shutil.rmtree(folder)
            except OSError as exc:  # the retrain goes on; the folder stays for next time
                log.warning("could not remove the cross-validation folder %s: %s", folder, exc)
                continue
        removed.append(folder)
    return removed


@contextmanager
def fresh_workdir(keep: int) -> Iterator[Path]:
    """A new folder under $POSECOACH_HOME/cv for one cross-validation's checkpoints and
    models, held while in use; the earlier ones beyond the newest `keep` are removed first."""
    root = get_settings().home / "cv"
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        with open(root / ".lock", "ab") as guard:  # one pruning or new folder at a time
            fcntl.flock(guard, fcntl.LOCK_EX)
            if removed := prune_workdirs(root, keep):
                log.info("removed %d earlier cross-validation folders under %s (keep_cv %d)",
                         len(removed), root, keep)
            folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            folder.mkdir()
            stack.enter_context(_held(folder))
        yield folder


def cross_validate(sequences: list[Sequence], config: TrainConfig,
                   subjects: list[str] | None = None, max_retries: int = 2,
                   threads_per_fold: int = 1,
                   workdir: str | Path | None = None, max_concurrent: int | None = None,
                   gpu_fraction: float = 0.5, progress: bool = True,
                   norm: Normalization = Normalization()) -> CVResult:
    """Leave-one-subject-out folds over `subjects` (default: every subject in `sequences`).

    Folds run concurrently up to the cluster's capacity (or `max_concurrent`); each is retried
    from its checkpoint when its worker process dies, at most `max_retries` times.
    """
    present = {s.subject for s in sequences}
    subjects = sorted(set(subjects) if subjects is not None else present)
    if missing := sorted(set(subjects) - present):
        raise ValueError(f"cross-validation subjects {missing} have no sequences")
    plan = loso_folds(subjects)
    ensure_ray()
    place = placement(threads_per_fold, gpu_fraction)
    config = config.placed(device=place.device, threads=threads_per_fold)
    limit = max_concurrent or capacity(place)
    with (nullcontext(Path(workdir)) if workdir is not None
          else fresh_workdir(get_settings().keep_cv)) as root:
        data_ref = ray.put([s for s in sequences if s.subject in set(subjects)])
        log.info("cross-validation: %d folds, up to %d at a time, workdir %s",
                 len(plan), limit, root)
        runner = _FoldRunner(data_ref, config, root, place, max_retries, norm)
        outcomes = runner.run(plan, limit, progress)
    mean, std = summarise([o.metrics for o in outcomes])
    return CVResult(folds=outcomes, mean=mean, std=std)


class _FoldRunner:
    """Submits folds, keeps at most `limit` in flight, retries lost workers, reports progress."""

    def __init__(self, data_ref, config: TrainConfig, workdir: Path, place: Placement,
                 max_retries: int, norm: Normalization):
        self.norm = norm
        self.data_ref = data_ref
        self.config = config
        self.workdir = workdir
        self.place = place
        self.max_retries = max_retries
        self.attempts: dict[str, int] = {}

    def submit(self, held_out: str, train_subjects: list[str]) -> ray.ObjectRef:
        self.attempts[held_out] = self.attempts.get(held_out, 0) + 1
        return _fold_task.options(**self.place.options()).remote(
            self.data_ref, held_out, list(train_subjects), self.config,
            self.workdir / f"fold-{held_out}", self.norm,
        )

    def run(self, plan: list[tuple[str, list[str]]], limit: int,
            progress: bool) -> list[FoldOutcome]:
        queue = list(plan)
        pending: dict[ray.ObjectRef, tuple[str, list[str]]] = {}
        done: dict[str, FoldOutcome] = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
            task = bar.add_task("cross-validation", total=len(plan))
            try:
                while queue or pending:
                    while queue and len(pending) < limit:
                        fold = queue.pop(0)
                        pending[self.submit(*fold)] = fold
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    fold = pending.pop(ready[0])
                    outcome = self.collect(ready[0], fold)
                    if outcome is None:
                        queue.insert(0, fold)
                        continue
                    done[fold[0]] = outcome
                    bar.update(task, advance=1,
                               description=f"cross-validation (fold {fold[0]} done)")
            finally:
                for ref in pending:
                    ray.cancel(ref, force=True)
        return [done[held_out] for held_out, _ in plan]

    def collect(self, ref: ray.ObjectRef, fold: tuple[str, list[str]]) -> FoldOutcome | None:
        """The fold's outcome; None when its worker was lost and a retry is due."""
        held_out, train_subjects = fold
        attempts = self.attempts[held_out]
        try:
            out = ray.get(ref)
        except WORKER_LOST as exc:
            if attempts > self.max_retries:
                raise FoldError(held_out, f"worker lost: {exc}", attempts) from exc
            log.warning("fold %s: worker lost (%s); retry %d of %d from its last checkpoint",
                        held_out, type(exc).__name__, attempts, self.max_retries)
            return None
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise FoldError(held_out, f"{type(cause).__name__}: {cause}", attempts) from exc
        return FoldOutcome(held_out=held_out, train_subjects=list(train_subjects),
                           metrics=out["metrics"], model_dir=out["model_dir"],
                           node_id=out["node_id"], pid=out["pid"], attempts=attempts)
