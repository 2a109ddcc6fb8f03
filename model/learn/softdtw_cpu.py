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
~/.cache/torch_extensions) under a name that hashes the source, flags and machine; where it
cannot be built, `load()` returns None and model.learn.softdtw runs its pure-torch recursion
instead.
"""

from __future__ import annotations

import hashlib
import platform
import warnings
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
    from torch.utils.cpp_extension import load_inline

    source = SOURCE.read_text()
    digest = hashlib.sha256((source + " ".join(FLAGS) + platform.machine()).encode()).hexdigest()
    try:
        return load_inline(
            name=f"posecoach_softdtw_{digest[:12]}",
            cpp_sources=[source],
            functions=["sdtw_forward", "sdtw_backward"],
            extra_cflags=FLAGS,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        warnings.warn(f"soft-DTW: C++ kernel unavailable ({exc}); using pure torch", stacklevel=2)
        return None
