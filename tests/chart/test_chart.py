"""The Helm chart, offline: helm lint --strict, kubernetes-validate --strict for 1.30, custom
resources against their operators' published CRD schemas, checkov, the services' own config
validation on what each Deployment is given, probes on the real health names, promtool."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from mmsearch.embedder.service import SERVICE_NAME as EMBEDDER
from mmsearch.indexer.service import SERVICE as INDEXER
from mmsearch.kit.auth import TokenAuthenticator
from mmsearch.kit.config import ConfigError, load_settings
from mmsearch.kit.health import LIVENESS_SERVICE
from mmsearch.kit.signing import ProducerKeys
from mmsearch.reranker.service import SERVICE_NAME as RERANKER
from mmsearch.searcher.service import SERVICE as SEARCHER
from tests.chart.conftest import (
    CHART,
    NAMESPACE,
    ROOT,
    RULES,
    VALUE_SETS,
    of_kind,
    render,
    rendered,
    run,
    tool,
)

HERE = Path(__file__).resolve().parent
CRDS = HERE / "crds"
# File -> sha256, from the table in crds/SOURCES.md (one place to update).
CRD_SHA256 = dict(
    re.findall(r"^\| ([\w.]+\.yaml) \|.*\| ([0-9a-f]{64}) \|$", (CRDS / "SOURCES.md").read_text(), re.M)
)
HEALTH = {
    "embedder": EMBEDDER,
    "indexer": INDEXER.full_name,
    "searcher": SEARCHER.full_name,
    "reranker": RERANKER,
}
# checkov findings accepted, each with why. Everything else fails the test.
CHECKOV_JUSTIFIED = {
    "CKV_K8S_11": "no CPU limits on purpose: CFS throttling adds tail latency to gRPC services; "
    "CPU requests are set and memory limits are set",
    "CKV_K8S_15": "IfNotPresent is safe with immutable tags and digests (values-production pins digests)",
    "CKV_K8S_35": "the services read MMSEARCH_SERVICE_TOKEN, _SEARCH_PAGE_TOKEN_KEY and "
    "_WEAVIATE_API_KEY from the environment (pydantic settings); token and producer files are files",
}
# Only the defaults lack digests (there is no image to point at); production must pin them.
CHECKOV_DEFAULTS_ONLY = {"CKV_K8S_43": "the default values cannot name a digest; values-production pins them"}


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_helm_lint_strict(values: str) -> None:
    result = run(tool("helm"), "lint", "--strict", CHART, *VALUE_SETS[values])
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_refuses_bad_values() -> None:
    for bad in (
        "embedder.env.LOG_LEVEL=x",
        "weaviate.url=weaviate:8080",
        "indexer.replicas=-1",
        "nosuchblock=1",
    ):
        result = run(tool("helm"), "template", "mm", CHART, f"--set={bad}")
        assert result.returncode != 0, f"{bad} was accepted"
        assert "schema" in result.stderr, result.stderr


def _is_custom(doc: dict[str, Any]) -> bool:
    """A kind from an operator's CRD (its API group has a dot and is not Kubernetes' own)."""
    group = str(doc["apiVersion"]).split("/")[0]
    return "." in group and not group.endswith("k8s.io")


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_kubernetes_validate_strict_1_30(values: str, tmp_path: Path) -> None:
    native = [d for d in rendered(values) if not _is_custom(d)]
    assert {d["kind"] for d in native} >= {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ConfigMap",
    }
    manifest = tmp_path / "native.yaml"
    manifest.write_text(yaml.safe_dump_all(native))
    result = run(tool("kubernetes-validate"), "--strict", "-k", "1.30.0", "--quiet", manifest)
    assert result.returncode == 0, result.stdout + result.stderr


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    assert len(CRD_SHA256) == 4, "crds/SOURCES.md lists the four vendored CRDs"
    for name, digest in CRD_SHA256.items():
        data = (CRDS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} differs from the vendored upstream file"
        crd = yaml.safe_load(data)
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                api = f"{crd['spec']['group']}/{version['name']}"
                schemas[(api, crd["spec"]["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return schemas


def _strict(schema: Any) -> Any:
    """CRD schemas allow unknown fields unless told; the API server prunes them silently, which
    would hide a typo in the chart. Close every object that lists its properties."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.mark.parametrize("values", ["production", "everything"])
def test_custom_resources_match_published_crd_schemas(values: str) -> None:
    schemas = _crd_schemas()
    custom = [d for d in rendered(values) if _is_custom(d)]
    kinds = {d["kind"] for d in custom}
    assert kinds == {"ServiceMonitor", "PrometheusRule", "ScaledObject", "KafkaTopic"}, kinds
    for doc in custom:
        key = (doc["apiVersion"], doc["kind"])
        assert key in schemas, f"{key} is not served by the vendored CRDs"
        body = {k: v for k, v in doc.items() if k != "metadata"}
        errors = list(jsonschema.Draft7Validator(_strict(schemas[key])).iter_errors(body))
        assert not errors, f"{doc['kind']} {doc['metadata']['name']}: {[e.message for e in errors[:5]]}"


