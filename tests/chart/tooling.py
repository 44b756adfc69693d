"""Paths and command runners shared by the chart, image and compose tests.

The tools (helm, hadolint, promtool, amtool) are found on ``PATH`` or in the
directory ``scripts/install-tools`` installs into. A missing tool fails the
test that needs it, naming the script that installs it: CI installs them all,
so a skip would only hide a broken install step.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "helm" / "driftstream"
FILES_DIR = CHART_DIR / "files"
CI_VALUES = sorted((CHART_DIR / "ci").glob("*.yaml"))
RELEASE = "ds"
NAMESPACE = "models"

Manifest = dict[str, Any]


def tools_bin_dir() -> Path:
    """Where ``scripts/install-tools`` puts helm and hadolint."""
    configured = os.environ.get("DRIFTSTREAM_CACHE_DIR")
    if configured:
        return Path(configured) / "bin"
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg_cache) / "driftstream" / "bin"


def require_tool(name: str) -> str:
    """The path of ``name``, or a failed test that says how to install it."""
    found = shutil.which(name) or shutil.which(name, path=str(tools_bin_dir()))
    if found is None:
        pytest.fail(
            f"{name} is not installed (looked on PATH and in {tools_bin_dir()}); "
            "run `bash scripts/install-tools`",
            pytrace=False,
        )
    return found


def driftstream_command() -> str:
    """The ``driftstream`` script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("driftstream")
    if not script.exists():
        pytest.fail(f"no driftstream script beside {sys.executable}", pytrace=False)
    return str(script)


def run(
    command: Sequence[str],
    *,
    cwd: Path = REPO_ROOT,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def helm_args(values_files: Sequence[Path], sets: Sequence[str]) -> list[str]:
    args: list[str] = []
    for path in values_files:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


@functools.cache
def _render_cached(
    helm: str, values_files: tuple[Path, ...], sets: tuple[str, ...]
) -> tuple[Manifest, ...]:
    result = run(
        [
            helm,
            "template",
            RELEASE,
            str(CHART_DIR),
            "--namespace",
            NAMESPACE,
            *helm_args(values_files, sets),
        ]
    )
    assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def render(
    helm: str, values_files: Sequence[Path] = (), sets: Sequence[str] = ()
) -> list[Manifest]:
    """The manifests `helm template` renders, parsed."""
    return list(_render_cached(helm, tuple(values_files), tuple(sets)))


def of_kind(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in manifests if doc["kind"] == kind]


def only(manifests: Sequence[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    """The one manifest of ``kind`` (whose name ends with ``name_suffix``)."""
    found = [
        doc
        for doc in of_kind(manifests, kind)
        if doc["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(found) == 1, f"expected one {kind}*{name_suffix}, got {len(found)}"
    return found[0]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))
