"""Scoring throughput, repetitions per second, and the wall time of `posecoach score`.

Subject, the score flow as `posecoach score` runs it (flows.score.score_flow, Prefect flow,
the model resolved from an MLflow registry of its own): a folder of 200 uploaded sessions
(JSON, NPZ and Parquet in turn, 3-5 repetitions each) in; per session a JSON report, the
corrected motions and an animated HTML page, the `repetitions` Delta table, the ledger and the
run's overview page out. Variants on the same model, in the same run:
  - the same flow with `--no-html` (JSON + NPZ + Parquet, no pages);
  - end to end on repetitions: a Parquet file of 2,048 repetitions (the dataset's row layout) is
    read, scored by the one scoring path (model.serve.scoring.score: validate, normalise,
    classify and correct in batches of 512, feedback in words) and written out as a JSON report
    and a Parquet report;
  - the model's raw batched forward pass over the same repetitions, already normalised and
    DCT-encoded (the ceiling: no I/O, normalisation or feedback), as scoring runs it (the
    network folded for inference, TrainedModel.folded), and as the module itself computes it
    (FeedbackGCN.forward in eval mode, what training runs);
  - the same scoring without the file I/O (where the time goes);
  - one session at a time: 64 uploaded session files (JSON, 3-5 repetitions each), every file
    read, cut into repetitions and scored on its own (model.serve.scoring.score_session) with
    its own JSON report;
  - on Ray Data (workers.scoring.score_batch, what the score flow runs; one actor per CPU, the
    model loaded once per actor, actor start-up included), records out as JSON + Parquet:
    the 2,048 repetitions in batches of 512, and the 64 session files (the score flow's scoring
    stage without its HTML pages and pictures).
`seconds` is the time per 1,000 repetitions, so the ratios compare rates. Apart from those,
the wall time of the command `posecoach score` on 2 uploads (a fresh process: start-up, model
lookup, scoring, reports), once with a local Prefect server up (`posecoach server start`) and
once on Prefect's embedded API.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench import Row, median_seconds
from bench.scoring_setup import bench_model, repetitions
from flows.synth import write_sessions
from model.data.dataset import from_table, to_table
from model.data.formats import write_session
from model.data.readers import read_session
from model.data.synth import exercise_labels, make_session
from model.learn.gcn import encode_poses
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult, normalize_valid, score, score_session
from model.settings import environment
from workers.scoring import SCORED, score_batch

N_REPS, N_SESSIONS, BATCH, REPEATS, RAY_REPEATS = 2048, 64, 512, 3, 1
N_FLOW_SESSIONS, FLOW_REPEATS, N_COMMAND_UPLOADS = 200, 3, 2
FLOW = "score flow: uploads -> JSON + HTML + Parquet (posecoach score)"
FLOW_NO_HTML = "score flow --no-html: uploads -> JSON + Parquet"
BENCH_DATASET = "benchscore"
REPORT_JSON_FIELDS = ("probabilities", "deviations", "cues", "frames", "corrected")


def report_table(rows: list[dict]) -> pa.Table:
    """Report rows as an Arrow table: nested fields as JSON text."""
    flat = [{k: json.dumps(v) if k in REPORT_JSON_FIELDS else v for k, v in r.items()}
            for r in rows]
    return pa.Table.from_pylist(flat)


def write_reports(results: list[RepResult], stem: Path) -> None:
    rows = [r.to_dict() for r in results]
    stem.with_suffix(".json").write_text(json.dumps(rows))
    pq.write_table(report_table(rows), stem.with_suffix(".parquet"))


def make_sessions(folder: Path, n: int) -> None:
    """Write n synthetic squat/lunge uploads (3-5 repetitions each) as JSON."""
    for k in range(n):
        exercise = ("squat", "lunge")[k % 2]
        labels = list(itertools.islice(itertools.cycle(exercise_labels(exercise)), 3 + k % 3))
        session, _ = make_session(f"u{k}", exercise, labels, seed=k)
        write_session(session, folder / f"session-{k:03d}.json")


def run(threads: int) -> list[Row]:
    torch.set_num_threads(threads)
    work = Path(tempfile.mkdtemp(prefix="bench-scoring-"))
    try:
        model = bench_model(threads)
        seqs = list(repetitions(N_REPS))
        pq.write_table(to_table(seqs), work / "batch.parquet")
        make_sessions(work, N_SESSIONS)
        model.save(work / "model")
        with scratch_registry(work / "home", model, work / "model") as version:
            timings, counts = flow(work, version)
            timings_lib, counts_lib = measure(model, seqs, work)
            commands = command_wall_times(work, version)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timings |= timings_lib
    counts |= counts_lib
    per_k = {name: t / counts[name] * 1000 for name, t in timings.items()}
    subject = per_k[FLOW]
    rows = [Row("scoring throughput (per 1,000 reps)", name, t, t / subject,
                f"{1000 / t:,.0f} reps/s over {counts[name]} reps")
            for name, t in per_k.items()]
    up = commands["server up"]
    return rows + [Row(f"posecoach score, {N_COMMAND_UPLOADS} uploads (wall)", name, t, t / up,
                       "fresh process, model already downloaded")
                   for name, t in commands.items()]


@contextmanager
def scratch_registry(home: Path, model: TrainedModel, model_dir: Path) -> Iterator[str]:
    """A POSECOACH_HOME and sqlite MLflow of their own, the bench model registered there as
    the champion of BENCH_DATASET; yields its version."""
    from registry.imported import register_imported
    from registry.versions import CHAMPION, model_name, set_alias

    home.mkdir(parents=True)
    with environment({"POSECOACH_HOME": str(home),
                      "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}):
        example, _ = make_session("u0", "squat", ["correct"], seed=0)
        name, _, version = register_imported(model_dir, model, BENCH_DATASET, example)
        set_alias(name, CHAMPION, version)
        assert name == model_name(BENCH_DATASET)
        yield version


def flow(work: Path, version: str) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds of the score flow (with and without pages) over the uploads folder, a
    fresh reports folder per call, and the repetitions each call scored."""
    from flows.engine import flow_engine
    from flows.score import score_flow

    write_sessions(work / "flow", N_FLOW_SESSIONS, seed=11, fmt=None)
    uploads = str(work / "flow" / "sessions")
    runs = itertools.count()
    scored: dict[bool, int] = {}

    def once(html: bool) -> None:
        out = work / f"flow-out-{next(runs)}"
        with flow_engine():  # the engine settings posecoach score runs its flow with
            result = score_flow(uploads, dataset=BENCH_DATASET, out=str(out), html=html)
        assert result["accounted"] and result["reports"] == N_FLOW_SESSIONS, result
        assert (out / "index.html").is_file() == html
        scored[html] = result["repetitions"]

    timings = {FLOW: median_seconds(lambda: once(True), FLOW_REPEATS),
               FLOW_NO_HTML: median_seconds(lambda: once(False), FLOW_REPEATS)}
    return timings, {FLOW: scored[True], FLOW_NO_HTML: scored[False]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_wall_times(work: Path, version: str) -> dict[str, float]:
    """Wall seconds of `posecoach score` on N_COMMAND_UPLOADS uploads as a new process, with a
    local Prefect server up and on the embedded API (the median of two runs each)."""
    from flows import server

    uploads = work / "two"
    write_sessions(uploads, N_COMMAND_UPLOADS, seed=12, fmt="json")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    runs = itertools.count()

    def once() -> None:
        out = work / f"command-out-{next(runs)}"
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flows.cli", "score", str(uploads / "sessions"),
                        "--dataset", BENCH_DATASET, "--out", str(out), "--json"],
                       env=env, check=True, capture_output=True, timeout=600)
        took.append(time.perf_counter() - began)

    times: dict[str, float] = {}
    server.start(port=_free_port())
    try:
        took: list[float] = []
        once()
        once()
        times["server up"] = sorted(took)[0]
    finally:
        server.stop()
    took = []
    once()
    once()
    times["embedded Prefect API"] = sorted(took)[0]
    return times


