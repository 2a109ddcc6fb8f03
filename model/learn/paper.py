"""The paper's released weights as posecoach models.

The seed repository (github Jacoo-Zhao/3D-Pose-Based-Feedback-For-Physical-Exercises) ships
state dicts of two of its networks (models.py) that map onto FeedbackGCN:

- `ours`, its GCN_corr_class_ours (Ours.pt; classifer_for_eval.pt, the classifier its
  evaluation judges corrections with, is the same network): the `full` variant with
  `attention` on; with `classifier_only`, the `separated_classifier` variant of its trunk and
  classification branch;
- `classifier`, its GCN_class (Classifer.pt): the `separated_classifier` variant.

What the mapping found, and how each difference is kept:

- the seed puts the fed-back label first among the 257 features of its second correction
  block, posecoach last: those weights, biases and batch-norm entries are permuted, which
  computes the same;
- the seed's class-branch 1x3 convolution has no bias: posecoach's gets a bias of zeros;
- the correction branch's attention (a graph convolution to one feature and a sigmoid, trained
  there with an L1 penalty) exists in posecoach only as GCNConfig.attention, for these weights;
- the seed defines layers its forward pass never uses (gcin2 and gcout_class of `ours`; gcout,
  conv1d and the GC blocks of GCN_class): they are left out and named in the model's card;
- the seed skips its classification branch's batch norm (and GCN_class its trunk's) for a batch
  of one sequence; posecoach always applies the trained statistics, so that a repetition scores
  the same alone as in a batch (the seed's own outputs for a batch of more than one are what
  posecoach reproduces);
- inputs are the paper's, not posecoach's: raw coordinates (normalisation mode "paper") through
  model.learn.paper_dct.

Corrector.pt (the seed's separate corrector, no label fed back) has no posecoach variant and is
refused. Loading reads tensors only: torch.load(..., weights_only=True).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from model.data.labels import ec3d_classes
from model.data.normalize import Normalization
from model.learn.config import TrainConfig
from model.learn.gcn import FeedbackGCN, GCNConfig
from model.learn.saved import TrainedModel

REPOSITORY = "github.com/Jacoo-Zhao/3D-Pose-Based-Feedback-For-Physical-Exercises"
SKELETON = "ec3d19"
FPS = 30.0
PREPROCESSING = (
    "the paper's: raw EC3D coordinates of 19 joints (normalisation mode 'paper': no centring, "
    "turning or scaling), each frame flattened coordinate-major into 57 rows, an unnormalised "
    "2D DCT-II over time and rows keeping 25 time coefficients (zero-padded to 25 frames when "
    "shorter); corrected = original + attention x inverse DCT of the deltas"
)

State = Mapping[str, torch.Tensor]


class PaperWeightsError(ValueError):
    """A state dict that is not one of the paper's networks, or does not fit one."""


@dataclass(frozen=True)
class Sizes:
    """The sizes a state dict's tensors give."""

    n_dct: int
    hidden: int
    n_nodes: int
    n_classes: int


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pt file, tensors only (weights_only=True); PaperWeightsError when
    the file holds anything else."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise PaperWeightsError(f"{path}: not a state dict torch loads with weights_only=True: "
                                f"{exc}") from exc
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise PaperWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict of "
                                "named tensors")
    return dict(state)


def kind_of(state: State) -> str:
    """Which of the seed's networks the state dict is: 'ours' or 'classifier'."""
    if "gcbs1.gc1.weight" in state and "gcatt.weight" in state:
        return "ours"
    if "gcout_v2.weight" in state and "bnin.weight" in state:
        return "classifier"
    if "gcatt.weight" in state and "gcout.weight" in state:
        raise PaperWeightsError("the seed's separate corrector (no label fed back): no posecoach "
                                "variant takes it")
    raise PaperWeightsError("not one of the paper's networks: neither GCN_corr_class_ours "
                            "(gcbs1.*, gcatt.*) nor GCN_class (gcout_v2.*, bnin.*)")


