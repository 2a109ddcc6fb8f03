"""The CPU kernel of the soft-DTW recursion (softdtw_kernel.cpp beside this file), built once with
torch.utils.cpp_extension.

Pairs go eight at a time in lockstep, one SIMD lane each: their frames are copied into lanes,
each cell's cost |x_i - y_j|^2 is summed from the differences four cells at a time, and the
soft-min's exp and log vectorise; groups of eight run in parallel on torch's intra-op threads
(OpenMP: the build needs -fopenmp, without it at::parallel_for runs serially), largest first.
Within a group, rows go in strips of four whose cells advance along anti-diagonals: the four
cells in flight are independent, so their exp/log chains overlap instead of each cell waiting
for its left neighbour. Self terms (sdtw(x, x)) compute the lower triangle of their symmetric
grids only. The forward pass keeps R (float64, only when a gradient will be asked for); the
backward pass recomputes the cost and each step's soft-min probability from R, three exps a
cell, and returns E = d value / d cost; the gradients w.r.t. x and y are then matrix products
in torch. precise = False (float32 inputs) takes the cost, exp and log in float.
The build is cached in torch's extension folder ($TORCH_EXTENSIONS_DIR, default
~/.cache/torch_extensions/py3XX_cpu) under a name that hashes the source, the flags, the machine,
the torch version and the environment (each virtualenv builds its own, against its own torch); where
it cannot be built, `load()` returns None and model.learn.softdtw runs its pure-torch recursion
instead. torch marks a build in progress with a `lock` file, which a build killed part-way leaves
behind, and every later build would wait on it for ever; posecoach's processes therefore build
and load one at a time under a lock that dies with its holder (`build_lock`), and a torch lock
file found while holding it is stale and removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

LANES = 8
STRIP = 4

SOURCE = Path(__file__).with_name("softdtw_kernel.cpp")

FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
         f"-DPOSECOACH_LANES={LANES}", f"-DPOSECOACH_STRIP={STRIP}"]


@cache
def load() -> ModuleType | None:
    """Build (first call on a machine, about a minute) or load the kernel; None if that fails."""
    import torch
    from torch.utils.cpp_extension import load_inline

    source = SOURCE.read_text()
    built_for = " ".join([*FLAGS, platform.machine(), torch.__version__, sys.prefix])
    digest = hashlib.sha256((source + built_for).encode()).hexdigest()
    name = f"posecoach_softdtw_{digest[:12]}"
    folder = build_directory(name)
    try:
        with build_lock(folder):
            return load_inline(
                name=name,
                cpp_sources=[source],
                functions=["sdtw_forward", "sdtw_backward"],
                extra_cflags=FLAGS,
                extra_ldflags=["-fopenmp"],
                build_directory=str(folder),
                verbose=False,
            )
    except (RuntimeError, OSError, ImportError) as exc:
        warnings.warn(f"soft-DTW: C++ kernel unavailable ({exc}); using pure torch", stacklevel=2)
        return None


def build_directory(name: str) -> Path:
    """torch's folder for a CPU extension `name`: $TORCH_EXTENSIONS_DIR/name, else
    ~/.cache/torch_extensions/py3XX_cpu/name."""
    from torch.utils.cpp_extension import get_default_build_root

    if root := os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(root) / name
    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(get_default_build_root()) / f"{version}_cpu" / name


@contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Build or load in `folder` alone among posecoach's processes: an exclusive flock on
    `folder`/posecoach.lock, which the kernel releases when its holder dies. A torch `lock` file
    found once it is held was left by a build that was killed, and is removed."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "posecoach.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