def measure(model: TrainedModel, seqs: list, work: Path
            ) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds of each variant and how many repetitions each call scores."""

    def end_to_end() -> None:
        batch = from_table(pq.read_table(work / "batch.parquet"))
        results = score(model, batch, batch_size=BATCH)
        assert all(r.ok for r in results) and len(results) == N_REPS
        write_reports(results, work / "report")

    poses, _ = normalize_valid(model, seqs)
    encoded = encode_poses(poses, model.gcn_config.n_dct)

    net = model.folded()

    def forward() -> None:
        for start in range(0, len(encoded), BATCH):
            net(encoded[start : start + BATCH])

    @torch.no_grad()
    def module_forward() -> None:
        model.module.eval()
        for start in range(0, len(encoded), BATCH):
            model.module(encoded[start : start + BATCH])

    session_reps: list[int] = []

    def session_by_session() -> None:
        scored = 0
        for path in sorted(work.glob("session-*.json")):
            results = score_session(model, read_session(path))
            scored += len(results)
            path.with_suffix(".report").write_text(json.dumps([r.to_dict() for r in results]))
        session_reps.append(scored)

    scored_probs = [list(r.probabilities.values()) for r in score(model, seqs[:8])]
    raw_probs = np.exp(model.module(encoded[:8])[0].detach().numpy())
    if not np.allclose(scored_probs, raw_probs, atol=1e-5):
        raise AssertionError("score() and the raw forward pass disagree")
    timings = {
        "end to end: Parquet in -> score -> JSON + Parquet": median_seconds(end_to_end, REPEATS),
        "score() alone, no file I/O": median_seconds(lambda: score(model, seqs, BATCH), REPEATS),
        "raw batched forward pass (ceiling)": median_seconds(forward, REPEATS),
        "module forward, eval mode (unfolded)": median_seconds(module_forward, REPEATS),
        "one session at a time (score_session per file)": median_seconds(session_by_session,
                                                                          REPEATS),
    }
    counts = {name: N_REPS for name in timings}
    counts["one session at a time (score_session per file)"] = session_reps[-1]
    for name, inputs, batch in (
        ("Ray Data score_batch, repetitions", seqs, BATCH),
        ("Ray Data score_batch, session files (score flow core)",
         sorted(work.glob("session-*.json")), 8),
    ):
        timings[name], counts[name] = ray_data(inputs, work, batch)
    return timings, counts


def ray_data(inputs: list, work: Path, batch_size: int) -> tuple[float, int]:
    """Median seconds of workers.scoring.score_batch + reports, and repetitions scored."""
    scored: list[int] = []

    def once() -> None:
        records = score_batch(inputs, work / "model", batch_size=batch_size, progress=False)
        ok = [r for r in records if r["status"] == SCORED]
        (work / "ray-report.json").write_text(json.dumps(records))
        pq.write_table(report_table(ok), work / "ray-report.parquet")
        scored.append(len(ok))

    return median_seconds(once, RAY_REPEATS), scored[-1]