def _checkov_failures(values: str, tmp_path: Path) -> list[tuple[str, str, str]]:
    manifest = tmp_path / f"{values}.yaml"
    manifest.write_text(yaml.safe_dump_all(rendered(values)))
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    result = subprocess.run(
        [
            str(tool("checkov")),
            "-f",
            str(manifest),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert sum(r["summary"]["passed"] for r in reports) > 100, "checkov ran no checks"
    return [
        (f["check_id"], f["resource"], f["check_name"])
        for r in reports
        for f in r["results"]["failed_checks"]
    ]


@pytest.mark.parametrize("values", ["default", "production"])
def test_checkov_no_unjustified_findings(values: str, tmp_path: Path) -> None:
    allowed = {**CHECKOV_JUSTIFIED, **(CHECKOV_DEFAULTS_ONLY if values == "default" else {})}
    failures = [f for f in _checkov_failures(values, tmp_path) if f[0] not in allowed]
    assert not failures, "\n".join(map(str, failures))


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_each_deployment_passes_the_services_config_validation(values: str, tmp_path: Path) -> None:
    """What each pod is given is exactly what `mmsearch serve` accepts: known MMSEARCH_* names,
    valid values, no development credentials on a pod address."""
    docs = rendered(values)
    maps = {d["metadata"]["name"]: d["data"] for d in of_kind(docs, "ConfigMap")}
    targets = set()
    for deployment in of_kind(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container["name"] == "triton":
            continue
        targets.add(container["args"][-1])
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(maps[source["configMapRef"]["name"]])
        for var in container.get("env", []):
            env[var["name"]] = var.get("value", "a-secret-from-the-auth-secret")
        try:
            settings = load_settings(env)
        except ConfigError as exc:
            pytest.fail(f"{deployment['metadata']['name']}: {exc}")
        assert not settings.uses_dev_tokens and not settings.allow_dev_tokens
        if container["args"][-1] == "indexer":
            assert not settings.uses_dev_producers and settings.kafka_bootstrap
            assert settings.indexer_embedder_addr == "dns:///mm-mmsearch-embedder-pods:50051"
            assert settings.indexer_reranker_addr == "dns:///mm-mmsearch-reranker-pods:50051"
        else:
            assert not settings.kafka_bootstrap, "only the indexer talks to Kafka"
        if container["args"][-1] in ("indexer", "searcher"):
            assert settings.weaviate_url, "distributed mode needs the shared store"
    assert targets == set(HEALTH)


def test_generated_auth_files_load_and_hold_the_service_token(tmp_path: Path) -> None:
    docs = render(
        [
            "--set=auth.serviceToken=service-token-for-the-test",
            "--set=auth.tokens[0].name=frontend",
            f"--set=auth.tokens[0].sha256={hashlib.sha256(b'frontend-token').hexdigest()}",
            "--set=auth.tokens[0].tenant=acme",
            "--set=auth.tokens[0].roles[0]=search",
            "--set=auth.producers[0].id=billing",
            "--set=auth.producers[0].secret=a-long-enough-producer-secret",
            "--set=auth.producers[0].tenants[0]=acme",
        ]
    )
    (secret,) = of_kind(docs, "Secret")
    (tmp_path / "tokens.json").write_text(secret["stringData"]["tokens.json"])
    (tmp_path / "producers.json").write_text(secret["stringData"]["producers.json"])
    auth = TokenAuthenticator.from_file(tmp_path / "tokens.json")
    service = auth.authenticate((("authorization", "Bearer service-token-for-the-test"),))
    assert service.roles == frozenset({"embed", "rerank"})
    assert auth.authenticate((("authorization", "Bearer frontend-token"),)).tenant == "acme"
    keys = ProducerKeys.from_file(tmp_path / "producers.json")
    assert keys.tenants["billing"] == frozenset({"acme"})
    # Producers' secrets reach the indexer's pods only.
    for deployment in of_kind(docs, "Deployment"):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        items = [i["key"] for i in volumes.get("auth", {}).get("secret", {}).get("items", [])]
        assert ("producers.json" in items) == deployment["metadata"]["name"].endswith("-indexer")


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_probes_use_the_real_health_names_and_pods_are_hardened(values: str) -> None:
    for deployment in of_kind(rendered(values), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] and security["runAsNonRoot"]
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False
        assert "memory" in container["resources"]["limits"] and container["resources"]["requests"]
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname",
            "topology.kubernetes.io/zone",
        }
        if container["name"] == "triton":
            assert "grpc" in container["readinessProbe"]
            continue
        assert container["readinessProbe"]["grpc"]["service"] == HEALTH[container["name"]]
        assert container["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE
        assert container["startupProbe"]["grpc"]["service"] == LIVENESS_SERVICE


def test_gpu_triton_requests_gpus_and_cpu_triton_does_not() -> None:
    (gpu,) = [
        d for d in of_kind(rendered("production"), "Deployment") if d["metadata"]["name"].endswith("-triton")
    ]
    container = gpu["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["spec"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    (cpu,) = [
        d for d in of_kind(rendered("default"), "Deployment") if d["metadata"]["name"].endswith("-triton")
    ]
    cpu_container = cpu["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in cpu_container["resources"]["limits"]
    assert "--allow-gpu-metrics=false" in cpu_container["args"]


def test_network_policies_allow_only_the_design_paths() -> None:
    docs = rendered("default")
    policies = {
        p["metadata"]["name"].removeprefix("mm-mmsearch-"): p["spec"] for p in of_kind(docs, "NetworkPolicy")
    }
    assert set(policies) == {*HEALTH, "triton"}

    def callers(target: str) -> set[str]:
        return {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for rule in policies[target]["ingress"]
            for peer in rule["from"]
            if "podSelector" in peer and "app.kubernetes.io/component" in peer["podSelector"]["matchLabels"]
        }

    def callees(source: str) -> set[str]:
        return {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            for rule in policies[source]["egress"]
            for peer in rule["to"]
            if "podSelector" in peer
            and "app.kubernetes.io/component" in peer["podSelector"].get("matchLabels", {})
        }

    assert callers("triton") == {"embedder", "reranker"}
    assert callers("embedder") == callers("reranker") == {"indexer", "searcher"}
    assert callers("indexer") == callers("searcher") == set()
    assert callees("indexer") == callees("searcher") == {"embedder", "reranker"}
    assert callees("embedder") == callees("reranker") == {"triton"}
    assert callees("triton") == set()
    for name, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress", "Egress"], name


def test_indexer_autoscaling_is_capped_at_the_partitions() -> None:
    docs = render(
        [
            "--set=indexer.autoscaling.enabled=true",
            "--set=indexer.autoscaling.maxReplicas=50",
            "--set=kafka.partitions=8",
        ]
    )
    (scaled,) = [d for d in of_kind(docs, "ScaledObject") if d["metadata"]["name"].endswith("-indexer")]
    assert scaled["spec"]["maxReplicaCount"] == 8
    assert {t["type"] for t in scaled["spec"]["triggers"]} == {"kafka"}
    indexer = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-indexer"))
    assert "replicas" not in indexer["spec"], "the autoscaler owns the replica count"


def test_prometheus_rule_ships_the_tested_rules_file() -> None:
    (rule,) = of_kind(rendered("everything"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES.read_text())


def test_dashboards_are_the_generated_ones_and_shipped() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_dashboards.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    maps = [
        d
        for d in of_kind(rendered("everything"), "ConfigMap")
        if d["metadata"]["name"].startswith("mm-mmsearch-dashboard-")
    ]
    assert len(maps) == 4 and all(m["metadata"]["labels"]["grafana_dashboard"] == "1" for m in maps)
    assert all(m["metadata"]["namespace"] == NAMESPACE for m in maps)


def test_promtool_check_and_test_rules() -> None:
    result = run(tool("promtool"), "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(tool("promtool"), "test", "rules", HERE / "rules_test.yaml", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_tests_cover_every_rule() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    tests = yaml.safe_load((HERE / "rules_test.yaml").read_text())["tests"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    alerts = {r["alert"] for g in groups for r in g["rules"] if "alert" in r}
    exprs = " ".join(t["expr"] for test in tests for t in test.get("promql_expr_test", []))
    assert {r for r in records if not re.search(re.escape(r) + r"\b", exprs)} == set()
    firing = {
        a["alertname"] for test in tests for a in test.get("alert_rule_test", []) if a.get("exp_alerts")
    }
    quiet = {
        a["alertname"] for test in tests for a in test.get("alert_rule_test", []) if not a.get("exp_alerts")
    }
    assert firing == alerts and quiet == alerts


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Every panel's PromQL, checked by promtool as a recording rule ($namespace filled in)."""
    rules = []
    for path in sorted((CHART / "files" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                rules.append(
                    {
                        "record": f"check:{path.stem.replace('-', '_')}:{panel['id']}",
                        "expr": target["expr"].replace("$namespace", ".*"),
                    }
                )
    assert len(rules) >= 20
    file = tmp_path / "panels.yaml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = run(tool("promtool"), "check", "rules", file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_runbook_section() -> None:
    """Each alert's runbook_url anchor is a heading of docs/runbook.md."""
    headings = {
        line.removeprefix("## ").strip().lower()
        for line in (ROOT / "docs" / "runbook.md").read_text().splitlines()
        if line.startswith("## ")
    }
    for rule in (r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r):
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == rule["alert"].lower() and anchor in headings, rule["alert"]
