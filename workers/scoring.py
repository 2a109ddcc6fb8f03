"""Batch scoring with Ray Data: uploaded session files or dataset sequences in, one record per
repetition out, with the saved model loaded once per worker.

Every input is accounted for: a session that cannot be read, validated or mapped onto the model's
skeleton comes back as one record with status "rejected" (or "failed" for an unexpected error)
and the reason; a session in which no repetition was found comes back as "empty". The model is a
saved folder given as a path (every node must see it, e.g. a shared mount) or a URI that
pyarrow.fs reads (s3://, gs://, file://), copied to each worker once. The same code runs on one
machine or on a cluster (workers.cluster.ensure_ray).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import ray
import ray.data

from model.data.sequence import Sequence
from model.learn.saved import TrainedModel
from model.serve.reference import References
from model.serve.scoring import RepResult, score
from model.serve.sessions import EMPTY, FAILED, REJECTED, SCORED, SessionScore, score_uploads
from workers.cluster import capacity, ensure_ray, placement

__all__ = ["EMPTY", "FAILED", "REJECTED", "SCORED", "Scorer", "score_batch"]
#: Every scoring actor is up (model loaded) before batches are handed out, so that work spreads
#: over all of them rather than queueing on the first one ready.
ACTORS_START_S = 600


def local_model_dir(model_uri: str | Path) -> Path:
    """A local folder holding the saved model: the path itself, or a copy of a remote URI."""
    text = str(model_uri)
    if "://" not in text:
        return Path(text)
    fs, path = pafs.FileSystem.from_uri(text)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(path)
    dest = Path(tempfile.mkdtemp(prefix="posecoach-model-"))
    pafs.copy_files(path, str(dest), source_filesystem=fs,
                    destination_filesystem=pafs.LocalFileSystem())
    return dest


def sequence_row(index: int, seq: Sequence) -> dict:
    """A sequence as a Ray Data row of plain values: poses as float32 bytes, fields as JSON."""
    poses = np.ascontiguousarray(seq.poses, dtype=np.float32)
    fields = {k: v for k, v in asdict(seq).items() if k != "poses"}
    fields["shape"] = list(poses.shape)
    return {"index": index, "poses": poses.tobytes(), "fields": json.dumps(fields)}


def row_sequence(poses: bytes, fields_json: str) -> Sequence:
    fields = json.loads(fields_json)
    shape = fields.pop("shape")
    return Sequence(poses=np.frombuffer(poses, dtype=np.float32).reshape(shape), **fields)


def _json(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


SessionHook = Callable[[Sequence, list[RepResult], TrainedModel], dict]


class Scorer:
    """A Ray Data worker: loads the model once, then scores batch after batch.

    `on_session`, when given, runs on the worker after each session is scored (the caller's
    report writer, say) and returns fields added to that session's records; if it fails, the
    session comes back as one "failed" record with the reason."""

    def __init__(self, model_uri: str, device: str = "cpu", on_session: SessionHook | None = None,
                 declared: dict | None = None, references: References | None = None):
        self.model = TrainedModel.load(local_model_dir(model_uri), device=device)
        self.declared = declared
        self.references = references
        self.node_id = ray.get_runtime_context().get_node_id()
        self.on_session = on_session

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        indices = [int(i) for i in batch["index"]]
        if "path" in batch:
            scored = score_uploads(self.model, [str(p) for p in batch["path"]],
                                   declared=self.declared, references=self.references)
            records = [self.session(s) for s in scored]
        else:
            seqs = [row_sequence(p, f) for p, f in zip(batch["poses"], batch["fields"],
                                                        strict=True)]
            records = [[self.rep_record(r.source or str(i), r)]
                       for i, r in zip(indices, score(self.model, seqs, references=self.references),
                                       strict=True)]
        out: dict[str, list] = {"index": [], "position": [], "record": []}
        for index, recs in zip(indices, records, strict=True):
            for position, rec in enumerate(recs):
                out["index"].append(index)
                out["position"].append(position)
                out["record"].append(json.dumps({**rec, "node_id": self.node_id},
                                                default=_json))
        return out

    def rep_record(self, source: str, result: RepResult, **extra: object) -> dict:
        status = SCORED if result.ok else REJECTED
        return {"input": source, "status": status, **extra, **result.to_dict()}

    def session(self, scored: SessionScore) -> list[dict]:
        """Records of one uploaded session file: one per repetition, or one saying why none."""
        path, session_id = scored.input, scored.session_id
        if not scored.ok:
            return [{"input": path, "status": scored.status, "session_id": session_id,
                     "error": scored.error, "error_kind": scored.error_kind}]
        extra: dict = {}
        if self.on_session is not None:
            try:
                extra = self.on_session(scored.session, scored.results, self.model)
            except Exception as exc:  # noqa: BLE001 - reported as the session's error record
                return [{"input": path, "status": FAILED, "session_id": session_id,
                         "error": f"{path}: {type(exc).__name__}: {exc}",
                         "error_kind": "report_failed"}]
        return [self.rep_record(path, r, session_id=session_id, **extra)
                for r in scored.results]


def input_rows(inputs: Iterable[str | Path | Sequence]) -> list[dict]:
    """Rows for Ray Data: files (folders expanded to their files, sorted) or sequences."""
    items = list(inputs)
    if all(isinstance(x, Sequence) for x in items):
        return [sequence_row(i, s) for i, s in enumerate(items)]
    if any(isinstance(x, Sequence) for x in items):
        raise TypeError("score_batch takes either session paths or sequences, not both")
    paths: list[Path] = []
    for item in map(Path, items):
        paths.extend(sorted(p for p in item.iterdir() if p.is_file()) if item.is_dir() else [item])
    return [{"index": i, "path": str(p)} for i, p in enumerate(paths)]


def score_batch(inputs: Iterable[str | Path | Sequence], model_dir: str | Path,
                batch_size: int = 8, concurrency: int | None = None,
                output: str | Path | None = None, gpu_fraction: float = 0.25,
                progress: bool = True, on_session: SessionHook | None = None,
                declared: dict | None = None, references: References | None = None
                ) -> list[dict]:
    """Score session files (or dataset sequences) on Ray; one record per repetition or rejected
    input, in input order; also written as JSON lines to `output` when given. `declared`: the
    session files' conventions (up, units, mirrored, layout, layout_file: model.data.readers.
    read_session); a layout file must be readable where the actors run. `references`: decide
    relative to each person's reference (model.serve.reference)."""
    rows = input_rows(inputs)
    if not rows:
        return []
    ensure_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.wait_for_min_actors_s = ACTORS_START_S
    context.print_on_execution_start = False
    place = placement(1, gpu_fraction)
    n_batches = math.ceil(len(rows) / batch_size)
    actors = concurrency or max(1, min(capacity(place), n_batches))
    scored = ray.data.from_items(rows, override_num_blocks=n_batches).map_batches(
        Scorer, fn_constructor_args=(str(model_dir), place.device, on_session, declared,
                                     references),
        batch_size=batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=place.num_cpus,
        num_gpus=place.num_gpus,
    )
    out = sorted(scored.take_all(), key=lambda r: (r["index"], r["position"]))
    records = [json.loads(r["record"]) for r in out]
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text("".join(json.dumps(r) + "\n" for r in records))
    return records
