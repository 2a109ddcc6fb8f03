"""Training the feedback GCN in one process, on CPU or CUDA.

Loss = NLL of the class (label-smoothed by `label_smoothing`) + beta * (soft-DTW divergence
between the corrected motion and its target + smooth_weight * mean squared difference of
consecutive corrected frames). The corrected
motion is the inverse DCT of (input coefficients + deltas) at the input's length; the target is
compared at its own length. Adam, the learning rate decayed by lr_decay every lr_step epochs,
gradient norm clipped. The last epoch's model is kept, or with `average_tail` the mean of the
last epochs' weights with its batch-norm statistics measured again on the training data:
nothing is chosen on held-out data.

Fixed seeds give identical weights for identical inputs and thread counts. With a checkpoint
folder, every epoch writes last.pt (weights, optimiser, scheduler, epoch, random states) and a
later call with the same folder resumes from it, so a killed training loses one epoch at most.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from model.data.labels import Class, classes_from
from model.data.normalize import Normalization, normalize_many
from model.data.sequence import Sequence, SequenceError
from model.learn.config import PLACEMENT, TrainConfig, get_variant
from model.learn.dct import idct_basis
from model.learn.gcn import FeedbackGCN, GCNConfig, encode_poses, poses_to_nodes
from model.learn.recipe import resolve
from model.learn.saved import TrainedModel
from model.learn.softdtw import soft_dtw, soft_dtw_self
from model.learn.targets import pair_targets

CHECKPOINT = "last.pt"


def resolve_device(device: str) -> torch.device:
    """"auto" is CUDA when available, else CPU; anything else is taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class TrainingData:
    """Everything training reads, as tensors: DCT inputs, padded motions, bases, labels."""

    coefs: torch.Tensor  # (N, nodes, n_dct)
    motions: torch.Tensor  # (N, T_max, nodes), zero beyond each length
    bases: torch.Tensor  # (N, T_max, n_dct): inverse DCT at each input's length
    lengths: torch.Tensor  # (N,)
    labels: torch.Tensor  # (N,)
    targets: torch.Tensor  # (N,) index of each input's target, NO_TARGET for none
    self_sdtw: torch.Tensor  # (N,) float64 sdtw(m, m) of every motion, for targets

    def to(self, device: torch.device) -> TrainingData:
        return TrainingData(*(getattr(self, f.name).to(device) for f in fields(self)))


def pad_stack(arrays: list[torch.Tensor]) -> torch.Tensor:
    """Stack (T_i, ...) tensors into (N, T_max, ...), zero beyond each length."""
    return torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True)


def prepare(
    poses: list[np.ndarray], seqs: list[Sequence], classes: list[Class], n_dct: int,
    gamma: float = 0.01,
) -> TrainingData:
    index = {c: i for i, c in enumerate(classes)}
    motions = pad_stack([poses_to_nodes(torch.from_numpy(p)) for p in poses])
    lengths = torch.tensor([len(p) for p in poses])
    return TrainingData(
        coefs=encode_poses(poses, n_dct),
        motions=motions,
        bases=pad_stack([idct_basis(len(p), n_dct) for p in poses]),
        lengths=lengths,
        labels=torch.tensor([index[(s.exercise, s.label)] for s in seqs]),
        targets=torch.tensor(pair_targets(poses, seqs, gamma=gamma)),
        self_sdtw=self_terms(motions, lengths, gamma),
    )


@torch.no_grad()
def self_terms(motions: torch.Tensor, lengths: torch.Tensor, gamma: float,
               chunk: int = 64) -> torch.Tensor:
    """sdtw(m, m) of every padded motion (N, T, F) -> (N,) float64."""
    m = motions.double()
    return torch.cat([
        soft_dtw_self(m[i : i + chunk], lengths[i : i + chunk], gamma)
        for i in range(0, len(m), chunk)
    ])


def divergence_to_targets(
    x: torch.Tensor, x_lens: torch.Tensor, y: torch.Tensor, y_lens: torch.Tensor,
    y_self: torch.Tensor, gamma: float,
) -> torch.Tensor:
    """Soft-DTW divergence sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2 per pair -> (B,) float64,
    with the targets' constant self terms sdtw(y, y) given (computed once, in prepare)."""
    x = x.double()
    xy = soft_dtw(x, y.double(), x_lens, y_lens, gamma)
    return xy - (soft_dtw_self(x, x_lens, gamma) + y_self) / 2


