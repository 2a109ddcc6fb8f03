"""The feedback GCN of Zhao et al. (ACCV 2022): a shared trunk over the DCT of every joint
trajectory, a classification branch (which mistake) and a correction branch (DCT deltas), the
label fed back into the correction branch.

Nodes are coordinates of joints in coordinate-major order (node = c * joints + j, c in x, y, z),
so the classification branch can read them as 3 channels over the joints. Node and class counts
come from the configuration, which comes from the data.

Variants (the paper's ablations, one code path; their table is model.learn.config.VARIANTS):

- `full`: both branches; the fed-back label is the true one with probability `teacher_prob`
  per sample during training, the predicted one otherwise and always at inference.
- `no_smoothness`: the same network; training sets the smoothness weight to 0.
- `no_feedback`: both branches, nothing fed back (the second correction block has no extra
  feature).
- `separated_classifier`: trunk and classification branch only; deltas are zeros.
- `separated_corrector`: trunk and correction branch only; trained with the true label fed
  back. At inference it is fed the label the caller passes in `true_onehot` (for example the
  prediction of a separate classifier) and, when none is passed, a zero vector (no feedback).
  It has no classifier: its log-probabilities are uniform.

`attention` (GCNConfig, off unless set): the correction branch also gives a per-node attention,
a graph convolution of the last correction features to one feature and a sigmoid, as the
network of the paper's released weights has (trained there with an L1 penalty on it). It is a
deliberate variant for those imported weights (model.learn.paper): posecoach's own training
never turns it on, and what the attention multiplies is the caller's (the paper multiplies the
decoded correction of every node by it).

Training runs FeedbackGCN itself; inference (TrainedModel.infer, hence scoring) runs FoldedGCN
(model.learn.folded), the same trained network in eval mode rearranged for speed, whose
outputs equal the module's up to float32 rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from model.learn.config import Architecture, Variant, get_variant
from model.learn.dct import dct_decode, dct_encode

COORDS = 3


@dataclass(frozen=True, kw_only=True)
class GCNConfig(Architecture):
    """An Architecture sized for the data: n_nodes (joints x 3) and n_classes come from it;
    `attention` only for the paper's imported weights (see above)."""

    n_nodes: int
    n_classes: int
    attention: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_nodes % COORDS:
            raise ValueError(f"n_nodes={self.n_nodes} is not joints x {COORDS} coordinates")
        if self.hidden % 2:
            raise ValueError(f"hidden={self.hidden} must be even (the classifier pools by 2)")

    def to_dict(self) -> dict:
        """As Architecture.to_dict, without `attention` when off: cards stay as they were."""
        d = super().to_dict()
        if not self.attention:
            del d["attention"]
        return d

    @classmethod
    def for_data(cls, architecture: Architecture, n_nodes: int, n_classes: int) -> GCNConfig:
        """The network of `architecture` (a TrainConfig, say) for n_nodes and n_classes."""
        shared = {f.name: getattr(architecture, f.name) for f in fields(Architecture)}
        return cls(n_nodes=n_nodes, n_classes=n_classes, **shared)


def poses_to_nodes(poses: torch.Tensor) -> torch.Tensor:
    """(..., T, joints, 3) -> (..., T, 3 * joints) in the GCN's coordinate-major node order."""
    return poses.transpose(-1, -2).flatten(-2)


