"""Object storage: the Delta tables, saved models handed to Ray workers and report files on an
S3-compatible server (moto's server mode on a free localhost port), as on a local path; and two
writers committing to the same table on S3 lose nothing (S3 conditional put)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import boto3
import numpy as np
import pytest
import ray
import torch
from deltalake import DeltaTable, write_deltalake

from model.data import storage
from model.data.dataset import Dataset, to_table
from model.data.normalize import normalize
from model.data.sequence import SequenceError
from model.data.synth import make_dataset
from model.learn.saved import TrainedModel
from model.learn.train import train
from model.settings import PROFILES, environment, run_config

torch.set_num_threads(1)

BUCKETS = ("lake", "models", "reports")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server at {url} exited with {proc.returncode}"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing answers at {url} after {seconds:.0f} s")


@pytest.fixture(scope="module")
def s3_env() -> Iterator[dict[str, str]]:
    """A real S3-compatible server (moto's server mode) in its own process on a free localhost
    port (its own process: deltalake calls that hold the GIL would stall a server thread);
    the AWS_* variables point at it meanwhile."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_ALLOW_HTTP": "true"}
    try:
        wait_for(env["AWS_ENDPOINT_URL"] + "/moto-api/", proc)
        with environment(env):
            client = boto3.client("s3")
            for bucket in BUCKETS:
                client.create_bucket(Bucket=bucket)
            yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def sequences():
    return make_dataset(n_subjects=3, reps=1, seed=5, exercises=("squat", "lunge"))


def ids(seqs) -> list[str]:
    return sorted(s.sequence_id for s in seqs)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_dataset_round_trip_versions_and_merge(s3_env, sequences, tmp_path, where) -> None:
    root = "s3://lake/datasets" if where == "s3" else str(tmp_path / "lake")
    ds = Dataset("ec3d", root=root)
    first = ds.write(sequences[:5])
    again = ds.write(sequences)
    assert (first.inserted, first.version) == (5, first.version)
    assert (again.inserted, again.duplicates) == (len(sequences) - 5, 5)
    assert ids(ds.read()) == ids(sequences)
    assert ids(ds.read(version=first.version)) == ids(sequences[:5])
    back = {s.sequence_id: s for s in ds.read()}
    for seq in sequences:
        np.testing.assert_array_equal(back[seq.sequence_id].poses, seq.poses)
    if where == "s3":
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(
            Bucket="lake", Prefix="datasets/ec3d/_delta_log/")["Contents"]]
        assert len([k for k in keys if k.endswith(".json")]) == again.version + 1


def test_a_stale_writer_on_s3_commits_after_the_other_instead_of_over_it(s3_env, sequences):
    """Both writers read version v and commit; S3's conditional put refuses the second commit
    file at v + 1, so deltalake retries it as v + 2 and both writes are kept."""
    ds = Dataset("stale", root="s3://lake/datasets")
    ds.write(sequences[:2])
    start = ds.version()
    first, second = ds.table(), ds.table()
    write_deltalake(first, to_table(sequences[2:4]), mode="append")
    write_deltalake(second, to_table(sequences[4:6]), mode="append")
    assert DeltaTable(ds.uri).version() == start + 2
    assert ids(ds.read()) == ids(sequences[:6])


def _write_subject(root: str, subject: str, env: dict[str, str]) -> int:
    os.environ.update(env)
    seqs = [s for s in make_dataset(n_subjects=3, reps=1, seed=5, exercises=("squat", "lunge"))
            if s.subject == subject]
    Dataset("shared", root=root).write(seqs)
    return len(seqs)


def test_concurrent_writers_from_two_processes_on_s3_lose_nothing(s3_env, sequences) -> None:
    root = "s3://lake/datasets"
    Dataset("shared", root=root).write([s for s in sequences if s.subject == "s1"])
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        written = pool.starmap(_write_subject, [(root, "s2", s3_env), (root, "s3", s3_env)])
    ds = Dataset("shared", root=root)
    assert sum(written) + sum(s.subject == "s1" for s in sequences) == len(sequences)
    assert ids(ds.read()) == ids(sequences)
    assert [h["version"] for h in ds.history()] == list(range(ds.version(), -1, -1))


def test_storage_helpers_on_s3_and_local(s3_env, tmp_path) -> None:
    for base in ("s3://reports/run1", str(tmp_path / "run1")):
        storage.write_text(storage.join(base, "a", "s1.json"), '{"ok": 1}')
        storage.write_bytes(storage.join(base, "b.html"), b"<html></html>")
        storage.write_text(storage.join(base, "_hidden.json"), "{}")
        assert storage.list_files(base) == [storage.join(base, "a", "s1.json"),
                                            storage.join(base, "b.html")]
        assert storage.list_files(base, suffixes=(".html",)) == [storage.join(base, "b.html")]
        assert storage.read_text(storage.join(base, "a", "s1.json")) == '{"ok": 1}'
        assert storage.exists(storage.join(base, "b.html"))
        assert not storage.exists(storage.join(base, "missing.json"))
    assert storage.is_remote("s3://reports/run1") and not storage.is_remote(str(tmp_path))
    body = boto3.client("s3").get_object(Bucket="reports", Key="run1/a/s1.json")["Body"].read()
    assert body == b'{"ok": 1}'


@ray.remote(num_cpus=1)
def _infer_in_worker(model_uri: str, poses: list[np.ndarray]) -> np.ndarray:
    from workers.scoring import local_model_dir

    return TrainedModel.load(local_model_dir(model_uri)).infer(poses).log_probs


def test_a_saved_model_on_s3_reaches_a_ray_worker_and_scores_the_same(
        s3_env, sequences, tmp_path, ray_local) -> None:
    config = run_config(PROFILES["test"], seed=0, threads=1, epochs=1)
    trained = train(sequences, config, progress=False)
    folder = trained.save(tmp_path / "model")
    uri = storage.upload_dir(folder, "s3://models/ec3d/v1")
    assert sorted(p.rsplit("/", 1)[1] for p in storage.list_files(uri)) == sorted(
        p.name for p in folder.iterdir() if not p.name.startswith((".", "_")))
    poses = [normalize(s, trained.normalization)[0] for s in sequences[:4]]
    expected = trained.infer(poses).log_probs
    remote = _infer_in_worker.options(runtime_env={"env_vars": s3_env}).remote(uri, poses)
    np.testing.assert_allclose(ray.get(remote), expected, rtol=1e-5, atol=1e-6)
    local = storage.download_dir(uri, tmp_path / "copy")
    np.testing.assert_allclose(TrainedModel.load(local).infer(poses).log_probs, expected,
                               rtol=1e-5, atol=1e-6)


def test_reading_a_missing_table_on_s3_names_it(s3_env) -> None:
    with pytest.raises(SequenceError, match="no dataset 'nothing'"):
        Dataset("nothing", root="s3://lake/datasets").read()