def _sizes(state: State) -> Sizes:
    trunk = "gcin.weight"
    head = "lin.weight"
    missing = [k for k in (trunk, "gcin.adj", head) if k not in state]
    if missing:
        raise PaperWeightsError(f"missing tensors: {', '.join(missing)}")
    n_dct, hidden = _dims(state, trunk, 2)
    n_classes = _dims(state, head, 2)[0]
    n_nodes = _dims(state, "gcin.adj", 2)[0]
    return Sizes(n_dct=n_dct, hidden=hidden, n_nodes=n_nodes, n_classes=n_classes)


def _dims(state: State, key: str, ndim: int) -> tuple[int, ...]:
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise PaperWeightsError(f"{key} has shape {shape}: {ndim} dimensions expected")
    return shape


def _graph_conv(seed: str, ours: str) -> dict[str, tuple[str, str]]:
    return {f"{ours}.weight": (f"{seed}.weight", "same"),
            f"{ours}.adjacency": (f"{seed}.adj", "same"), f"{ours}.bias": (f"{seed}.bias", "same")}


def _norm(seed: str, ours: str) -> dict[str, tuple[str, str]]:
    return {f"{ours}.{p}": (f"{seed}.{p}", "same")
            for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}


def _layer(conv: str, norm: str, ours: str) -> dict[str, tuple[str, str]]:
    return {**_graph_conv(conv, f"{ours}.conv"), **_norm(norm, f"{ours}.norm")}


def _block(seed: str, ours: str, how: str = "same") -> dict[str, tuple[str, str]]:
    """A seed GC_Block (gc1, bn1, gc2, bn2) onto a posecoach GCBlock; `how` for the block with
    the label feature ('label_first': every feature axis permuted)."""
    out = {}
    for gc, bn, layer in (("gc1", "bn1", "first"), ("gc2", "bn2", "second")):
        out[f"{ours}.{layer}.conv.weight"] = (f"{seed}.{gc}.weight", f"{how}:rows+cols")
        out[f"{ours}.{layer}.conv.adjacency"] = (f"{seed}.{gc}.adj", "same")
        out[f"{ours}.{layer}.conv.bias"] = (f"{seed}.{gc}.bias", f"{how}:rows")
        out.update({k: (v, f"{how}:nodes" if not v.endswith("num_batches_tracked") else "same")
                    for k, (v, _) in _norm(f"{seed}.{bn}", f"{ours}.{layer}.norm").items()})
    return out