def nodes_to_poses(nodes: torch.Tensor) -> torch.Tensor:
    """(..., T, 3 * joints) -> (..., T, joints, 3), the inverse of poses_to_nodes."""
    return nodes.unflatten(-1, (COORDS, nodes.shape[-1] // COORDS)).transpose(-1, -2)


def by_length(lengths: Iterable[int]) -> dict[int, list[int]]:
    """Indices of the items of each length, in order: the groups one DCT basis serves."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    return groups


def encode_poses(poses: list[np.ndarray], n_dct: int) -> torch.Tensor:
    """Normalised poses, each (frames, joints, 3) -> the GCN's inputs (N, nodes, n_dct).

    Poses of one length are stacked and encoded in one matrix product.
    """
    if not poses:
        return torch.zeros(0, 0, n_dct)
    out = torch.empty(len(poses), COORDS * poses[0].shape[1], n_dct)
    for idx in by_length(len(p) for p in poses).values():
        stacked = np.stack([np.asarray(poses[i], dtype=np.float32) for i in idx])
        out[idx] = dct_encode(poses_to_nodes(torch.from_numpy(stacked)), n_dct)
    return out


def decode_poses(coefs: torch.Tensor, lengths: list[int]) -> list[np.ndarray]:
    """DCT coefficients (N, nodes, n_dct) -> poses (length, joints, 3) at each given length.

    Coefficients decoded at one length share one matrix product.
    """
    if len(lengths) != len(coefs):
        raise ValueError(f"{len(coefs)} coefficient sets for {len(lengths)} lengths")
    out: list[np.ndarray] = [np.empty(0)] * len(lengths)
    for length, idx in by_length(lengths).items():
        group = nodes_to_poses(dct_decode(coefs[idx], length)).contiguous().cpu().numpy()
        for k, i in enumerate(idx):
            out[i] = group[k]
    return out


class GraphConv(nn.Module):
    """A (X W) + b with a learnable dense node x node matrix A."""

    def __init__(self, in_features: int, out_features: int, n_nodes: int):
        super().__init__()
        bound = 1.0 / math.sqrt(out_features)
        self.weight = nn.Parameter(torch.empty(in_features, out_features).uniform_(-bound, bound))
        self.adjacency = nn.Parameter(torch.empty(n_nodes, n_nodes).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nodes, in) -> (B, nodes, out), contiguous: one batched product with A broadcast
        (a plain A @ y transposes y on the way and hands every later op strided memory)."""
        adjacency = self.adjacency.expand(x.shape[0], -1, -1)
        return torch.baddbmm(self.bias, adjacency, x @ self.weight)


class GraphLayer(nn.Module):
    """Graph conv -> batch norm over nodes x features -> ReLU -> dropout."""

    def __init__(self, in_features: int, out_features: int, n_nodes: int, dropout: float):
        super().__init__()
        self.conv = GraphConv(in_features, out_features, n_nodes)
        self.norm = nn.BatchNorm1d(n_nodes * out_features)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y = self.norm(y.flatten(1)).view_as(y)
        return self.drop(torch.relu(y))


class GCBlock(nn.Module):
    """Two graph layers of the same width with a residual connection."""

    def __init__(self, features: int, n_nodes: int, dropout: float):
        super().__init__()
        self.first = GraphLayer(features, features, n_nodes, dropout)
        self.second = GraphLayer(features, features, n_nodes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x))


class Classifier(nn.Module):
    """Pool features by 2, convolve along features with coordinates as channels, graph layer to
    n_dct, flatten, linear to the classes, log-softmax."""

    def __init__(self, cfg: GCNConfig):
        super().__init__()
        half = cfg.hidden // 2
        self.pool = nn.AvgPool1d(2)
        self.conv = nn.Conv2d(COORDS, COORDS, kernel_size=(1, 3), padding=(0, 1))
        self.layer = GraphLayer(half, cfg.n_dct, cfg.n_nodes, cfg.dropout)
        self.out = nn.Linear(cfg.n_nodes * cfg.n_dct, cfg.n_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, n, _ = h.shape
        y = self.pool(h)
        y = self.conv(y.view(b, COORDS, n // COORDS, -1)).view(b, n, -1)
        y = self.layer(y)
        return torch.log_softmax(self.out(y.flatten(1)), dim=-1)


class Corrector(nn.Module):
    """GC block, the label fed back as one extra feature per node, GC block, graph conv to
    DCT deltas (and, with `attention`, a graph conv to one feature and a sigmoid)."""

    def __init__(self, cfg: GCNConfig, feedback: bool):
        super().__init__()
        width = cfg.hidden + int(feedback)
        self.before = GCBlock(cfg.hidden, cfg.n_nodes, cfg.dropout)
        self.feedback = nn.Linear(cfg.n_classes, cfg.n_nodes) if feedback else None
        self.after = GCBlock(width, cfg.n_nodes, cfg.dropout)
        self.out = GraphConv(width, cfg.n_dct, cfg.n_nodes)
        self.attention = GraphConv(width, 1, cfg.n_nodes) if cfg.attention else None

    def forward(self, h: torch.Tensor, label: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deltas (B, nodes, n_dct) and the attention (B, nodes, 1), None without one."""
        y = self.before(h)
        if self.feedback is not None:
            y = torch.cat([y, self.feedback(label).unsqueeze(-1)], dim=-1)
        y = self.after(y)
        attention = None if self.attention is None else torch.sigmoid(self.attention(y))
        return self.out(y), attention


class FeedbackGCN(nn.Module):
    def __init__(self, cfg: GCNConfig):
        super().__init__()
        self.config = cfg
        self.variant = get_variant(cfg.variant)
        self.trunk = GraphLayer(cfg.n_dct, cfg.hidden, cfg.n_nodes, cfg.dropout)
        self.classifier = Classifier(cfg) if self.variant.classifies else None
        self.corrector = (
            Corrector(cfg, feedback=self.variant.feedback != "none")
            if self.variant.corrects else None
        )

    def forward(
        self, x: torch.Tensor, true_onehot: torch.Tensor | None = None, teacher_prob: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, nodes, n_dct) -> log-probabilities (B, classes) and DCT deltas (B, nodes, n_dct).

        teacher_prob: during training, the chance per sample that the fed-back label is
        `true_onehot` rather than the prediction.
        """
        log_probs, deltas, _ = self.outputs(x, true_onehot, teacher_prob)
        return log_probs, deltas

    def outputs(
        self, x: torch.Tensor, true_onehot: torch.Tensor | None = None, teacher_prob: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """forward() and the attention (B, nodes, 1), None for a network without one."""
        b = x.shape[0]
        h = self.trunk(x)
        if self.classifier is not None:
            log_probs = self.classifier(h)
        else:
            log_probs = x.new_full((b, self.config.n_classes), -math.log(self.config.n_classes))
        if self.corrector is None:
            return log_probs, torch.zeros_like(x), None
        return log_probs, *self.corrector(h, self._fed_back(log_probs, true_onehot, teacher_prob))

    def _fed_back(
        self, log_probs: torch.Tensor, true_onehot: torch.Tensor | None, teacher_prob: float
    ) -> torch.Tensor | None:
        """The one-hot label the correction branch receives."""
        predicted = fed_back(self.variant, log_probs, true_onehot)
        taught = self.training and teacher_prob > 0.0 and true_onehot is not None
        if self.variant.feedback != "curriculum" or not taught:
            return predicted
        use_true = torch.rand(log_probs.shape[0], 1, device=log_probs.device) < teacher_prob
        return torch.where(use_true, true_onehot.to(log_probs.dtype), predicted)


def fed_back(variant: Variant, log_probs: torch.Tensor, true_onehot: torch.Tensor | None,
             given: bool = False) -> torch.Tensor | None:
    """The label fed back at inference: none, the given one (zeros when none is given) or the
    predicted one, by the variant's kind of feedback; `given` feeds back `true_onehot` to any
    variant with feedback (labels the caller chose, as TrainedModel.infer's fed_classes)."""
    if variant.feedback == "none":
        return None
    if variant.feedback == "true" or (given and true_onehot is not None):
        return true_onehot if true_onehot is not None else torch.zeros_like(log_probs)
    predicted = nn.functional.one_hot(log_probs.argmax(-1), log_probs.shape[-1])
    return predicted.to(log_probs.dtype)
