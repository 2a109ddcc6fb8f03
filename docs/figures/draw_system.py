"""Draw docs/figures/system.png: posecoach's parts and the data flowing between them.

Run from the repository root: .venv/bin/python docs/figures/draw_system.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("system.png")
W, H, STEP = 3.0, 1.3, 4.3  # box size

# name: (x, y, title, body lines, colour)
BOXES = {
    "inputs": (0 * STEP, 3.0, "labelled inputs", ["EC3D pickle (restricted)", "JSON / NPZ / CSV",
                                             "UI-PRMD (Vicon)", "synthetic data"], "#eeeeee"),
    "ingest": (1 * STEP, 3.0, "ingest flow", ["read, validate,", "write, quarantine",
                                         "flows/ingest.py"], "#dbe9f6"),
    "delta": (2 * STEP, 3.0, "Delta Lake dataset", ["one row per sequence", "versions, merge on id",
                                               "model/data/dataset.py"], "#fde9c8"),
    "ray": (3 * STEP, 3.0, "Ray: CV and training", ["LOSO folds as tasks", "final model + judge",
                                                "workers/"], "#e2f2dc"),
    "mlflow": (4 * STEP, 3.0, "MLflow: registry, gate", ["runs, versions, aliases",
                                                      "gate on held-out subjects",
                                                      "registry/"], "#f3e0f0"),
    "uploads": (2 * STEP, 0.6, "uploaded sessions", ["JSON / NPZ / Parquet",
                                                     "a folder or s3:// prefix"], "#eeeeee"),
    "score": (3 * STEP, 0.6, "score flow", ["segment, normalise,", "classify + correct in blocks,",
                                        "feedback in words"], "#e2f2dc"),
    "reports": (4 * STEP, 0.6, "reports", ["JSON + animated HTML", "overview, ledger,",
                                       "repetitions, _errors.jsonl"], "#fde9c8"),
    "quarantine": (1 * STEP, 0.6, "quarantine", ["rejected files", "_errors.jsonl"], "#f8d7d7"),
}

ARROWS = [
    ("inputs", "ingest", "files"),
    ("ingest", "delta", "one commit"),
    ("delta", "ray", "a version"),
    ("ray", "mlflow", "models"),
    ("mlflow", "score", "@champion"),
    ("uploads", "score", ""),
    ("score", "reports", ""),
    ("ingest", "quarantine", "bad inputs"),
]


def centre(name: str) -> tuple[float, float]:
    x, y, *_ = BOXES[name]
    return x + W / 2, y + H / 2


def draw_box(ax: plt.Axes, x: float, y: float, title: str, body: list[str], colour: str) -> None:
    ax.add_patch(FancyBboxPatch((x, y), W, H, boxstyle="round,pad=0.05,rounding_size=0.12",
                                facecolor=colour, edgecolor="#555555", linewidth=1.2))
    ax.text(x + W / 2, y + H - 0.22, title, ha="center", va="center", fontsize=10,
            fontweight="bold")
    for i, line in enumerate(body):
        ax.text(x + W / 2, y + H - 0.5 - 0.22 * i, line, ha="center", va="center", fontsize=8.3,
                family="monospace" if "/" in line and "." in line else None)


def edge_point(name: str, toward: tuple[float, float]) -> tuple[float, float]:
    """Where the line from the box's centre to `toward` leaves the box."""
    cx, cy = centre(name)
    dx, dy = toward[0] - cx, toward[1] - cy
    scale = min((W / 2 + 0.08) / abs(dx) if dx else 1e9, (H / 2 + 0.08) / abs(dy) if dy else 1e9)
    return cx + dx * scale, cy + dy * scale


def draw_arrow(ax: plt.Axes, src: str, dst: str, label: str) -> None:
    start = edge_point(src, centre(dst))
    end = edge_point(dst, centre(src))
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14,
                                 linewidth=1.4, color="#333333"))
    if label:
        mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
        horizontal = abs(end[1] - start[1]) < 0.01
        ax.text(mx + (0 if horizontal else 0.12), my + (-0.12 if horizontal else 0), label,
                ha="center" if horizontal else "left", va="top" if horizontal else "center",
                fontsize=7.5, style="italic", color="#333333")


def main() -> None:
    fig, ax = plt.subplots(figsize=(15, 5.4), dpi=110)
    ax.set_xlim(-0.3, 4 * STEP + W + 0.3)
    ax.set_ylim(-0.35, 5.2)
    ax.axis("off")
    ax.add_patch(FancyBboxPatch((STEP - 0.35, -0.05), 3 * STEP + W + 0.55, 4.75,
                                boxstyle="round,pad=0.02", facecolor="none",
                                edgecolor="#9bb7d4", linestyle="--"))
    ax.text(STEP - 0.2, 4.5, "Prefect flows (flows/): ingest, retrain (nightly cron), score; "
            "the posecoach CLI", fontsize=9, color="#4a6f96", va="center")
    for x, y, title, body, colour in BOXES.values():
        draw_box(ax, x, y, title, body, colour)
    for src, dst, label in ARROWS:
        draw_arrow(ax, src, dst, label)
    ax.text(2 * STEP + W / 2, -0.3, "model/ (data, learn, serve, evaluate) does the work in "
            "every box; workers/ runs it on Ray, registry/ talks to MLflow", fontsize=8.5,
            ha="center", color="#555555")
    fig.savefig(OUT, bbox_inches="tight")
    print(OUT)


if __name__ == "__main__":
    main()
