"""The saved form of a trained model: a folder with model.safetensors (the weights) and
model.json (skeleton, classes, normalisation, configurations, versions, the calibration
temperature). Loading reads JSON and safetensors only: nothing is unpickled. A card written
before models kept a temperature loads with temperature 1 (probabilities as the network gives
them).
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from scipy.special import log_softmax

from model.data.labels import Class
from model.data.normalize import Normalization, normalize_many
from model.data.sequence import Sequence
from model.data.skeletons import get_skeleton
from model.learn import paper_dct
from model.learn.config import TrainConfig
from model.learn.folded import FoldedGCN
from model.learn.gcn import FeedbackGCN, GCNConfig, decode_poses, encode_poses

WEIGHTS = "model.safetensors"
CARD = "model.json"
FORMAT = "posecoach-model/1"


def code_version() -> dict[str, str | None]:
    """The package version and, when the code runs from a git checkout, its commit."""
    try:
        package = importlib.metadata.version("posecoach")
    except importlib.metadata.PackageNotFoundError:
        package = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"package": package, "commit": commit}


def _plain(value: object) -> object:
    """JSON form of numpy values in meta; anything else unknown is refused."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"model meta holds a {type(value).__name__}, which JSON cannot store")


def scaled(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after dividing the log-probabilities by `temperature` (temperature
    scaling: the predicted class stays, the confidence softens for temperature > 1)."""
    return np.exp(log_softmax(np.asarray(log_probs, np.float64) / temperature, axis=-1))


@dataclass
class Inference:
    log_probs: np.ndarray  # (B, classes)
    corrected: list[np.ndarray]  # each (frames, joints, 3), at its input's length
    deltas: np.ndarray  # (B, nodes, n_dct)
    attention: np.ndarray | None = None  # (B, nodes, 1), for a network with attention


@dataclass
class TrainedModel:
    module: FeedbackGCN
    config: TrainConfig
    classes: list[Class]
    normalization: Normalization
    meta: dict = field(default_factory=dict)
    temperature: float = 1.0
    _folded: tuple[list[torch.Tensor], list[int], FoldedGCN] | None = field(
        default=None, init=False, repr=False, compare=False)

    @property
    def gcn_config(self) -> GCNConfig:
        return self.module.config

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def card(self) -> dict:
        """Everything model.json holds."""
        return {
            "format": FORMAT,
            "skeleton": self.normalization.skeleton,
            "joints": list(get_skeleton(self.normalization.skeleton).joints),
            "classes": [list(c) for c in self.classes],
            "normalization": self.normalization.to_dict(),
            "gcn": self.gcn_config.to_dict(),
            "train": self.config.to_dict(),
            "temperature": self.temperature,
            "versions": {
                "code": code_version(),
                "torch": torch.__version__,
                "dataset": self.meta.get("dataset"),
                "dataset_version": self.meta.get("dataset_version"),
            },
            "meta": self.meta,
        }

    def save(self, folder: str | Path) -> Path:
        """Write model.safetensors and model.json into folder; return the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        card = json.dumps(self.card(), indent=2, default=_plain)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}
        save_file(weights, folder / WEIGHTS, metadata={"format": "pt"})
        (folder / CARD).write_text(card)
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> TrainedModel:
        """Rebuild a saved model (eval mode) from its folder; JSON and safetensors only."""
        folder = Path(folder)
        for name in (CARD, WEIGHTS):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder}: no {name}; not a saved posecoach model")
        card = json.loads((folder / CARD).read_text())
        if card.get("format") != FORMAT:
            raise ValueError(f"{folder / CARD}: format {card.get('format')!r}, expected {FORMAT}")
        module = FeedbackGCN(GCNConfig.from_dict(card["gcn"]))
        module.load_state_dict(load_file(folder / WEIGHTS, device="cpu"))
        module.to(device).eval()
        return cls(
            module=module,
            config=TrainConfig.from_dict(card["train"]),
            classes=[(c[0], c[1]) for c in card["classes"]],
            normalization=Normalization.from_dict(card["normalization"]),
            meta=card["meta"],
            temperature=float(card.get("temperature", 1.0)),
        )

    def probabilities(self, log_probs: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities from the network's log-probabilities."""
        return scaled(log_probs, self.temperature)

    def _check_poses(self, poses: list[np.ndarray]) -> None:
        joints = self.gcn_config.n_nodes // 3
        for i, p in enumerate(poses):
            if p.ndim != 3 or p.shape[1:] != (joints, 3) or p.shape[0] < 1:
                raise ValueError(
                    f"poses[{i}] has shape {p.shape}; the model expects (frames, {joints}, 3)"
                )

    def folded(self) -> FoldedGCN:
        """The module's forward pass folded for inference (FoldedGCN), kept until a
        weight or statistic changes: a new tensor, or an in-place update (which raises the
        tensor's version counter, as autograd relies on)."""
        state = list(self.module.state_dict(keep_vars=True).values())
        versions = [t._version for t in state]
        if (self._folded is None or versions != self._folded[1]
                or any(a is not b for a, b in zip(state, self._folded[0], strict=False))
                or len(state) != len(self._folded[0])):
            self._folded = (state, versions, FoldedGCN(self.module))
        return self._folded[2]

    @property
    def paper_preprocessing(self) -> bool:
        """Whether the model takes the paper's inputs (model.learn.paper_dct), not posecoach's."""
        return self.normalization.mode == "paper"

    def encode(self, poses: list[np.ndarray]) -> torch.Tensor:
        """Normalised poses -> the network's inputs (N, nodes, n_dct), the model's way."""
        n_dct = self.gcn_config.n_dct
        return paper_dct.encode(poses, n_dct) if self.paper_preprocessing else encode_poses(
            poses, n_dct)

    def outputs(self, x: torch.Tensor, fed: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The folded network on inputs x: log-probabilities, deltas and attention (None
        without); `fed` (one-hot) is fed back instead of the prediction when given."""
        fed = None if fed is None else fed.to(self.device)
        return self.folded().outputs(x.to(self.device), fed, given=fed is not None)

    def _corrected(self, poses: list[np.ndarray], x: torch.Tensor, deltas: torch.Tensor,
                   attention: torch.Tensor | None) -> list[np.ndarray]:
        if self.paper_preprocessing:
            return paper_dct.corrected(poses, deltas, attention)
        moved = deltas if attention is None else deltas * attention
        return decode_poses(x + moved, [len(p) for p in poses])

    @torch.inference_mode()
    def infer(
        self, poses: list[np.ndarray], batch_size: int = 256,
        fed_classes: Seq[int] | None = None,
    ) -> Inference:
        """Classify and correct already-normalised poses, in batches, in eval mode.

        fed_classes: labels (one class index per input) fed back instead of the model's own
        prediction, as a `separated_corrector` needs; without them every variant with feedback
        but that one feeds back its prediction.
        """
        self._check_poses(poses)
        cfg = self.gcn_config
        n_classes = cfg.n_classes
        if not poses:
            return Inference(np.zeros((0, n_classes), np.float32), [],
                             np.zeros((0, cfg.n_nodes, cfg.n_dct), np.float32))
        log_probs, deltas, attention, corrected = [], [], [], []
        for start in range(0, len(poses), batch_size):
            chunk = poses[start : start + batch_size]
            x = self.encode(chunk).to(self.device)
            fed = None
            if fed_classes is not None:
                idx = torch.as_tensor(list(fed_classes[start : start + batch_size]))
                fed = torch.nn.functional.one_hot(idx, n_classes).float().to(self.device)
            lp, d, att = self.outputs(x, fed)
            log_probs.append(lp.cpu().numpy())
            deltas.append(d.cpu().numpy())
            if att is not None:
                attention.append(att.cpu().numpy())
            corrected += self._corrected(chunk, x, d, att)
        return Inference(np.concatenate(log_probs), corrected, np.concatenate(deltas),
                         np.concatenate(attention) if attention else None)

    def classify_and_correct(self, sequences: list[Sequence], batch_size: int = 256) -> Inference:
        """infer() on sequences, normalised the model's way first."""
        return self.infer([p for p, _ in normalize_many(sequences, self.normalization)],
                          batch_size)
