"""Every manifest in deploy/ parses, and everything it names exists: the entrypoints and flow
names of deploy/prefect.yaml, the posecoach verbs and options the images run, the work pool, the
RayCluster the RayJobs select, the ConfigMaps referenced; and no secret value is written down:
the MLflow and Prefect servers ask for credentials that come from documented Secrets, the clients
read the same from their environment, and only posecoach's pods reach the servers."""

from __future__ import annotations

import re
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
CREDENTIAL_WORDS = (*SECRET_WORDS, "USERNAME", "AUTH_STRING", "ADMIN")


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


SERVERS = {"mlflow": 5000, "prefect-server": 4200, "postgres": 5432}
PART_OF = {"app.kubernetes.io/part-of": "posecoach"}
USERINFO = re.compile(r"://[^/\s:@$]+:[^/\s@$(]+@")


def pod_templates() -> list[dict[str, Any]]:
    """Every pod template of the k8s documents (Deployments, StatefulSets, Ray groups, RayJob
    submitters): mappings holding a `spec` with `containers`."""
    return [m for doc in k8s_docs() for m in walk(doc)
            if isinstance(m.get("spec"), dict) and "containers" in m["spec"]]


def labels_of(template: dict[str, Any]) -> dict[str, str]:
    return (template.get("metadata") or {}).get("labels") or {}


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, f"only matchLabels selectors: {selector}"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def container_env(name: str) -> dict[str, dict[str, Any]]:
    """The env entries of the container `name`, by variable."""
    [found] = [c for doc in k8s_docs() for c in containers(doc) if c["name"] == name]
    return {e["name"]: e for e in found.get("env", [])}


def documented_secret_keys() -> dict[str, set[str]]:
    """The keys of each Secret deploy/README.md creates (`kubectl create secret generic NAME
    --from-literal=KEY=... --from-file=KEY`)."""
    text = (DEPLOY / "README.md").read_text().replace("\\\n", " ")
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        found = re.search(r"kubectl create secret generic (\S+)(.*)", line)
        if found:
            keys = re.findall(r"--from-(?:literal|file)=([A-Za-z0-9_.]+)", found[2])
            out[found[1]] = set(keys)
    return out


def test_every_pod_is_labelled_posecoach() -> None:
    templates = pod_templates()
    assert len(templates) >= 9
    for template in templates:
        assert selects({"matchLabels": PART_OF}, labels_of(template)), template


def test_only_posecoach_pods_reach_the_servers() -> None:
    policies = [d for d in k8s_docs() if d["kind"] == "NetworkPolicy"]
    pods = [labels_of(t) for t in pod_templates()]
    for server, port in SERVERS.items():
        guarding = [p for p in policies
                    if selects(p["spec"]["podSelector"], {"app": server, **PART_OF})]
        assert guarding, f"no NetworkPolicy selects {server}"
        for policy in guarding:
            assert "Ingress" in policy["spec"]["policyTypes"]
            for rule in policy["spec"]["ingress"]:
                assert rule["from"], f"{policy['metadata']['name']}: a rule open to all"
                for peer in rule["from"]:
                    assert set(peer) == {"podSelector"}, f"{peer}: not a pod of this namespace"
                    assert selects({"matchLabels": PART_OF}, peer["podSelector"]["matchLabels"])
                assert [p["port"] for p in rule["ports"]] == [port]
        allowed = [labels for labels in pods if any(
            selects(peer["podSelector"], labels)
            for p in guarding for rule in p["spec"]["ingress"] for peer in rule["from"])]
        assert allowed and all(selects({"matchLabels": PART_OF}, a) for a in allowed)
    into_db = [labels["app"] for labels in pods if "app" in labels and any(
        selects(peer["podSelector"], labels) for p in policies
        if selects(p["spec"]["podSelector"], {"app": "postgres", **PART_OF})
        for rule in p["spec"]["ingress"] for peer in rule["from"])]
    assert sorted(into_db) == ["mlflow", "prefect-server"]


def test_servers_take_their_credentials_from_documented_secrets() -> None:
    from mlflow.environment_variables import (
        MLFLOW_AUTH_ADMIN_PASSWORD,
        MLFLOW_AUTH_ADMIN_USERNAME,
        MLFLOW_AUTH_CONFIG_PATH,
        MLFLOW_FLASK_SERVER_SECRET_KEY,
    )
    from prefect.settings import PREFECT_SERVER_API_AUTH_STRING

    secrets = documented_secret_keys()
    mlflow_args = next(a for a in commands() if a[:2] == ["mlflow", "server"])
    assert "--app-name=basic-auth" in mlflow_args
    mlflow_env = container_env("mlflow")
    for variable in (MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD,
                     MLFLOW_FLASK_SERVER_SECRET_KEY):
        ref = mlflow_env[variable.name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]], ref
    config = Path(mlflow_env[MLFLOW_AUTH_CONFIG_PATH.name]["value"])
    [deployment] = [d for d in k8s_docs() if d["metadata"]["name"] == "mlflow"
                    and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [mount] = [m for m in pod["containers"][0]["volumeMounts"]
               if Path(m["mountPath"]) == config.parent]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert {i["path"]: i["key"] for i in volume["secret"]["items"]}[config.name] in \
        secrets[volume["secret"]["secretName"]]
    ref = container_env("prefect-server")[PREFECT_SERVER_API_AUTH_STRING.name]
    assert ref["valueFrom"]["secretKeyRef"]["key"] in secrets[
        ref["valueFrom"]["secretKeyRef"]["name"]]


def test_clients_read_the_credentials_the_servers_ask_for() -> None:
    from mlflow.environment_variables import MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_USERNAME
    from prefect.settings import PREFECT_API_AUTH_STRING

    client_keys = {MLFLOW_TRACKING_USERNAME.name, MLFLOW_TRACKING_PASSWORD.name,
                   PREFECT_API_AUTH_STRING.name}
    assert documented_secret_keys()["posecoach-auth"] == client_keys
    holders = {c["name"] for doc in k8s_docs() for c in containers(doc)
               if {"name": "posecoach-auth"} in [e.get("secretRef") for e in c.get("envFrom", [])]}
    assert {"worker", "ray-head"} <= holders
    assert "ray-worker" not in holders


def test_no_credential_is_written_in_a_manifest() -> None:
    for name, docs in manifests().items():
        for doc in docs:
            for m in walk(doc):
                for key, value in m.items():
                    if not isinstance(value, str):
                        continue
                    assert not USERINFO.search(value), f"{name}: {key} holds a password"
                    if key == "value" and isinstance(m.get("name"), str):
                        upper = m["name"].upper()
                        assert not any(w in upper for w in CREDENTIAL_WORDS), f"{name}: {upper}"
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".md", "") and path.name != "Dockerfile":
            assert not USERINFO.search(path.read_text().replace("$PGPASSWORD@", "")), path
