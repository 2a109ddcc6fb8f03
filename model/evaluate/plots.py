"""Pictures (matplotlib, Agg): the confusion matrix, reliability diagrams, movement features
of training against scored repetitions (drift), and a correction drawn over the original.

Figures drawn from synthetic data carry the word "synthetic" in their title when the caller says
so (`synthetic=True`); they are never EC3D's figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.data.labels import class_name  # noqa: E402
from model.data.skeletons import Skeleton  # noqa: E402

if TYPE_CHECKING:
    from model.evaluate.metrics import Evaluation

Target = str | Path | BinaryIO
ORIGINAL_COLOUR = "tab:red"
CORRECTED_COLOUR = "tab:green"


def _title(text: str, synthetic: bool) -> str:
    return f"{text} (synthetic data)" if synthetic else text


def plot_confusion(evaluation: Evaluation, path: Target, synthetic: bool = False) -> Target:
    """The confusion matrix (rows: true class, columns: predicted) as a PNG with counts."""
    counts = np.asarray(evaluation.confusion)
    names = [class_name(c) for c in evaluation.classes]
    size = max(4.0, 0.55 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = counts.max() if counts.size else 0
    for (i, j), n in np.ndenumerate(counts):
        if n:
            ax.text(j, i, str(int(n)), ha="center", va="center", fontsize=7,
                    color="white" if n > top / 2 else "black")
    ax.set_title(_title(f"micro {evaluation.micro:.1%}, macro {evaluation.macro:.1%}", synthetic))
    fig.tight_layout()
    return _save(fig, path)


def plot_reliability(curves: dict[str, list[tuple[float, float, int]]], path: Target,
                     synthetic: bool = False) -> Target:
    """Reliability diagrams (accuracy against mean confidence per bin, as
    model.evaluate.calibration.reliability gives them), one line per named curve."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for name, bins in curves.items():
        if bins:
            conf, acc, counts = zip(*bins, strict=True)
            ax.plot(conf, acc, marker="o", label=f"{name} ({sum(counts)} predictions)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(_title("held-out reliability", synthetic))
    fig.tight_layout()
    return _save(fig, path)


def plot_drift(train: dict[str, np.ndarray], scored: dict[str, np.ndarray], path: Target,
               title: str, synthetic: bool = False) -> Target:
    """Histograms of movement features, training against scored (density), one panel each."""
    names = list(train)
    cols = min(3, max(1, len(names)))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        both = np.concatenate([train[name], scored[name]])
        bins = np.histogram_bin_edges(both[np.isfinite(both)], bins=20)
        ax.hist(train[name], bins=bins, density=True, alpha=0.5, label="training")
        ax.hist(scored[name], bins=bins, density=True, alpha=0.5, label="scored")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(_title(title, synthetic), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


VIEWS = (("side (facing right)", 0), ("front", 1))


def plot_correction(original: np.ndarray, corrected: np.ndarray, skeleton: Skeleton,
                    path: Target, n_frames: int = 5, title: str = "",
                    synthetic: bool = False) -> Target:
    """Evenly spaced frames of normalised motions, seen from the side and from the front:
    the original in red, the correction in green."""
    length = min(original.shape[0], corrected.shape[0])
    picks = np.linspace(0, length - 1, n_frames).round().astype(int)
    fig, axes = plt.subplots(len(VIEWS), n_frames, figsize=(2.4 * n_frames, 6.0),
                             sharex=True, sharey=True, squeeze=False)
    bones = skeleton.bone_indices()
    for row, (view, horizontal) in zip(axes, VIEWS, strict=True):
        for ax, f in zip(row, picks, strict=True):
            for poses, colour in ((original, ORIGINAL_COLOUR), (corrected, CORRECTED_COLOUR)):
                for a, b in bones:
                    ax.plot(poses[f, [a, b], horizontal], poses[f, [a, b], 2], color=colour,
                            lw=1.5)
            ax.set_title(f"{view}, frame {f}", fontsize=8)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [plt.Line2D([], [], color=ORIGINAL_COLOUR, label="original"),
               plt.Line2D([], [], color=CORRECTED_COLOUR, label="corrected")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(_title(title or "correction", synthetic), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, path)


def _save(fig: plt.Figure, target: Target) -> Target:
    """Write the figure as PNG to a path (folders made) or to a binary file object."""
    if isinstance(target, str | Path):
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110, format="png")
    plt.close(fig)
    return target
