"""The final training on all training subjects, as Ray work.

One worker: model.learn.train.train in one Ray worker process (a whole GPU where the cluster has
GPUs, `config.threads` CPUs otherwise), retried from its checkpoint folder when that process dies.
Several workers: Ray Train's TorchTrainer runs the same training loop data-parallel, every rank
a DistributedDataParallel replica (NCCL on GPUs, gloo on CPUs) that takes its share of every
batch, so the gradient of each step is that of the whole batch. Ray Train V2's controller
reserves no CPU, so the workers get all the cluster has. Rank 0 saves the trained model as the
run's checkpoint under `settings.home/ray-train` (on a cluster: storage every node can write,
e.g. an s3:// URI as RunConfig.storage_path); the driver loads it from there.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer
from torch.nn.parallel import DistributedDataParallel

from model.data.normalize import Normalization
from model.data.sequence import Sequence
from model.learn.config import TrainConfig
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.serve.scoring import calibrate
from model.settings import get_settings
from workers.cluster import ensure_ray, placement


class Replica(DistributedDataParallel):
    """DistributedDataParallel that still answers the wrapped model's own attributes
    (variant, config), which the training loop reads."""

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating-point buffers (batch-norm running statistics) over the replicas: each
    rank's last forward pass updated them from its own shard only."""
    world = torch.distributed.get_world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            torch.distributed.all_reduce(buffer, op=torch.distributed.ReduceOp.SUM)
            buffer.div_(world)


def state_checksum(module: torch.nn.Module) -> str:
    """A hash of every weight and buffer, to check that replicas agree."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def train_final(sequences: list[Sequence], config: TrainConfig, workers: int = 1,
                norm: Normalization = Normalization(), checkpoint_dir: str | Path | None = None,
                max_retries: int = 2, progress: bool = True) -> TrainedModel:
    """Train the model on `sequences` with `workers` data-parallel workers (1: one process)."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    ensure_ray()
    if workers == 1:
        return _train_one(sequences, config, norm, checkpoint_dir, max_retries, progress)
    return _train_data_parallel(sequences, config, workers, norm, max_retries)


def _fit(sequences: list[Sequence], config: TrainConfig, norm: Normalization,
         checkpoint_dir: str | Path | None, progress: bool) -> TrainedModel:
    """One process: train, choose the "unsure" threshold, hand the model back on the CPU."""
    trained = train(sequences, config, norm=norm, checkpoint_dir=checkpoint_dir,
                    progress=progress)
    calibrate(trained, sequences)
    trained.module.cpu()
    return replace(trained, config=trained.config.placed(device="cpu"))


def _train_one(sequences: list[Sequence], config: TrainConfig, norm: Normalization,
               checkpoint_dir: str | Path | None, max_retries: int,
               progress: bool) -> TrainedModel:
    place = placement(config.threads or 1, gpu_fraction=1.0)
    config = config.placed(device=place.device, threads=config.threads or 1)
    task = ray.remote(_fit).options(max_retries=max_retries, **place.options())
    return ray.get(task.remote(sequences, config, norm, checkpoint_dir, progress))


def _train_loop(loop: dict) -> None:
    """What every Ray Train worker runs: its replica of the training, then rank 0 reports."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    config = loop["config"].placed(device=str(device))
    sequences = ray.get(loop["data"])

    def wrap(module: torch.nn.Module) -> torch.nn.Module:
        ids = [device.index] if device.type == "cuda" else None
        return Replica(module, device_ids=ids)

    trained = train(sequences, config, norm=loop["norm"], progress=False, wrap=wrap,
                    shard=(rank, world), meta={"train_workers": world})
    average_buffers(trained.module)
    checksums: list[str | None] = [None] * world
    torch.distributed.all_gather_object(checksums, state_checksum(trained.module))
    metrics = {"world_size": world, "replica_checksums": checksums}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            calibrate(trained, sequences)
            trained.save(folder)
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report(metrics, checkpoint=checkpoint)


def _train_data_parallel(sequences: list[Sequence], config: TrainConfig, workers: int,
                         norm: Normalization, max_retries: int) -> TrainedModel:
    place = placement(config.threads or 1, gpu_fraction=1.0)
    per_worker = {"CPU": place.num_cpus, **({"GPU": 1} if place.num_gpus else {})}
    trainer = torch_trainer(
        loop={"data": ray.put(sequences), "config": config.placed(threads=config.threads or 1),
              "norm": norm},
        workers=workers, use_gpu=bool(place.num_gpus), per_worker=per_worker,
        max_retries=max_retries,
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        trained = TrainedModel.load(folder)
    trained.meta["data_parallel"] = {k: result.metrics[k]
                                     for k in ("world_size", "replica_checksums")}
    return trained


def torch_trainer(loop: dict, workers: int, use_gpu: bool, per_worker: dict[str, float],
                  max_retries: int) -> TorchTrainer:
    """The TorchTrainer of one data-parallel run, storing under settings.home/ray-train."""
    storage = get_settings().home / "ray-train"
    storage.mkdir(parents=True, exist_ok=True)
    return TorchTrainer(
        _train_loop,
        train_loop_config=loop,
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"train-final-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=max_retries),
        ),
    )
