"""UI-PRMD people as the sessions a user uploads, for the score path with and without a reference.

`python -m bench.uiprmd_sessions OUT [PERSON ...]` (default s09 s10, the default card's gate
subjects)

UI-PRMD's repetition files of one person and label follow on from each other (one repetition
ends where the next begins), so they join into continuous sessions. Per person: the first three
correct squats, with 1 s of standing at each end of each, as OUT/reference/<person>.json (the
intake a therapist watched), the other correct squats as OUT/<person>/correct.json and the
incorrect ones as OUT/<person>/incorrect.json, in the recordings' own layout, units and rate.
The truth goes to OUT/truth.json: per session file, the label of every squat in it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from model.data.formats import write_session
from model.data.readers import iter_sequences
from model.data.sequence import Sequence
from model.settings import CORRECT

UIPRMD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ui-prmd"
REFERENCE_SQUATS = 3
STAND_SECONDS = 1.0


def joined(reps: list[Sequence], session_id: str) -> Sequence:
    """One session of `reps` in order, each with STAND_SECONDS of its first and last frame held."""
    parts = []
    for rep in reps:
        poses, hold = np.asarray(rep.poses, np.float32), int(round(STAND_SECONDS * rep.fps))
        parts += [np.repeat(poses[:1], hold, 0), poses, np.repeat(poses[-1:], hold, 0)]
    return replace(reps[0], poses=np.concatenate(parts), label=None, rep=0, source="",
                   meta={"session_id": session_id})


def write_person(seqs: list[Sequence], person: str, out: Path) -> dict[str, list[str]]:
    """The person's reference, correct and incorrect sessions; their truth by file."""
    mine = sorted((s for s in seqs if s.subject == person), key=lambda s: s.rep)
    good = [s for s in mine if s.label == CORRECT]
    bad = [s for s in mine if s.label != CORRECT]
    if len(good) <= REFERENCE_SQUATS or not bad:
        raise ValueError(f"{person}: {len(good)} correct and {len(bad)} incorrect squats; a "
                         f"reference of {REFERENCE_SQUATS} needs more correct ones and a mistake")
    files = {
        out / "reference" / f"{person}.json": good[:REFERENCE_SQUATS],
        out / person / "correct.json": good[REFERENCE_SQUATS:],
        out / person / "incorrect.json": bad,
    }
    for path, reps in files.items():
        write_session(joined(reps, f"{person}-{path.stem}"), path)
    return {str(path): [str(r.label) for r in reps] for path, reps in files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("people", nargs="*", default=["s09", "s10"])
    args = parser.parse_args()
    seqs = [s for s in iter_sequences(UIPRMD) if isinstance(s, Sequence)]
    truth: dict[str, list[str]] = {}
    for person in args.people:
        truth |= write_person(seqs, person, args.out)
    (args.out / "truth.json").write_text(json.dumps(truth, indent=1))
    print(f"{len(truth)} sessions under {args.out}")


if __name__ == "__main__":
    main()
