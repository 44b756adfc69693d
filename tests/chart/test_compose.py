"""docker-compose.yml and deploy/: the laptop stack, checked without a Docker engine.

What can be checked offline is: the services and their wiring, that every
mounted file exists, and that the files pass the checks of the programs that
read them (driftstream check-config, promtool check config, amtool
check-config), laid out as the containers see them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.tooling import REPO_ROOT, driftstream_command, load_yaml, run

COMPOSE = REPO_ROOT / "docker-compose.yml"
SERVICES = {
    "kafka",
    "kafka-init",
    "driftstream",
    "generator",
    "prometheus",
    "alertmanager",
    "grafana",
}


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml(COMPOSE)["services"]
    return services


def _bind_mounts(service: str) -> dict[str, tuple[Path, str]]:
    """Container path -> (host path, options) of a service's bind mounts."""
    mounts: dict[str, tuple[Path, str]] = {}
    for volume in _services()[service].get("volumes", []):
        source, target, *options = volume.split(":")
        if source.startswith("."):
            mounts[target] = (REPO_ROOT / source, ",".join(options))
    return mounts


def _lay_out(service: str, root: Path) -> None:
    """Copies a service's bind mounts under ``root`` at their container paths."""
    for target, (source, _) in _bind_mounts(service).items():
        destination = root / target.lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, destination)


def _driftstream_config() -> dict[str, Any]:
    [(source, _)] = _bind_mounts("driftstream").values()
    config: dict[str, Any] = load_yaml(source)
    return config


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_the_stack_has_its_services() -> None:
    assert set(_services()) == SERVICES


def test_compose_loads_it_as_valid(compose_check: str) -> None:
    # compose-go, docker compose's own loader: the Compose Specification's
    # schema, interpolation, normalization.
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    result = run([compose_check, str(COMPOSE)], env=env)

    assert result.returncode == 0, result.stderr
    project = yaml.safe_load(result.stdout)
    assert set(project["services"]) == SERVICES
    for name, service in project["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).is_file(), (name, volume["source"])
    [create] = project["services"]["kafka-init"]["command"]
    assert '--topic "$topic"' in create
    grafana = project["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "admin"


def test_every_mounted_file_exists_and_is_read_only() -> None:
    for service in SERVICES:
        for target, (source, options) in _bind_mounts(service).items():
            assert source.is_file(), f"{service}: {source} (for {target}) is missing"
            assert options == "ro", f"{service}: mount {target} read-only"


def test_images_are_pinned_and_driftstream_is_built_here() -> None:
    for name, service in _services().items():
        if "build" in service:
            assert service["build"] == "."
            assert service["image"] == "driftstream:local"
            continue
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:v?[0-9]+(\.[0-9]+)+", image), (name, image)
    assert "build" in _services()["generator"]


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in _services().items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def test_start_order_waits_for_the_broker_and_the_topics() -> None:
    services = _services()
    assert "healthcheck" in services["kafka"]
    assert services["kafka-init"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"}
    }
    for name in ("driftstream", "generator"):
        assert services[name]["depends_on"] == {
            "kafka-init": {"condition": "service_completed_successfully"}
        }
    assert services["generator"]["healthcheck"] == {"disable": True}


def test_streamer_generator_and_topics_agree() -> None:
    services = _services()
    kafka = _driftstream_config()["kafka"]
    generator = services["generator"]["command"]
    [create] = services["kafka-init"]["command"]

    assert generator[0] == "generate"
    assert _option(generator, "--bootstrap-servers") == kafka["bootstrap_servers"]
    assert _option(generator, "--predictions-topic") == kafka["predictions_topic"]
    assert _option(generator, "--outcomes-topic") == kafka["outcomes_topic"]
    assert (
        f"PLAINTEXT://{kafka['bootstrap_servers']}"
        in (services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
    )
    # Both topics made in one loop, so with one partition count: co-partitioned.
    assert f"for topic in {kafka['predictions_topic']} {kafka['outcomes_topic']};" in (
        create
    )
    assert re.search(r"--partitions [0-9]+", create)


def test_driftstream_config_passes_check_config() -> None:
    [(source, _)] = _bind_mounts("driftstream").values()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM__")}
    env |= {
        str(k): str(v)
        for k, v in _services()["driftstream"].get("environment", {}).items()
    }

    result = run([driftstream_command(), "check-config", str(source)], env=env)

    assert result.returncode == 0, result.stderr
    assert "/etc/driftstream/config.yaml" in _bind_mounts("driftstream")


def test_prometheus_config_and_rules_pass_promtool(
    promtool: str, tmp_path: Path
) -> None:
    _lay_out("prometheus", tmp_path)
    mounts = _bind_mounts("prometheus")
    [config_path] = [
        arg.split("=", 1)[1]
        for arg in _services()["prometheus"]["command"]
        if arg.startswith("--config.file=")
    ]

    result = run([promtool, "check", "config", str(tmp_path / config_path.lstrip("/"))])

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout
    rule_sources = [s for t, (s, _) in mounts.items() if "/rules/" in t]
    assert rule_sources == [REPO_ROOT / "helm/driftstream/files/alerts.yaml"]


def test_prometheus_scrapes_driftstream_and_alerts_alertmanager() -> None:
    [(config_file, _)] = [
        m for t, m in _bind_mounts("prometheus").items() if t.endswith("prometheus.yml")
    ]
    config = load_yaml(config_file)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    port = _driftstream_config()["metrics"]["port"]

    assert jobs["driftstream"]["static_configs"] == [
        {"targets": [f"driftstream:{port}"]}
    ]
    [alertmanagers] = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]
    assert any(p.endswith(":9093") for p in _services()["alertmanager"]["ports"])


def test_alertmanager_config_passes_amtool(amtool: str) -> None:
    [(config_file, _)] = _bind_mounts("alertmanager").values()
    result = run([amtool, "check-config", str(config_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    # One Alertmanager: it must not open a cluster port.
    assert "--cluster.listen-address=" in _services()["alertmanager"]["command"]


def test_grafana_provisions_prometheus_and_the_shipped_dashboard() -> None:
    mounts = _bind_mounts("grafana")
    [dashboard_target] = [t for t, (s, _) in mounts.items() if s.suffix == ".json"]
    [datasources] = [
        load_yaml(s)
        for t, (s, _) in mounts.items()
        if "/provisioning/datasources/" in t
    ]
    [providers] = [
        load_yaml(s) for t, (s, _) in mounts.items() if "/provisioning/dashboards/" in t
    ]

    assert (
        mounts[dashboard_target][0]
        == REPO_ROOT / "helm/driftstream/files/dashboard.json"
    )
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    [provider] = providers["providers"]
    assert provider["options"]["path"] == str(Path(dashboard_target).parent)
    home = _services()["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert home == dashboard_target


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "deploy").rglob("*.y*ml")))
def test_deploy_files_are_yaml_mappings(path: Path) -> None:
    assert isinstance(load_yaml(path), dict)
