"""Correction targets: the correct repetition each input should have looked like.

Every input is paired with the correct repetition of the same subject and exercise that is
closest by soft-DTW divergence (squared Euclidean cost over the normalised joints x 3); a correct
input is its own target. When the subject has no correct repetition of that exercise, the nearest
correct repetition of the exercise from any subject stands in; when nobody has one, the input
has no target (-1) and training leaves it out of the correction loss.
"""

from __future__ import annotations

import numpy as np
import torch

from model.data.sequence import Sequence
from model.learn.softdtw import pairwise_divergence
from model.settings import CORRECT

NO_TARGET = -1


def candidates(seqs: list[Sequence], i: int) -> list[int]:
    """Indices of the correct repetitions input i may be paired with (see the module doc)."""
    s = seqs[i]
    same_exercise = [k for k, c in enumerate(seqs)
                     if c.label == CORRECT and c.exercise == s.exercise]
    same_subject = [k for k in same_exercise if seqs[k].subject == s.subject]
    return same_subject or same_exercise


def pair_targets(
    poses: list[np.ndarray], seqs: list[Sequence], gamma: float = 0.01, batch_size: int = 64
) -> list[int]:
    """Index into `seqs` of each input's target (NO_TARGET when there is none).

    poses are the normalised (frames, joints, 3) arrays of seqs, in the same order. Inputs that
    share their candidate list are compared against it in one many-against-many call.
    """
    if len(poses) != len(seqs):
        raise ValueError(f"pair_targets: {len(poses)} pose arrays for {len(seqs)} sequences")
    targets = [i if s.label == CORRECT else NO_TARGET for i, s in enumerate(seqs)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, s in enumerate(seqs):
        if s.label != CORRECT:
            pool = tuple(candidates(seqs, i))
            if pool:
                groups.setdefault(pool, []).append(i)
    flat = [torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)).flatten(1) for p in poses]
    for pool, inputs in groups.items():
        div = pairwise_divergence([flat[i] for i in inputs], [flat[k] for k in pool],
                                  gamma=gamma, batch_size=batch_size)
        for i, best in zip(inputs, div.argmin(dim=1).tolist(), strict=True):
            targets[i] = pool[best]
    return targets
