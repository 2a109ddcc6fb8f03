"""The benchmark runner: `python -m bench [names...] [--threads N] [--seed N] [--json]`
(`make bench`)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import pkgutil
import platform
from collections.abc import Callable
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

import bench


def available() -> list[str]:
    """Names of the benchmark modules bench/bench_<name>.py."""
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name.startswith("bench_")
    )


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"


def call(run: Callable[..., list], threads: int, seed: int) -> list:
    """A benchmark's run(), given the seed only when it takes one."""
    seeded = {"seed": seed} if "seed" in inspect.signature(run).parameters else {}
    return run(threads=threads, **seeded)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {available()})")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads to pin")
    parser.add_argument("--seed", type=int, default=0,
                        help="the training seed of the benchmarks that train networks (uiprmd)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {available()}")
    console = Console(stderr=args.json)
    rows = []
    for name in args.names or available():
        console.print(f"[bold]{name}[/bold]: running with {args.threads} thread(s)...")
        rows += call(importlib.import_module(f"bench.bench_{name}").run, args.threads, args.seed)
    if args.json:
        doc = {"machine": machine(), "threads": args.threads, "rows": [asdict(r) for r in rows]}
        print(json.dumps(doc, indent=2))
        return
    table = Table(title=f"benchmarks on {machine()}, {args.threads} thread(s)")
    for column in ("benchmark", "variant", "seconds", "subject is x faster", "note"):
        table.add_column(column)
    for r in rows:
        table.add_row(r.benchmark, r.variant, f"{r.seconds:.4f}", f"{r.speedup:.2f}", r.note)
    console.print(table)


if __name__ == "__main__":
    main()
