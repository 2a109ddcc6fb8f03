"""Python's cycle collector paused while code builds many small, acyclic objects.

A parse of nested pose lists, or a batch of scored repetitions, allocates hundreds of thousands
of lists and dicts that survive until the step ends. Each full pass of the collector walks every
live object of the process (several hundred thousand once Prefect, MLflow and torch are loaded),
and enough surviving allocations trigger several such passes per step: a JSON upload's parse ran
four times slower with the collector on. Reference counting still frees these objects.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cycle collector off inside the block, and back on after it if it was on."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