def smoothness(motion: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of consecutive frames of each padded motion (B, T, F) -> (B,)."""
    diff = (motion[:, 1:] - motion[:, :-1]).pow(2).sum(-1)
    valid = torch.arange(diff.shape[1], device=motion.device) < (lengths - 1).unsqueeze(1)
    return (diff * valid).sum(1) / ((lengths - 1).clamp(min=1) * motion.shape[-1])


def corrected_motion(
    data: TrainingData, idx: torch.Tensor, deltas: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse DCT of (input coefficients + deltas) at each input's length, padded, and lengths."""
    lengths = data.lengths[idx]
    bases = data.bases[idx, : int(lengths.max())]
    return bases @ (data.coefs[idx] + deltas).transpose(1, 2), lengths


def class_loss(log_probs: torch.Tensor, nll: torch.Tensor, smoothing: float) -> torch.Tensor:
    """The NLL of the labels with `smoothing` of each label's weight spread over all classes."""
    if not smoothing:
        return nll
    return (1.0 - smoothing) * nll - smoothing * log_probs.mean(dim=1).mean()


def batch_loss(
    net: torch.nn.Module, data: TrainingData, idx: torch.Tensor, config: TrainConfig,
    teacher_prob: float, n_classes: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one batch and its parts; net is the FeedbackGCN or its wrapper."""
    variant = get_variant(config.variant)
    labels = data.labels[idx]
    onehot = torch.nn.functional.one_hot(labels, n_classes).float()
    log_probs, deltas = net(data.coefs[idx], onehot, teacher_prob)
    loss = log_probs.new_zeros(())
    parts: dict[str, float] = {}
    if variant.classifies:
        nll = torch.nn.functional.nll_loss(log_probs, labels)
        loss = loss + class_loss(log_probs, nll, config.label_smoothing)
        parts["nll"] = nll.item()
    if variant.corrects:
        motion, lengths = corrected_motion(data, idx, deltas)
        has_target = data.targets[idx] >= 0
        tgt = torch.where(has_target, data.targets[idx], idx)
        tgt_len = data.lengths[tgt]
        target = data.motions[tgt, : int(tgt_len.max())]
        div = divergence_to_targets(motion, lengths, target, tgt_len, data.self_sdtw[tgt],
                                    config.gamma)
        sdtw = ((div * has_target).sum() / has_target.sum().clamp(min=1)).float()
        smooth = smoothness(motion, lengths).mean()
        loss = loss + config.beta * (sdtw + config.smooth_weight * smooth)
        parts["sdtw"] = sdtw.item()
        parts["smooth"] = smooth.item()
    parts["loss"] = loss.item()
    return loss, parts


def batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A shuffled split of range(n); a last batch of one is dropped (batch norm needs two)."""
    order = torch.randperm(n, generator=generator)
    out = list(order.split(batch_size))
    return out if len(out[-1]) > 1 else out[:-1]


def shard_batches(steps: list[torch.Tensor], rank: int, world_size: int) -> list[torch.Tensor]:
    """Rank's share of every batch; batches too small to give each rank two items are dropped
    (on every rank alike, so that all ranks take the same number of steps)."""
    return [idx[rank::world_size] for idx in steps if len(idx) >= 2 * world_size]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def data_fingerprint(seqs: list[Sequence]) -> str:
    """Identity of the training data, in order, with its labels."""
    h = hashlib.sha256()
    for s in seqs:
        h.update(f"{s.sequence_id}|{s.label}\n".encode())
    return h.hexdigest()[:32]


def checkpoint_identity(config: TrainConfig, classes: list[Class], fingerprint: str) -> dict:
    cfg = {k: v for k, v in config.to_dict().items() if k not in PLACEMENT}
    return {"config": cfg, "classes": [list(c) for c in classes], "data": fingerprint}


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator,
                  device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["shuffle"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, identity: dict) -> dict | None:
    """The checkpoint at path if there is one for this configuration, classes and data."""
    if not path.exists():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("identity") != identity:
        raise ValueError(
            f"{path}: checkpoint belongs to another configuration, class list or training data; "
            "remove it or train in another folder"
        )
    return ckpt


def ignore_mean_pose(module: FeedbackGCN) -> None:
    """Hold the trunk's weights on DCT coefficient 0 (each trajectory's mean) at zero, so that
    nothing downstream sees the mean pose: the row starts at zero and its gradient is zeroed,
    so Adam never moves it. The saved weights carry it; inference needs no flag."""
    weight = module.trunk.conv.weight
    with torch.no_grad():
        weight[0].zero_()
    weight.register_hook(lambda grad: torch.cat([torch.zeros_like(grad[:1]), grad[1:]]))


def normalize_labelled(
    sequences: list[Sequence], norm: Normalization
) -> list[np.ndarray]:
    """Normalised poses of labelled sequences; SequenceError for an unlabelled one."""
    for s in sequences:
        if s.label is None:
            src = s.source or f"{s.subject}/{s.exercise}/{s.rep}"
            raise SequenceError(src, "no label: training needs labelled sequences", "no_label")
    return [poses for poses, _ in normalize_many(sequences, norm)]


@dataclass
class Run:
    """A training in progress: the module (and its wrapper), optimiser, scheduler, shuffling."""

    module: FeedbackGCN
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    device: torch.device
    history: list[dict]
    average: dict[str, torch.Tensor] | None = None
    averaged: int = 0

    @classmethod
    def start(cls, module: FeedbackGCN, config: TrainConfig, device: torch.device,
              wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None) -> Run:
        optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
        return cls(
            module=module, net=module if wrap is None else wrap(module), optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_decay),
            generator=torch.Generator().manual_seed(config.seed), device=device, history=[],
        )

    def state(self) -> dict:
        """Everything a resumed run needs, as tensors and plain values (weights_only loads it)."""
        return {
            "model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": len(self.history),
            "rng": rng_state(self.generator, self.device), "history": self.history,
            "average": self.average, "averaged": self.averaged,
        }

    def restore(self, ckpt: dict) -> None:
        self.module.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"], self.generator, self.device)
        self.history = list(ckpt["history"])
        self.average, self.averaged = ckpt.get("average"), int(ckpt.get("averaged", 0))

    @torch.no_grad()
    def accumulate(self) -> None:
        """Add the module's current weights to the running mean of weights."""
        self.averaged += 1
        current = {k: p.detach().clone() for k, p in self.module.named_parameters()}
        if self.average is None:
            self.average = current
            return
        for key, value in current.items():
            self.average[key] += (value - self.average[key]) / self.averaged

    @torch.no_grad()
    def keep_average(self, data: TrainingData, config: TrainConfig) -> None:
        """Load the mean weights into the module and measure its batch-norm statistics again,
        over one epoch of shuffled batches, as training runs it (dropout on). Shuffled: batches
        in the data's order (one subject, one class) would measure too small a variance."""
        for key, param in self.module.named_parameters():
            param.copy_(self.average[key])
        norms = [m for m in self.module.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a plain mean over the batches
        self.module.train()
        shuffle = torch.Generator().manual_seed(config.seed)
        for idx in batches(len(data.labels), config.batch_size, shuffle):
            self.module(data.coefs[idx.to(self.device)])
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum

    def epoch(self, data: TrainingData, config: TrainConfig, n_classes: int,
              shard: tuple[int, int] | None = None) -> dict:
        """One pass over the shuffled data; returns the epoch's mean loss terms."""
        epoch = len(self.history)
        began = time.perf_counter()
        self.net.train()
        curriculum = self.module.variant.feedback == "curriculum"
        teacher_prob = 1.0 - epoch / config.epochs if curriculum else 1.0
        steps = batches(len(data.labels), config.batch_size, self.generator)
        if shard is not None:
            steps = shard_batches(steps, *shard)
        if not steps:
            raise ValueError(f"{len(data.labels)} sequences give no batch of two or more per "
                             f"worker (batch_size {config.batch_size})")
        sums: dict[str, float] = {}
        for idx in steps:
            loss, parts = batch_loss(self.net, data, idx.to(self.device), config, teacher_prob,
                                     n_classes)
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), config.grad_clip)
            self.optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
        self.scheduler.step()
        row = {"epoch": epoch + 1, **{k: v / len(steps) for k, v in sums.items()},
               "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - began}
        self.history.append(row)
        return row


def train(
    sequences: list[Sequence],
    config: TrainConfig,
    norm: Normalization = Normalization(),
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    meta: dict | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    shard: tuple[int, int] | None = None,
) -> TrainedModel:
    """Train a FeedbackGCN on labelled sequences for config.epochs epochs; keep the last.

    on_epoch is called with each epoch's figures after its checkpoint is written. For data
    parallelism (workers.train), `wrap` turns the module into the one that runs forward and
    backward (e.g. DistributedDataParallel) and `shard=(rank, world_size)` keeps this rank's
    part of every batch.
    """
    if len(sequences) < 2:
        raise ValueError(f"training needs at least 2 sequences, got {len(sequences)}")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    poses = normalize_labelled(sequences, norm)
    config, chosen = resolve(config, poses, sequences)
    classes = classes_from((s.exercise, s.label) for s in sequences)
    data = prepare(poses, sequences, classes, config.n_dct, config.gamma).to(device)
    network = GCNConfig.for_data(config, n_nodes=data.coefs.shape[1], n_classes=len(classes))
    module = FeedbackGCN(network).to(device)
    if config.motion_only:
        ignore_mean_pose(module)
    run = Run.start(module, config, device, wrap)
    identity = checkpoint_identity(config, classes, data_fingerprint(sequences))
    ckpt_path = None
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT
        ckpt = load_checkpoint(ckpt_path, identity)
        if ckpt is not None:
            run.restore(ckpt)

    done = len(run.history)
    bar = tqdm(range(done, config.epochs), desc=f"train {config.variant}", unit="epoch",
               disable=not progress, initial=done, total=config.epochs)
    start = config.averaging_from
    for _ in bar:
        row = run.epoch(data, config, len(classes), shard)
        if start is not None and row["epoch"] >= start:
            run.accumulate()
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {**run.state(), "identity": identity})
        if on_epoch is not None:
            on_epoch(row)
    if run.averaged:
        run.keep_average(data, config)
    module.eval()
    return TrainedModel(module, config, classes, norm,
                        {**(meta or {}), "history": run.history, "n_train": len(sequences),
                         **({"recipe": chosen} if chosen else {})})
