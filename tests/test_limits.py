"""Resource bombs: files that decompress to gigabytes, declare ten million frames or nest JSON
100,000 deep are refused before they are read whole, each with its kind; a child process reading
any one of them peaks under 2 GiB; a batch holding them goes on, and ingest quarantines them."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.ingest import ingest_flow, quarantine_dir, read_errors
from model.data.formats import write_sequences_json
from model.data.hostile import Bomb, read_in_child, write_bombs
from model.data.readers import iter_sequences, read_session
from model.data.sequence import SequenceError
from model.data.synth import make_dataset

GIB = 1 << 30


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Bomb]:
    return {b.problem: b for b in write_bombs(tmp_path_factory.mktemp("bombs"))}


@pytest.mark.parametrize("index", range(8))
def test_a_bomb_is_refused_with_its_kind_and_memory_stays_bounded(bombs, index) -> None:
    bomb = list(bombs.values())[index]
    kinds, peak = read_in_child(bomb.mode, bomb.path)
    assert kinds == [bomb.kind]
    assert peak < 2 * GIB, f"{bomb.problem}: peak RSS {peak / GIB:.2f} GiB"


def test_limits_are_settings(tmp_path) -> None:
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    path = write_sequences_json([seq], tmp_path / "one.json")
    assert read_in_child("labelled", path)[0] == ["accepted"]
    frames = {"POSECOACH_LIMIT_MAX_FRAMES": str(seq.n_frames - 1)}
    assert read_in_child("labelled", path, frames)[0] == ["too_large"]
    assert read_in_child("labelled", path, {"POSECOACH_LIMIT_MAX_TEXT_MB": "0"})[0] == ["too_large"]


def test_the_batch_goes_on_past_every_bomb(bombs, tmp_path) -> None:
    folder = next(b.path.parent for b in bombs.values() if b.mode == "labelled")
    seq = make_dataset(n_subjects=1, reps=1, seed=1, exercises=("squat",))[0]
    write_sequences_json([seq], folder / "good.json")
    try:
        items = list(iter_sequences(folder))
    finally:
        (folder / "good.json").unlink()
    errors = {Path(e.source).name: e.kind for e in items if isinstance(e, SequenceError)}
    assert errors == {b.path.name: b.kind for b in bombs.values() if b.mode == "labelled"}
    assert [s.subject for s in items if not isinstance(s, SequenceError)] == [seq.subject]
    for bomb in bombs.values():
        if bomb.mode == "session":
            with pytest.raises(SequenceError) as err:
                read_session(bomb.path)
            assert err.value.kind == bomb.kind and str(bomb.path) in str(err.value)


def test_ingest_quarantines_every_bomb_with_its_kind(prefect_api, bombs) -> None:
    folder = next(b.path.parent for b in bombs.values() if b.mode == "labelled")
    expected = {b.path.name: b.kind for b in bombs.values() if b.mode == "labelled"}
    report = ingest_flow([str(folder)], "bombs")
    assert report.accounted and report.inserted == 0
    assert report.rejected_by_kind == {"too_large": len(expected) - 1, "too_deep": 1}
    records = read_errors(quarantine_dir("bombs"))
    assert {Path(r["file"]).name: r["kind"] for r in records} == expected
    assert all(Path(r["file"]).is_file() and r["reason"] for r in records)
