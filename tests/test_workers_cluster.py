"""workers.cluster: joining or starting Ray, placements; and a real two-node Ray cluster on this
machine, driven through RAY_ADDRESS from a separate Python process (cross-validation and batch
scoring), checking that work ran on both nodes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from workers.cluster import Placement, capacity, ensure_ray, placement, where

RAY_BIN = Path(sys.executable).with_name("ray")


def test_ensure_ray_keeps_the_running_instance(ray_local):
    before = ray.get_runtime_context().get_job_id()
    resources = ensure_ray(num_cpus=7)
    assert ray.get_runtime_context().get_job_id() == before
    assert resources["CPU"] == 2


def test_placement_asks_for_a_gpu_fraction_only_where_gpus_exist():
    cpu_only = placement(threads=2, resources={"CPU": 8})
    assert cpu_only == Placement(num_cpus=2, num_gpus=0, device="cpu")
    assert capacity(cpu_only, {"CPU": 8}) == 4
    gpu = placement(threads=2, gpu_fraction=0.25, resources={"CPU": 8, "GPU": 2})
    assert gpu == Placement(num_cpus=1, num_gpus=0.25, device="cuda")
    assert capacity(gpu, {"CPU": 8, "GPU": 2}) == 8
    with pytest.raises(ValueError, match="gpu_fraction"):
        placement(gpu_fraction=1.5, resources={"GPU": 1})


def test_capacity_is_at_least_one_when_work_does_not_fit():
    assert capacity(Placement(num_cpus=4, num_gpus=0, device="cpu"), {"CPU": 2}) == 1


def test_where_names_the_worker_node_and_process(ray_local):
    info = ray.get(ray.remote(where).remote())
    assert info["node_id"] == ray.get_runtime_context().get_node_id()
    assert info["pid"] != os.getpid()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_ports() -> list[str]:
    names = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
    return [f"{name}={port}" for name, port in zip(names, _free_ports(len(names)), strict=True)]


def _cluster_env(**extra: str) -> dict[str, str]:
    """Environment of the test cluster's processes: this run's, no inherited RAY_ADDRESS, and
    token authentication off (an isolated cluster on 127.0.0.1; a token some other Ray left in
    ~/.ray must not turn it on for one node and not the other)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **extra}
    if "RAY_ADDRESS" not in extra:
        env.pop("RAY_ADDRESS", None)
    return env


def _start_node(args: list[str], log: Path) -> subprocess.Popen:
    """One `ray start --block` in its own process group, so that stopping it stops only it."""
    env = _cluster_env()
    with log.open("w") as out:
        return subprocess.Popen(
            [str(RAY_BIN), "start", "--block", "--num-cpus=1", "--num-gpus=0",
             "--object-store-memory=100000000", "--disable-usage-stats", *_node_ports(), *args],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )


def _stop_node(proc: subprocess.Popen, temp_dir: Path) -> None:
    """Stop the node's process group, then any straggler whose command line names temp_dir."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(temp_dir).encode() in cmdline.read_bytes():
                os.kill(int(cmdline.parent.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def _wait_for_nodes(address: str, n: int, logs: list[Path], timeout: float = 180.0) -> None:
    probe = (f"import ray; ray.init(address={address!r}); "
             "print(len([x for x in ray.nodes() if x['Alive']]))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env=_cluster_env(), timeout=60)
        if run.returncode == 0 and run.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    tails = "\n".join(f"{log.name}: {log.read_text()[-1500:]}" for log in logs if log.exists())
    raise TimeoutError(f"the two-node cluster at {address} did not come up with {n} nodes\n"
                       f"{tails}")


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[str]:
    """A head node and a worker node, one CPU and a 100 MB object store each; yields the address."""
    temp_dir = Path(tempfile.mkdtemp(prefix="pcray-", dir="/tmp"))
    port, client_port = _free_ports(2)
    address = f"127.0.0.1:{port}"
    nodes = [_start_node(["--head", f"--port={port}", f"--temp-dir={temp_dir}",
                          f"--ray-client-server-port={client_port}", "--include-dashboard=false",
                          "--node-ip-address=127.0.0.1"], temp_dir / "head.log")]
    try:
        time.sleep(5)
        nodes.append(_start_node([f"--address={address}", f"--temp-dir={temp_dir / 'w'}",
                                  "--node-ip-address=127.0.0.1"],
                                 temp_dir / "worker.log"))
        _wait_for_nodes(address, 2, [temp_dir / "head.log", temp_dir / "worker.log"])
        yield address
    finally:
        for proc in reversed(nodes):
            _stop_node(proc, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


CLIENT = textwrap.dedent("""
    import json, sys
    import ray
    from model.settings import PROFILES, run_config
    from model.data.synth import make_dataset
    from workers.cluster import ensure_ray
    from workers.cv import cross_validate
    from workers.scoring import score_batch

    resources = ensure_ray()
    seqs = make_dataset(n_subjects=2, reps=1, seed=6, exercises=("squat",))
    config = run_config(PROFILES["test"], threads=1, epochs=1)
    cv = cross_validate(seqs, config, workdir=sys.argv[1], progress=False)
    records = score_batch(seqs, cv.folds[0].model_dir, batch_size=2, concurrency=2,
                          progress=False)
    print(json.dumps({"nodes": len(ray.nodes()), "resources": resources,
                      "folds": [[f.held_out, f.node_id] for f in cv.folds],
                      "records": [[r["status"], r["node_id"]] for r in records],
                      "n_inputs": len(seqs)}))
""")


def test_cross_validation_and_scoring_through_ray_address_use_both_nodes(two_nodes, tmp_path):
    env = _cluster_env(RAY_ADDRESS=two_nodes)
    run = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path / "cv")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["nodes"] == 2
    assert out["resources"]["CPU"] == 2
    assert [held_out for held_out, _ in out["folds"]] == ["s1", "s2"]
    assert len({node for _, node in out["folds"]}) == 2
    assert len(out["records"]) == out["n_inputs"]
    assert {status for status, _ in out["records"]} == {"scored"}
    assert len({node for _, node in out["records"]}) == 2
