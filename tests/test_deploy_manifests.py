"""Every manifest in deploy/ parses, and everything it names exists: the entrypoints and flow
names of deploy/prefect.yaml, the posecoach verbs and options the images run, the work pool, the
RayCluster the RayJobs select, the ConfigMaps referenced; and no secret value is written down."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from prefect.cli.deploy._models import PrefectYamlModel, RawScheduleConfig
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.schedules import Cron

from flows.cli import app
from flows.serve import RETRAIN_DEPLOYMENT, SCORE_DEPLOYMENT

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SECRET_WORDS = ("PASSWORD", "SECRET", "ACCESS_KEY", "TOKEN", "CONNECTION_URL", "STORE_URI")


def manifests() -> dict[str, list[dict[str, Any]]]:
    """Every YAML document under deploy/, by file."""
    out = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        out[str(path.relative_to(DEPLOY))] = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return out


def k8s_docs() -> list[dict[str, Any]]:
    return [d for name, docs in manifests().items() if name != "prefect.yaml" for d in docs]


def walk(node: Any) -> list[dict[str, Any]]:
    """Every mapping inside a document."""
    if isinstance(node, dict):
        return [node, *(m for v in node.values() for m in walk(v))]
    if isinstance(node, list):
        return [m for v in node for m in walk(v)]
    return []


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for m in walk(doc):
        found.extend(c for c in m.get("containers", []) if isinstance(c, dict))
    return found


def commands() -> list[list[str]]:
    """Every command line the manifests run: container command + args, RayJob entrypoints."""
    lines = []
    for doc in k8s_docs():
        for c in containers(doc):
            if "command" in c:
                lines.append([*c["command"], *c.get("args", [])])
        if doc["kind"] == "RayJob":
            lines.append(shlex.split(doc["spec"]["entrypoint"]))
    return lines


def check_command(root: Any, argv: list[str]) -> None:
    """The verb path, every --option and the number of arguments of a command line exist in
    the click/typer command `root` (posecoach's CLI, `mlflow`)."""
    command, words = root, argv[1:]
    while hasattr(command, "commands"):
        assert words and words[0] in command.commands, f"{argv}: no verb {words[:1]}"
        command, words = command.commands[words[0]], words[1:]
    options = {opt: p for p in command.params for opt in p.opts}
    given, i = [], 0
    while i < len(words):
        name = words[i].split("=")[0]
        if not name.startswith("--"):
            given.append(words[i])
            i += 1
            continue
        assert name in options, f"{argv}: no option {name} (known: {sorted(options)})"
        i += 1 if getattr(options[name], "is_flag", False) or "=" in words[i] else 2
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    least = sum(1 for a in arguments if a.required)
    most = float("inf") if any(a.nargs == -1 for a in arguments) else len(arguments)
    assert least <= len(given) <= most, f"{argv}: arguments {given} for {arguments}"


def check_posecoach_command(argv: list[str]) -> None:
    check_command(typer.main.get_command(app), argv)


def prefect_yaml() -> PrefectYamlModel:
    return PrefectYamlModel.model_validate(manifests()["prefect.yaml"][0])


def test_every_manifest_parses_and_k8s_documents_have_kind_and_name() -> None:
    found = manifests()
    assert "prefect.yaml" in found and len(found) >= 8
    kinds = {d["kind"] for d in k8s_docs()}
    assert {"RayCluster", "RayJob", "Deployment", "StatefulSet", "Service"} <= kinds
    for doc in k8s_docs():
        assert doc["apiVersion"] and doc["metadata"]["name"], doc


@pytest.mark.parametrize("deployment", prefect_yaml().deployments, ids=lambda d: d.name)
def test_prefect_yaml_entrypoints_load_the_named_flows(deployment: Any) -> None:
    flow = load_flow_from_entrypoint(deployment.entrypoint)
    assert isinstance(flow, Flow)
    assert flow.name == deployment.flow_name
    accepted = set(flow.parameters.properties)
    assert set(deployment.parameters) <= accepted, (deployment.parameters, accepted)
    assert deployment.work_pool and deployment.work_pool.name == "posecoach"
    assert deployment.concurrency_limit.limit >= 1
    for schedule in deployment.schedules:
        assert isinstance(schedule, RawScheduleConfig) and schedule.cron
        Cron(schedule.cron, timezone=schedule.timezone)


def test_prefect_yaml_matches_what_serve_serves() -> None:
    by_name = {d.name: d for d in prefect_yaml().deployments}
    assert set(by_name) == {RETRAIN_DEPLOYMENT, SCORE_DEPLOYMENT}
    nightly = by_name[RETRAIN_DEPLOYMENT]
    assert nightly.flow_name == "retrain" and nightly.concurrency_limit.limit == 1
    assert nightly.concurrency_limit.collision_strategy == "CANCEL_NEW"
    assert by_name[SCORE_DEPLOYMENT].flow_name == "score"
    assert "path" in by_name[SCORE_DEPLOYMENT].parameters


def test_posecoach_commands_name_existing_verbs_and_options() -> None:
    lines = [argv for argv in commands() if argv[0] == "posecoach"]
    assert {argv[1] for argv in lines} >= {"retrain", "score"}
    for argv in lines:
        check_posecoach_command(argv)


def test_a_wrong_verb_or_option_is_caught() -> None:
    with pytest.raises(AssertionError, match="no verb"):
        check_posecoach_command(["posecoach", "retrian"])
    with pytest.raises(AssertionError, match="no option"):
        check_posecoach_command(["posecoach", "retrain", "--epochs", "3"])


def test_mlflow_and_prefect_commands_exist_and_the_worker_serves_the_pool() -> None:
    from mlflow.cli import cli as mlflow_cli

    bin_dir = Path(sys.executable).parent
    pools = {d.work_pool.name for d in prefect_yaml().deployments}
    for argv in commands():
        assert argv[0] in {"posecoach", "mlflow", "prefect"}, argv
        assert (bin_dir / argv[0]).exists(), argv
        if argv[0] == "mlflow":
            check_command(mlflow_cli, argv)
        if argv[:3] == ["prefect", "worker", "start"]:
            assert argv[argv.index("--pool") + 1] in pools


def test_rayjobs_select_the_raycluster_and_it_autoscales_gpu_workers() -> None:
    docs = k8s_docs()
    clusters = {d["metadata"]["name"]: d for d in docs if d["kind"] == "RayCluster"}
    for job in (d for d in docs if d["kind"] == "RayJob"):
        assert job["spec"]["clusterSelector"]["ray.io/cluster"] in clusters
    spec = next(iter(clusters.values()))["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head
    gpu = [g for g in spec["workerGroupSpecs"] if "nvidia.com/gpu" in
           g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu and gpu[0]["maxReplicas"] > gpu[0]["minReplicas"]


def test_configmaps_exist_and_secrets_are_only_referenced() -> None:
    docs = k8s_docs()
    configmaps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    readme = (DEPLOY / "README.md").read_text()
    assert not [d for d in docs if d["kind"] == "Secret"], "no Secret objects in files"
    for doc in docs:
        for m in walk(doc):
            if "configMapRef" in m:
                assert m["configMapRef"]["name"] in configmaps
            for ref in ("secretRef", "secretKeyRef"):
                if ref in m:
                    assert m[ref]["name"] in readme, f"{m[ref]['name']} not documented"
            name = m.get("name")
            if isinstance(name, str) and "value" in m:
                assert not any(w in name.upper() for w in SECRET_WORDS), f"{name} in a file"
        if doc["kind"] == "ConfigMap":
            assert not any(w in k.upper() for k in doc["data"] for w in SECRET_WORDS)


def test_dockerfile_copies_existing_packages() -> None:
    root = DEPLOY.parent
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for src in line.split()[1:-1]:
                if not src.startswith("--"):
                    assert (root / src).exists(), src
