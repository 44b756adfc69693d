"""The Helm chart, rendered by the real helm: structure, wiring, schema, config."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from streamer.config import load_config
from tests.chart.tooling import (
    CHART_DIR,
    CI_VALUES,
    FILES_DIR,
    NAMESPACE,
    RELEASE,
    Manifest,
    driftstream_command,
    helm_args,
    load_yaml,
    of_kind,
    only,
    render,
    run,
)

CASES = [pytest.param((), id="default-values")] + [
    pytest.param((path,), id=path.stem) for path in CI_VALUES
]
ALL_FEATURES = CHART_DIR / "ci" / "all-features-values.yaml"
SASL_TLS = CHART_DIR / "ci" / "sasl-tls-values.yaml"
TLS_SYSTEM_CA = CHART_DIR / "ci" / "tls-system-ca-values.yaml"
PLACEHOLDER_RUNBOOKS = "https://example.com/driftstream/runbooks"

# What the fake Secret holds: values that plain YAML parsing would change (a
# boolean word, a comment, flow syntax, a hexadecimal number).
FAKE_SECRET = {
    "user": "true",
    "username": "driftstream",
    "pass": "yes #1: {[x",
    "password": "0x1F",
    "key-password": "null",
}


def _pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = only(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def _container(manifests: list[Manifest]) -> dict[str, Any]:
    containers = _pod_spec(manifests)["containers"]
    assert [c["name"] for c in containers] == ["driftstream"]
    container: dict[str, Any] = containers[0]
    return container


def _config_map(manifests: list[Manifest]) -> Manifest:
    found = [
        cm for cm in of_kind(manifests, "ConfigMap") if "config.yaml" in cm["data"]
    ]
    assert len(found) == 1
    return found[0]


def _config(manifests: list[Manifest]) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(
        _config_map(manifests)["data"]["config.yaml"]
    )
    return config


def _named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert numbers, f"no container port named {port!r}"
    return int(numbers[0])


def _is_subset(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


@pytest.mark.parametrize("values", CASES)
def test_helm_lint_strict_passes(helm: str, values: tuple[Path, ...]) -> None:
    result = run([helm, "lint", "--strict", str(CHART_DIR), *helm_args(values, ())])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("values", CASES)
def test_selectors_match_the_pod_labels(helm: str, values: tuple[Path, ...]) -> None:
    manifests = render(helm, values)
    deployment = only(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]

    assert _is_subset(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert _is_subset(only(manifests, "Service")["spec"]["selector"], pod_labels)
    for budget in of_kind(manifests, "PodDisruptionBudget"):
        assert _is_subset(budget["spec"]["selector"]["matchLabels"], pod_labels)
        # Pods that are not ready (catching up, or idle) must not block drains.
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    for spread in _pod_spec(manifests).get("topologySpreadConstraints", []):
        assert _is_subset(spread["labelSelector"]["matchLabels"], pod_labels)


@pytest.mark.parametrize("values", CASES)
def test_ports_line_up(helm: str, values: tuple[Path, ...]) -> None:
    manifests = render(helm, values)
    container = _container(manifests)
    config_port = _config(manifests).get("metrics", {}).get("port", 9308)
    [service_port] = only(manifests, "Service")["spec"]["ports"]

    assert [p["containerPort"] for p in container["ports"]] == [config_port]
    assert _named_port(container, service_port["targetPort"]) == config_port
    for probe in ("livenessProbe", "readinessProbe"):
        probe_port = container[probe]["httpGet"]["port"]
        assert _named_port(container, probe_port) == config_port


@pytest.mark.parametrize("values", CASES)
def test_probes_and_restricted_security_context(
    helm: str, values: tuple[Path, ...]
) -> None:
    manifests = render(helm, values)
    pod, container = _pod_spec(manifests), _container(manifests)

    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"requests", "limits"} <= container["resources"].keys()

    # The read-only root needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("values", CASES)
def test_config_map_is_mounted_where_the_command_reads_it(
    helm: str, values: tuple[Path, ...]
) -> None:
    manifests = render(helm, values)
    container = _container(manifests)
    volumes = {v["name"]: v for v in _pod_spec(manifests)["volumes"]}
    [mount] = [
        m for m in container["volumeMounts"] if m["mountPath"] == "/etc/driftstream"
    ]

    assert (
        volumes[mount["name"]]["configMap"]["name"]
        == (_config_map(manifests)["metadata"]["name"])
    )
    assert container["args"][-3:] == ["run", "--config", "/etc/driftstream/config.yaml"]


@pytest.mark.parametrize("values", CASES)
def test_config_checksum_rolls_the_pods(helm: str, values: tuple[Path, ...]) -> None:
    manifests = render(helm, values)
    annotations = only(manifests, "Deployment")["spec"]["template"]["metadata"][
        "annotations"
    ]
    config_text = _config_map(manifests)["data"]["config.yaml"].rstrip("\n")

    expected = hashlib.sha256(config_text.encode()).hexdigest()
    assert annotations["checksum/config"] == expected


def _container_env(manifests: list[Manifest]) -> dict[str, str]:
    """The container's environment as the kubelet would set it, with FAKE_SECRET
    behind every secretKeyRef and $(VAR) references expanded."""
    env: dict[str, str] = {}
    for entry in _container(manifests).get("env", []):
        if "valueFrom" in entry:
            env[entry["name"]] = FAKE_SECRET[entry["valueFrom"]["secretKeyRef"]["key"]]
            continue
        env[entry["name"]] = re.sub(
            r"\$\(([A-Za-z_][A-Za-z0-9_.]*)\)",
            lambda match: env.get(match[1], match[0]),
            entry["value"],
        )
    return env


@pytest.mark.parametrize("values", CASES)
def test_rendered_config_passes_driftstream_check_config(
    helm: str, values: tuple[Path, ...], tmp_path: Path
) -> None:
    manifests = render(helm, values)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(_config_map(manifests)["data"]["config.yaml"])
    container_env = _container_env(manifests)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM__")}

    result = run(
        [driftstream_command(), "check-config", str(config_file)],
        env=env | container_env,
    )

    assert result.returncode == 0, result.stderr
    effective = load_config(config_file, environ=container_env)
    assert effective.metrics.port == _container(manifests)["ports"][0]["containerPort"]
    # Secrets arrive verbatim, not read as YAML: no bool, no cut comment, no
    # number. (check-config masks them, so the loader is asked directly.)
    for name in container_env:
        if not name.startswith("DRIFTSTREAM__KAFKA__EXTRA__"):
            continue
        source = re.fullmatch(r"'\$\((\w+)\)'", _raw_env_value(manifests, name))
        assert source is not None, f"{name} is not passed single-quoted"
        setting = name.removeprefix("DRIFTSTREAM__KAFKA__EXTRA__").lower()
        assert effective.kafka.extra[setting] == container_env[source[1]]


def _raw_env_value(manifests: list[Manifest], name: str) -> str:
    [entry] = [e for e in _container(manifests)["env"] if e["name"] == name]
    value: str = entry["value"]
    return value


def test_optional_features_are_off_by_default(helm: str) -> None:
    kinds = sorted(doc["kind"] for doc in render(helm))
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "ServiceAccount",
    ]
    assert _config(render(helm))["kafka"]["extra"] == {}


def test_service_monitor_scrapes_the_metrics_service(helm: str) -> None:
    manifests = render(helm, [ALL_FEATURES])
    monitor = only(manifests, "ServiceMonitor")
    service = only(manifests, "Service")
    [endpoint] = monitor["spec"]["endpoints"]

    assert _is_subset(
        monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]
    )
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    # job="driftstream" first, whatever the release is called: the rules want it.
    assert endpoint["relabelings"][0] == {
        "action": "replace",
        "targetLabel": "job",
        "replacement": "driftstream",
    }
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    # The lag alert needs the metrics of a pod that is lagging, so not ready.
    assert service["spec"]["publishNotReadyAddresses"] is True


def test_the_three_optional_resources_take_additional_labels(helm: str) -> None:
    manifests = render(helm, [ALL_FEATURES])
    for kind, suffix in [
        ("ServiceMonitor", ""),
        ("PrometheusRule", ""),
        ("ConfigMap", "-dashboard"),
    ]:
        labels = only(manifests, kind, suffix)["metadata"]["labels"]
        assert labels["release"] == "kube-prometheus-stack", kind


def test_prometheus_rule_holds_the_shipped_alerts(helm: str) -> None:
    shipped = load_yaml(FILES_DIR / "alerts.yaml")["groups"]
    manifests = render(helm, sets=["prometheusRule.enabled=true"])
    assert only(manifests, "PrometheusRule")["spec"] == {"groups": shipped}


def test_prometheus_rule_points_runbooks_at_the_configured_base(helm: str) -> None:
    base = load_yaml(ALL_FEATURES)["prometheusRule"]["runbookBaseUrl"]
    text = (FILES_DIR / "alerts.yaml").read_text().replace(PLACEHOLDER_RUNBOOKS, base)
    rule = only(render(helm, [ALL_FEATURES]), "PrometheusRule")

    assert rule["spec"] == {"groups": yaml.safe_load(text)["groups"]}
    urls = [
        r["annotations"]["runbook_url"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        if "alert" in r
    ]
    assert urls and all(url.startswith(base + "#") for url in urls)


def test_dashboard_config_map_holds_the_shipped_dashboard(helm: str) -> None:
    dashboard = only(render(helm, [ALL_FEATURES]), "ConfigMap", "-dashboard")
    shipped = json.loads((FILES_DIR / "dashboard.json").read_text())

    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "ML models"}
    [(key, text)] = dashboard["data"].items()
    assert key.endswith(".json")
    assert json.loads(text) == shipped


def test_kafka_credentials_come_from_the_named_secrets(helm: str) -> None:
    manifests = render(helm, [SASL_TLS])
    container, pod = _container(manifests), _pod_spec(manifests)
    extra = _config(manifests)["kafka"]["extra"]

    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "KAFKA_SASL_USERNAME": {"name": "kafka-client", "key": "user"},
        "KAFKA_SASL_PASSWORD": {"name": "kafka-client", "key": "pass"},
        "KAFKA_SSL_KEY_PASSWORD": {"name": "kafka-client", "key": "key-password"},
    }
    assert extra["security.protocol"] == "SASL_SSL"
    assert extra["sasl.mechanism"] == "SCRAM-SHA-256"
    # No credential is written into the ConfigMap.
    assert not {"sasl.username", "sasl.password", "ssl.key.password"} & extra.keys()

    [mount] = [m for m in container["volumeMounts"] if m["name"] == "kafka-tls"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "kafka-tls"]
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "driftstream-kafka-tls"
    assert volume["secret"]["defaultMode"] == 0o440
    files = {
        item["key"]: f"{mount['mountPath']}/{item['path']}"
        for item in volume["secret"]["items"]
    }
    assert extra["ssl.ca.location"] == files["ca.crt"]
    assert extra["ssl.certificate.location"] == files["tls.crt"]
    assert extra["ssl.key.location"] == files["tls.key"]


def test_tls_with_the_system_ca_store_mounts_nothing(helm: str) -> None:
    manifests = render(helm, [TLS_SYSTEM_CA])
    assert _config(manifests)["kafka"]["extra"] == {"security.protocol": "SSL"}
    assert "env" not in _container(manifests)
    assert {v["name"] for v in _pod_spec(manifests)["volumes"]} == {"config", "tmp"}


def test_a_key_set_in_config_wins_over_the_derived_one(helm: str) -> None:
    extra = _config(
        render(
            helm,
            [SASL_TLS],
            ["config.kafka.extra.security\\.protocol=SSL"],
        )
    )["kafka"]["extra"]
    assert extra["security.protocol"] == "SSL"
    assert extra["sasl.mechanism"] == "SCRAM-SHA-256"


@pytest.mark.parametrize(
    ("assignment", "named"),
    [
        ("replicaCount=-1", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("config.metrics.port=0", "port"),
        ("service.type=Ingress", "type"),
        ("serviceMonitor.interval=often", "interval"),
        ("kafkaAuth.sasl.mechanism=GSSAPI", "mechanism"),
        ("logLevel=TRACE", "logLevel"),
        ("podDisruptionBudget.maxUnavailable=all", "maxUnavailable"),
        ("serviceMonitor.enable=true", "enable"),
        ("replicas=2", "replicas"),
    ],
)
def test_schema_rejects_a_bad_value(helm: str, assignment: str, named: str) -> None:
    result = run([helm, "template", RELEASE, str(CHART_DIR), "--set", assignment])
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr


def test_lint_rejects_a_bad_value_too(helm: str) -> None:
    result = run([helm, "lint", "--strict", str(CHART_DIR), "--set", "replicaCount=x"])
    assert result.returncode != 0
    assert "replicaCount" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["kafkaAuth.sasl.enabled=true"],
            "kafkaAuth.sasl.enabled is true but kafkaAuth.existingSecret is empty",
        ),
        (
            ["kafkaAuth.tls.enabled=true"],
            "neither kafkaAuth.tls.existingSecret nor kafkaAuth.existingSecret",
        ),
        (
            [
                "kafkaAuth.tls.enabled=true",
                "kafkaAuth.existingSecret=s",
                "kafkaAuth.tls.certKey=tls.crt",
            ],
            "certKey and kafkaAuth.tls.keyKey go together",
        ),
    ],
)
def test_incomplete_kafka_auth_fails_with_the_fix(
    helm: str, sets: list[str], message: str
) -> None:
    result = run([helm, "template", RELEASE, str(CHART_DIR), *helm_args((), sets)])
    assert result.returncode != 0
    assert message in result.stderr


def test_notes_warn_about_replicas_beyond_the_partition_count(
    helm: str, tmp_path: Path
) -> None:
    # `helm template` does not render NOTES.txt; a copy of the chart renders
    # it as a YAML string instead.
    chart = tmp_path / "driftstream"
    shutil.copytree(CHART_DIR, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "_notes_body.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "{{- end }}\n"
    )
    (chart / "templates" / "notes-test.yaml").write_text(
        'notes: {{ include "test.notes" . | toJson }}\n'
    )

    show = ["--show-only", "templates/notes-test.yaml", "--values", str(SASL_TLS)]
    result = run(
        [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE, *show]
    )

    assert result.returncode == 0, result.stderr
    text = " ".join(yaml.safe_load(result.stdout)["notes"].split())
    assert "replicas beyond the partition count get no partition" in text
    assert f"port-forward service/{RELEASE}-driftstream 9308" in text
    assert "secret/kafka-client" in text


def _undocumented_keys(lines: list[str]) -> list[str]:
    """Keys of values.yaml with no comment right above them, unless they lie
    inside a value whose `# --` comment documents it as a whole."""
    missing: list[str] = []
    stack: list[tuple[int, bool]] = []  # (indent, documented as a whole)
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z_][\w.-]*):", line)
        if not match:
            continue
        indent = len(match[1])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        above = lines[number - 1].strip() if number else ""
        commented = above.startswith("#")
        covered = any(whole for _, whole in stack)
        if not commented and not covered:
            missing.append(f"line {number + 1}: {match[2]}")
        comment_start = number - 1
        while comment_start > 0 and lines[comment_start - 1].strip().startswith("#"):
            comment_start -= 1
        whole = commented and lines[comment_start].strip().startswith("# --")
        stack.append((indent, whole))
    return missing


def test_every_value_is_documented() -> None:
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    assert _undocumented_keys(lines) == []
    text = (CHART_DIR / "values.yaml").read_text()
    assert "beyond the topics' partition count" in " ".join(text.split())
