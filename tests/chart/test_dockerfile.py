"""The Dockerfile: hadolint, the shape of its stages, and its HEALTHCHECK.

No Docker engine runs here, so the image is not built; these tests hold the
Dockerfile to what a build by the book needs, and run its health check command
against a real ``driftstream run``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.chart.tooling import REPO_ROOT, driftstream_command, run
from tests.ports import free_port

DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
BASE_TAG = re.compile(r"python:3\.11\.[0-9]+-slim-bookworm")
# The Rust toolchain's image: a full version, on the base's Debian release.
RUST_TAG = re.compile(r"rust:1\.[0-9]+\.[0-9]+-slim-bookworm")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    heredoc: str = ""


def _instructions(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, continuations joined, a
    heredoc's body kept apart."""
    instructions: list[Instruction] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            following = next(lines)
            if not following.lstrip().startswith("#"):
                line = line[:-1] + " " + following.strip()
        keyword, _, arguments = line.strip().partition(" ")
        body = ""
        heredoc = re.search(r"<<-?'?\"?(\w+)'?\"?", arguments)
        if heredoc:
            body_lines = []
            for body_line in lines:
                if body_line == heredoc[1]:
                    break
                body_lines.append(body_line)
            body = "\n".join(body_lines) + "\n"
        instructions.append(Instruction(keyword.upper(), arguments.strip(), body))
    return instructions


def _stages() -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _final(keyword: str) -> list[Instruction]:
    return [i for i in _stages()[-1] if i.keyword == keyword]


def _exec_form(instruction: Instruction, prefix: str = "") -> list[str]:
    arguments = instruction.arguments.removeprefix(prefix).strip()
    if instruction.keyword == "HEALTHCHECK":
        arguments = arguments[arguments.index("CMD ") + 4 :]
    parsed: list[str] = json.loads(arguments)
    return parsed


def test_hadolint_passes(hadolint: str) -> None:
    result = run([hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_ignored_hadolint_rule_gives_a_reason() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = lines[number - 1].strip()
            assert above.startswith("#") and "hadolint" not in above, (
                f"Dockerfile line {number + 1}: say above the ignore why"
            )


def test_two_stages_on_the_same_pinned_slim_base() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    args = {
        name: value
        for name, _, value in (
            i.arguments.partition("=") for i in instructions if i.keyword == "ARG"
        )
    }
    bases = [
        re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], i.arguments.split()[0])
        for i in instructions
        if i.keyword == "FROM"
    ]
    assert len(bases) == 2
    assert all(BASE_TAG.fullmatch(base) for base in bases), bases
    assert _stages()[0][0].arguments.endswith(" AS build")


def test_the_first_stage_builds_wheels_the_final_one_installs_them() -> None:
    build, final = _stages()
    assert any("pip wheel" in i.arguments for i in build if i.keyword == "RUN")
    [install] = [i for i in final if "pip install" in i.arguments]
    assert "from=build" in install.arguments
    assert "--no-index" in install.arguments
    final_text = " ".join(i.arguments for i in final)
    for build_tool in ("apt-get", "gcc", "build-essential", "git ", "cargo", "rustup"):
        assert build_tool not in final_text
    assert "pip uninstall --yes setuptools wheel pip" in final_text


def test_the_build_stage_has_a_pinned_rust_toolchain_for_native() -> None:
    build, _ = _stages()
    copied = {
        i.arguments.split()[1]: i.arguments.split()[0].removeprefix("--from=")
        for i in build
        if i.keyword == "COPY" and i.arguments.startswith("--from=")
    }
    assert set(copied) == {"/usr/local/cargo", "/usr/local/rustup"}
    assert all(RUST_TAG.fullmatch(image) for image in copied.values()), copied

    env = " ".join(i.arguments for i in build if i.keyword == "ENV")
    for setting in (
        "CARGO_HOME=/usr/local/cargo",
        "RUSTUP_HOME=/usr/local/rustup",
        "PATH=/usr/local/cargo/bin:$PATH",
        "MATURIN_PEP517_ARGS=--locked",
    ):
        assert setting in env, setting


def test_the_final_stage_runs_driftstream_as_a_non_root_user() -> None:
    [user] = _final("USER")
    uid = user.arguments.split(":")[0]
    args = dict(i.arguments.partition("=")[::2] for i in _final("ARG"))
    uid = args.get(uid.strip("${}"), uid)
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric, non-root uid"

    [entrypoint] = _final("ENTRYPOINT")
    [cmd] = _final("CMD")
    assert _exec_form(entrypoint) == ["driftstream"]
    assert _exec_form(cmd) == ["run", "--config", "/etc/driftstream/config.yaml"]
    assert [i.arguments for i in _final("EXPOSE")] == ["9308"]


def test_the_image_default_config_is_valid(tmp_path: Path) -> None:
    [default] = [
        i for i in _final("COPY") if "/etc/driftstream/config.yaml" in i.arguments
    ]
    config = tmp_path / "config.yaml"
    config.write_text(default.heredoc)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM__")}

    result = run([driftstream_command(), "check-config", str(config)], env=env)

    assert result.returncode == 0, result.stderr


def _excluded(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last
    pattern that matches the path or one of its parent directories decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch(prefix, pattern) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_what_the_build_copies_and_little_else() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # A COPY --from reads another image, not the build context.
    copied = [
        source
        for i in _stages()[0]
        if i.keyword == "COPY" and "--from=" not in i.arguments
        for source in i.arguments.split()[:-1]
        if not source.startswith("--")
    ]
    assert set(copied) == {"pyproject.toml", "README.md", "native", "streamer"}
    for source in [
        *copied,
        "streamer/cli.py",
        "native/Cargo.toml",
        "native/Cargo.lock",
        "native/src/lib.rs",
    ]:
        assert not _excluded(source, patterns), source
    for unwanted in (
        ".git",
        ".venv/bin/python",
        "tests/unit",
        "helm",
        "streamer/__pycache__/x.pyc",
        "native/target/release/lib_native.so",
        "streamer/_native.abi3.so",
        "streamer/_native.cpython-311-x86_64-linux-gnu.so",
    ):
        assert _excluded(unwanted, patterns), unwanted


def _healthcheck(env: dict[str, str]) -> int:
    [healthcheck] = _final("HEALTHCHECK")
    command = _exec_form(healthcheck)
    assert command[0] == "python"
    return run([sys.executable, *command[1:]], env=env, timeout_s=10).returncode


def test_healthcheck_passes_while_driftstream_runs_and_fails_after(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSTREAM__")}
    # No broker: /healthz answers while the process runs, whatever Kafka does.
    env |= {
        "DRIFTSTREAM__METRICS__PORT": str(free_port()),
        "DRIFTSTREAM__METRICS__HOST": "127.0.0.1",
        "DRIFTSTREAM__KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    log = (tmp_path / "driftstream.log").open("w")
    process = subprocess.Popen(
        [driftstream_command(), "run"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 20
        while _healthcheck(env) != 0:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "the HEALTHCHECK command never passed; driftstream's log:\n"
                    + (tmp_path / "driftstream.log").read_text()[-3000:]
                )
            time.sleep(0.3)
    finally:
        # SIGKILL: a graceful stop would wait for the unreachable broker.
        process.kill()
        process.wait()
        log.close()

    assert _healthcheck(env) != 0
