"""Peak memory of scoring as the batch grows tenfold (4,000 -> 40,000 repetitions).

Each measurement runs in a fresh subprocess (`python -m bench.bench_memory MODE N MODEL_DIR`)
and reports its peak resident set (resource.getrusage ru_maxrss) after scoring N repetitions
that are generated lazily (bench.scoring_setup.repetitions) and written as a Parquet report:
  - `whole`: the scoring path as it is, model.serve.scoring.score over the whole iterable (it
    makes a list of the inputs and returns every result, corrected motions included), then the
    report;
  - `streamed`: the same iterable cut into chunks of 512 repetitions, each chunk scored, appended
    to the Parquet report (pyarrow ParquetWriter) and dropped.
The model has the `test` profile's architecture (hidden 32) so that the runs take minutes:
the network's size adds a constant to the peak, not a term that grows with the batch.
`seconds` is each subprocess's wall time; the ratio is against the streamed run of the same N.
"""

from __future__ import annotations

import itertools
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import torch

from bench import Row
from bench.bench_scoring import report_table
from bench.scoring_setup import bench_model, repetitions
from model.learn.saved import TrainedModel
from model.serve.scoring import RepResult, score

SIZES = (4_000, 40_000)
MODES = ("streamed", "whole")
CHUNK = 512


def chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def score_whole(model: TrainedModel, n: int, out: Path) -> int:
    results = score(model, repetitions(n))
    pq.write_table(report_table([r.to_dict() for r in results]), out)
    return len(results)


def score_streamed(model: TrainedModel, n: int, out: Path) -> int:
    done = 0
    writer = None
    for chunk in chunks(repetitions(n), CHUNK):
        results: list[RepResult] = score(model, chunk)
        table = report_table([r.to_dict() for r in results])
        writer = writer or pq.ParquetWriter(out, table.schema)
        writer.write_table(table.cast(writer.schema))
        done += len(results)
    if writer is not None:
        writer.close()
    return done


def child(mode: str, n: int, model_dir: str) -> None:
    """Score n repetitions one way and print the peak resident set as JSON."""
    torch.set_num_threads(1)
    model = TrainedModel.load(model_dir)
    began = time.perf_counter()
    out = Path(model_dir) / f"report-{mode}-{n}.parquet"
    scored = (score_streamed if mode == "streamed" else score_whole)(model, n, out)
    rows = pq.read_metadata(out).num_rows
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "n": n, "scored": scored, "rows": rows,
                      "peak_mib": peak_kib / 1024, "seconds": time.perf_counter() - began}))


def measure(mode: str, n: int, model_dir: Path) -> dict:
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "bench.bench_memory", mode, str(n),
                           str(model_dir)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run {mode} {n} failed: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if out["rows"] != n or out["scored"] != n:
        raise RuntimeError(f"memory run {mode} {n} scored {out['scored']}, wrote {out['rows']}")
    return {**out, "wall": time.perf_counter() - began}


def run(threads: int) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        bench_model(threads, profile="test").save(work)
        runs = {(m, n): measure(m, n, work) for n in SIZES for m in MODES}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for (mode, n), r in runs.items():
        base = runs[("streamed", n)]
        rows.append(Row(f"scoring peak memory, {n:,} reps", mode, r["wall"],
                        r["wall"] / base["wall"],
                        f"peak RSS {r['peak_mib']:,.0f} MiB "
                        f"({r['peak_mib'] / base['peak_mib']:.2f}x streamed); "
                        f"{n / r['seconds']:,.0f} reps/s"))
    small, large = (runs[("streamed", n)]["peak_mib"] for n in SIZES)
    whole_small, whole_large = (runs[("whole", n)]["peak_mib"] for n in SIZES)
    rows.append(Row("scoring peak memory, 10x the batch", "growth", 0.0, 1.0,
                    f"streamed {large / small:.2f}x, whole {whole_large / whole_small:.2f}x"))
    return rows


if __name__ == "__main__":
    child(sys.argv[1], int(sys.argv[2]), sys.argv[3])