def _classification(ours_branch: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {"classifier.conv.weight": ("conv2d.weight", "same"),
            "classifier.conv.bias": ("", "zeros"), **ours_branch,
            "classifier.out.weight": ("lin.weight", "same"),
            "classifier.out.bias": ("lin.bias", "same")}


def mapping(kind: str, classifier_only: bool = False) -> dict[str, tuple[str, str]]:
    """posecoach key -> (seed key, how): how the seed's tensors become posecoach's."""
    if kind == "classifier":
        return {**_layer("gcin", "bnin", "trunk"),
                **_classification(_layer("gcout_v2", "bnout", "classifier.layer"))}
    shared = {**_layer("gcin", "bn1", "trunk"),
              **_classification(_layer("gcont_class_v2", "bn2", "classifier.layer"))}
    if classifier_only:
        return shared
    label_first = "label_first"
    return {
        **shared,
        **_block("gcbs", "corrector.before"),
        "corrector.feedback.weight": ("linearLayer.weight", "same"),
        "corrector.feedback.bias": ("linearLayer.bias", "same"),
        **_block("gcbs1", "corrector.after", label_first),
        "corrector.out.weight": ("gcout_corr.weight", f"{label_first}:rows"),
        "corrector.out.adjacency": ("gcout_corr.adj", "same"),
        "corrector.out.bias": ("gcout_corr.bias", "same"),
        "corrector.attention.weight": ("gcatt.weight", f"{label_first}:rows"),
        "corrector.attention.adjacency": ("gcatt.adj", "same"),
        "corrector.attention.bias": ("gcatt.bias", "same"),
    }


def _label_last(features: int) -> torch.Tensor:
    """posecoach feature i -> the seed's: the seed's feature 0 (the label) goes last."""
    return torch.cat([torch.arange(1, features), torch.zeros(1, dtype=torch.long)])


def _converted(tensor: torch.Tensor, how: str, n_nodes: int) -> torch.Tensor:
    kind, _, axes = how.partition(":")
    if kind == "same":
        return tensor
    perm = _label_last(tensor.shape[0] if axes != "nodes" else tensor.numel() // n_nodes)
    if axes == "rows":
        return tensor[perm]
    if axes == "rows+cols":
        return tensor[perm][:, perm]
    return tensor.view(n_nodes, -1)[:, perm].reshape(-1)


def convert(state: State, module: FeedbackGCN, kind: str, classifier_only: bool = False
            ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """posecoach's state dict for `module` from the seed's, and the seed's keys left unused.

    PaperWeightsError names every tensor missing or of the wrong shape."""
    target = module.state_dict()
    plan = mapping(kind, classifier_only)
    n_nodes = module.config.n_nodes
    out, missing, misshapen = {}, [], []
    for key, (seed_key, how) in plan.items():
        if how == "zeros":
            out[key] = torch.zeros_like(target[key])
            continue
        if seed_key not in state:
            if seed_key.endswith("num_batches_tracked"):
                out[key] = torch.zeros_like(target[key])
                continue
            missing.append(seed_key)
            continue
        shape, expected = tuple(state[seed_key].shape), tuple(target[key].shape)
        if shape != expected:
            misshapen.append(f"{seed_key} {shape} (expected {expected})")
            continue
        out[key] = _converted(state[seed_key], how, n_nodes).to(target[key].dtype).clone()
    if missing or misshapen:
        raise PaperWeightsError("the state dict does not fit the seed's "
                                f"{'GCN_corr_class_ours' if kind == 'ours' else 'GCN_class'}: "
                                + "; ".join(filter(None, [
                                    missing and f"missing {', '.join(missing)}",
                                    misshapen and f"misshapen {', '.join(misshapen)}"])))
    used = {seed_key for seed_key, _ in plan.values()}
    return out, sorted(k for k in state if k not in used)


def import_weights(path: str | Path, classifier_only: bool = False, units: str = "m",
                   progress: Callable[[str], None] | None = None) -> TrainedModel:
    """The paper's state dict at `path` as a TrainedModel in eval mode (12 classes in the
    paper's order, skeleton ec3d19, the paper's preprocessing), its card saying where it came
    from. `units`: those of the coordinates the weights were trained on."""
    path = Path(path)
    state = read_state(path)
    kind = kind_of(state)
    sizes = _sizes(state)
    classes = ec3d_classes()
    if sizes.n_classes != len(classes):
        raise PaperWeightsError(f"lin.weight gives {sizes.n_classes} classes; the paper's "
                                f"networks have {len(classes)}")
    variant = "separated_classifier" if kind == "classifier" or classifier_only else "full"
    train = TrainConfig(variant=variant, n_dct=sizes.n_dct, hidden=sizes.hidden, epochs=0)
    gcn = GCNConfig.for_data(train, sizes.n_nodes, sizes.n_classes)
    if variant == "full":
        gcn = replace(gcn, attention=True)
    module = FeedbackGCN(gcn)
    weights, unused = convert(state, module, kind, classifier_only)
    module.load_state_dict(weights)
    module.eval()
    if progress is not None:
        progress(f"{path.name}: {kind} -> {variant}, {len(weights)} tensors, "
                 f"{len(unused)} unused")
    meta = {
        "dataset": "ec3d",
        "origin": {
            "kind": "paper weights",
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "repository": REPOSITORY,
            "network": "GCN_corr_class_ours" if kind == "ours" else "GCN_class",
            "classifier_only": classifier_only,
            "unused_tensors": unused,
        },
        "preprocessing": PREPROCESSING,
    }
    return TrainedModel(module=module, config=train, classes=classes,
                        normalization=Normalization(skeleton=SKELETON, fps=FPS, mode="paper",
                                                    units=units),
                        meta=meta)
