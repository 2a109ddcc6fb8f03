"""The settings of a training, in plain values (no torch): the paper's variants, what network a
training builds (Architecture) and everything else it needs (TrainConfig).

The network's own configuration (model.learn.gcn.GCNConfig) is an Architecture sized for the
data (nodes and classes); a profile (model.settings.Profile) holds one TrainConfig; the config
of one run is assembled from a profile by model.settings.run_config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Self


@dataclass(frozen=True)
class Variant:
    """What a variant builds and how it is trained."""

    classifies: bool
    corrects: bool
    feedback: str  # "curriculum" | "true" | "none"
    smoothness: bool = True


VARIANTS: dict[str, Variant] = {
    "full": Variant(classifies=True, corrects=True, feedback="curriculum"),
    "separated_classifier": Variant(classifies=True, corrects=False, feedback="none"),
    "separated_corrector": Variant(classifies=False, corrects=True, feedback="true"),
    "no_feedback": Variant(classifies=True, corrects=True, feedback="none"),
    "no_smoothness": Variant(classifies=True, corrects=True, feedback="curriculum",
                             smoothness=False),
}

#: A recipe setting chosen by the training on its own training data (model.learn.recipe).
AUTO = "auto"

#: Settings that may differ between a checkpoint and the run resuming it: where it runs.
PLACEMENT = ("device", "threads")


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


@dataclass(frozen=True, kw_only=True)
class Architecture:
    """The network a training builds, apart from what the data gives (nodes, classes)."""

    variant: str = "full"
    n_dct: int = 25
    hidden: int = 256
    dropout: float = 0.5

    def __post_init__(self) -> None:
        get_variant(self.variant)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Self:
        """From `to_dict()`, as model.json cards and checkpoints store it."""
        return cls(**d)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Architecture):
    """One training's settings; the defaults are the paper's (the `nightly` profile).

    `motion_only` (not in the paper): the network never sees a repetition's mean pose, the DCT
    coefficient 0 of every trajectory, which carries the body's build and standing posture
    rather than the movement; corrections are still added to the whole input (see
    model.learn.train.ignore_mean_pose). "auto" (AUTO) leaves it to the training, which
    chooses on its training subjects alone (model.learn.recipe) and keeps the choice.

    `average_tail` (not in the paper): the share of the last epochs whose end-of-epoch weights
    are averaged into the kept model, its batch-norm statistics then measured again on the
    training data (stochastic weight averaging); 0 keeps the last epoch's weights, as the paper.

    `label_smoothing` (not in the paper): the class loss is the NLL of the label with this share
    taken off it and spread evenly over all classes; 0 is the plain NLL, as the paper.
    """

    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.01
    lr_decay: float = 0.9
    lr_step: int = 5
    beta: float = 1.0
    smooth_weight: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    gamma: float = 0.01
    motion_only: bool | str = False
    average_tail: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.average_tail <= 1.0:
            raise ValueError(f"average_tail must lie in [0, 1], got {self.average_tail!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must lie in [0, 1), got {self.label_smoothing!r}")

    @property
    def averaging_from(self) -> int | None:
        """The first epoch (1-based) whose weights join the average; None: no averaging."""
        count = round(self.average_tail * self.epochs)
        return None if count < 2 else self.epochs - count + 1

    def placed(self, *, device: str | None = None, threads: int | None = None) -> TrainConfig:
        """The same training where a worker runs it (PLACEMENT); None keeps a value."""
        return replace(self, device=self.device if device is None else device,
                       threads=self.threads if threads is None else threads)
