"""The benchmarks' own pieces (not their figures): the UI-PRMD baseline's features, the bench
runner's discovery, the streamed scoring of bench_memory and the scoring report table."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from bench.__main__ import available, call
from bench.bench_memory import chunks, score_streamed
from bench.bench_scoring import report_table
from bench.scoring_setup import repetitions
from bench.uiprmd_baseline import FRAMES, PELVIS, features
from bench.uiprmd_sessions import write_person
from model.data.normalize import Normalization, normalize
from model.data.readers import iter_sequences, read_session
from model.data.sequence import Sequence
from model.data.skeletons import get_skeleton
from model.data.synth import make_dataset
from model.learn.train import train
from model.serve.segment import segment
from model.settings import PROFILES, run_config

UIPRMD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ui-prmd"


@pytest.fixture(scope="module")
def squat():
    if not UIPRMD.is_dir():
        pytest.skip(f"no UI-PRMD data at {UIPRMD}")
    return next(s for s in iter_sequences(UIPRMD) if not isinstance(s, Exception))


def test_runner_finds_every_benchmark():
    assert {"uiprmd", "scoring", "retrain", "ingest", "memory", "softdtw"} <= set(available())


def test_the_runner_gives_the_seed_only_to_benchmarks_that_take_one():
    def seeded(threads: int, seed: int = 0) -> list:
        return [(threads, seed)]

    def plain(threads: int) -> list:
        return [threads]

    assert call(seeded, 2, 7) == [(2, 7)]
    assert call(plain, 2, 7) == [2]


def test_baseline_features_are_pelvis_centred_height_scaled_and_resampled(squat):
    f = features(squat).reshape(FRAMES, -1, 3)
    sk = get_skeleton("vicon39")
    assert f.shape == (FRAMES, sk.n_joints, 3)
    pelvis = f[:, [sk.index(j) for j in PELVIS]].mean(axis=1)
    np.testing.assert_allclose(pelvis, 0.0, atol=1e-9)
    bigger = replace(squat, poses=squat.poses * 1.3 + np.float32(250.0))
    np.testing.assert_allclose(features(bigger), features(squat), atol=1e-5)
    head_to_toe = f[0, sk.index("LFHD"), 2] - f[0, sk.index("LTOE"), 2]
    assert 0.9 < head_to_toe <= 1.0 + 1e-9  # heights are head-to-lowest-foot in frame 0


def test_baseline_refuses_other_skeletons():
    seq = make_dataset(2, 1)[0]
    with pytest.raises(ValueError, match="vicon39"):
        features(seq)


def test_chunks_cover_everything_once():
    got = list(chunks(range(1030), 512))
    assert [len(c) for c in got] == [512, 512, 6]
    assert sum(got, []) == list(range(1030))


def test_streamed_scoring_writes_one_row_per_repetition(tmp_path):
    torch.set_num_threads(1)
    config = run_config(PROFILES["test"], epochs=1, threads=1)
    model = train(make_dataset(4, 1, seed=0), config, progress=False)
    out = tmp_path / "report.parquet"
    assert score_streamed(model, 600, out) == 600
    table = pq.read_table(out)
    assert table.num_rows == 600
    assert table.column("rep").to_pylist() == list(range(600))
    assert table.column("error").null_count == 600


def test_report_table_keeps_nested_fields_as_json():
    rows = [{"rep": 1, "probabilities": {"squat/correct": 0.9}, "cues": ["ok"],
             "deviations": [], "frames": None, "error": None}]
    table = report_table(rows)
    assert table.column("probabilities").to_pylist() == ['{"squat/correct": 0.9}']
    assert table.column("frames").to_pylist() == ["null"]


def test_repetitions_have_distinct_ids():
    pool = make_dataset(2, 1)
    reps = list(repetitions(3 * len(pool), pool))
    assert len({r.sequence_id for r in reps}) == len(reps)


def test_uiprmd_people_become_sessions_that_segmentation_cuts_whole(tmp_path):
    if not UIPRMD.is_dir():
        pytest.skip(f"no UI-PRMD data at {UIPRMD}")
    seqs = [s for s in iter_sequences(UIPRMD) if isinstance(s, Sequence) and s.subject == "s10"]
    truth = write_person(seqs, "s10", tmp_path)
    assert [(Path(p).name, len(labels)) for p, labels in truth.items()] == [
        ("s10.json", 3), ("correct.json", 7), ("incorrect.json", 10)]
    for path, labels in truth.items():
        session = read_session(Path(path))
        assert session.fps == 100.0 and session.label is None
        poses, _ = normalize(session, Normalization(fps=session.fps))
        assert len(segment(poses, "squat", session.fps, hold_window=1)) == len(labels)
