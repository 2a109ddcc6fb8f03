"""Where Ray work runs: joining a cluster or starting local Ray; what each piece of work asks.

Locally, `ensure_ray()` starts Ray sized to the machine. With `RAY_ADDRESS` set (settings), it
joins that cluster and ships posecoach's own packages (model/, workers/) to every node through
the job's runtime_env `py_modules`, so the nodes need only Python, Ray and the third-party
dependencies (numpy, torch, pyarrow, deltalake, ...) at the driver's versions, not posecoach
itself. A cluster image that has posecoach installed can pass `ship_code=False`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import ray

import model
import workers
from model.settings import get_settings

log = logging.getLogger(__name__)


def code_runtime_env() -> dict:
    """The runtime_env that carries posecoach's packages to the nodes of a cluster."""
    return {"py_modules": [model, workers], "excludes": ["__pycache__", "*.pyc"]}


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               ship_code: bool = True) -> dict[str, float]:
    """Make sure this process is connected to Ray; return the cluster's total resources.

    Idempotent: when Ray is already initialised (e.g. by a test fixture or an earlier call)
    the running instance is kept. `address` (or settings.ray_address, i.e. RAY_ADDRESS) joins
    an existing cluster; otherwise a new local Ray with `num_cpus` (default: all cores) starts,
    never a cluster some other `ray start` left on this machine.
    """
    if not ray.is_initialized():
        address = address or get_settings().ray_address
        if address:
            log.info("joining the Ray cluster at %s", address)
            ray.init(address=address, runtime_env=code_runtime_env() if ship_code else None,
                     log_to_driver=False)
        else:
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1,
                     include_dashboard=False, log_to_driver=False)
    return dict(ray.cluster_resources())


@dataclass(frozen=True)
class Placement:
    """What one piece of work asks Ray for, and the torch device it then trains on."""

    num_cpus: float
    num_gpus: float
    device: str

    def options(self) -> dict[str, float]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


def placement(threads: int = 1, gpu_fraction: float = 0.5,
              resources: dict[str, float] | None = None) -> Placement:
    """A GPU fraction (and one CPU) where the cluster has GPUs; `threads` CPUs otherwise."""
    resources = dict(ray.cluster_resources()) if resources is None else resources
    if resources.get("GPU", 0) > 0:
        if not 0 < gpu_fraction <= 1:
            raise ValueError(f"gpu_fraction {gpu_fraction} is not in (0, 1]")
        return Placement(num_cpus=1, num_gpus=gpu_fraction, device="cuda")
    return Placement(num_cpus=threads, num_gpus=0, device="cpu")


def capacity(place: Placement, resources: dict[str, float] | None = None) -> int:
    """How many pieces of work of this placement fit on the cluster at once (at least 1)."""
    resources = dict(ray.cluster_resources()) if resources is None else resources
    fits = [resources.get("CPU", 0) // place.num_cpus] if place.num_cpus else []
    if place.num_gpus:
        fits.append(resources.get("GPU", 0) // place.num_gpus)
    return max(1, int(min(fits))) if fits else 1


def where() -> dict[str, object]:
    """The node id and process id of the Ray worker running the caller."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
