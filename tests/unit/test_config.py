"""The configuration: file, environment, and the errors an operator reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.config import Config, load_config
from streamer.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "driftstream.yaml"
    path.write_text(text)
    return path


def test_defaults_match_the_design() -> None:
    config = load_config(None, environ={})
    assert config.windows.lengths == ("5m", "1h", "24h")
    assert config.join.prediction_ttl_s == 7 * 86_400
    assert config.join.outcome_ttl_s == 3_600
    assert config.scoring.eps == 2.0**-52
    assert config.state.topic_name("g") == "g-checkpoints"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "kafka:\n  bootstrap_servers: file:9092\n  group_id: a\n")
    config = load_config(
        path,
        environ={
            "DRIFTSTREAM__KAFKA__BOOTSTRAP_SERVERS": "env:9092",
            "driftstream__windows__lengths": "[30s, 2m]",
            "DRIFTSTREAM__KAFKA__EXTRA__SECURITY.PROTOCOL": "SASL_SSL",
            "DRIFTSTREAM__MODELS__FRAUD__POSITIVE_LABEL": "chargeback",
            "OTHER": "ignored",
        },
    )
    assert config.kafka.bootstrap_servers == "env:9092"
    assert config.kafka.group_id == "a"
    assert config.windows.lengths == ("30s", "2m")
    assert config.kafka.extra == {"security.protocol": "SASL_SSL"}
    assert config.models["fraud"].positive_label == "chargeback"


@pytest.mark.parametrize(
    ("text", "environ", "match"),
    [
        ("kafka: [1, 2", {}, r"is not valid YAML"),
        ("- a\n- b\n", {}, r"must hold a mapping at the top, not list"),
        ("join:\n  typo: 1\n", {}, r"join\.typo: Extra inputs are not permitted"),
        ("", {"DRIFTSTREAM__KAFKA__AUTO_OFFSET_RESET": "middle"},
         r"kafka\.auto_offset_reset: Input should be 'earliest' or 'latest' "
         r"\(given: 'middle'; env override: DRIFTSTREAM__KAFKA__AUTO_OFFSET_RESET\)"),
        ("windows:\n  lengths: [7s]\n", {},
         r"windows\.lengths and windows\.buckets: window '7s': length_ms=7000 is "
         r"not a multiple of buckets=60"),
        ("windows:\n  lengths: [5m, 300s]\n", {}, r"window lengths repeat"),
        ("windows:\n  lengths: [5 min]\n", {}, r"window '5 min' is not a duration"),
        ("windows:\n  clock: sundial\n", {}, r"Input should be 'wall' or 'event'"),
        ("state:\n  store: s3\n", {}, r"'kafka', 'directory' or 'none'"),
        ("", {"DRIFTSTREAM__JOIN__": "1"}, r"DRIFTSTREAM__JOIN__: empty key part"),
        ("", {"DRIFTSTREAM__JOIN__MAX_PENDING": "-5"},
         r"and DRIFTSTREAM__\* environment variables"),
    ],
)  # fmt: skip
def test_invalid_configuration_says_what_to_fix(
    tmp_path: Path, text: str, environ: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(_write(tmp_path, text), environ=environ)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.yaml"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.kafka.group_id = "x"  # type: ignore[misc]


SECRET = "s3cret-from-a-file"


def test_a_clear_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "driftstream.yaml"
    path.write_text(
        "kafka:\n  extra:\n    sasl.username: alice\n    sasl.password: hunter2\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    message = str(raised.value)
    assert "kafka.extra.sasl.password in clear" in message
    assert "DRIFTSTREAM__KAFKA__EXTRA__SASL.PASSWORD" in message
    assert "kafka.secret_files" in message
    assert "hunter2" not in message


def test_a_secret_from_the_environment_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "driftstream.yaml"
    path.write_text("kafka:\n  extra:\n    sasl.username: alice\n")
    config = load_config(
        path, environ={"DRIFTSTREAM__KAFKA__EXTRA__SASL.PASSWORD": "'hunter2'"}
    )
    assert config.kafka.librdkafka_extra()["sasl.password"] == "hunter2"


def test_a_secret_from_a_file_is_read_without_its_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET + "\n")
    path = tmp_path / "driftstream.yaml"
    path.write_text(
        f"kafka:\n  extra:\n    security.protocol: SASL_SSL\n"
        f"  secret_files:\n    sasl.password: {secret}\n"
    )
    config = load_config(path, environ={})

    from streamer.consumer import consumer_settings

    assert consumer_settings(config.kafka, auto_commit=False)["sasl.password"] == SECRET
    assert config.kafka.client_settings()["sasl.password"] == SECRET
    assert SECRET not in config.model_dump_json()


def test_an_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(
        ValueError, match=r"kafka.secret_files.sasl.password: cannot read .*nope"
    ):
        Config.model_validate(
            {"kafka": {"secret_files": {"sasl.password": str(missing)}}}
        )


def test_a_setting_in_extra_and_secret_files_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(SECRET)
    with pytest.raises(ValueError, match=r"\['sasl.password'\] set in both"):
        Config.model_validate(
            {
                "kafka": {
                    "extra": {"sasl.password": "x"},
                    "secret_files": {"sasl.password": str(secret)},
                }
            }
        )


def test_check_config_shows_the_secret_file_not_its_text(tmp_path: Path) -> None:
    import subprocess
    import sys

    secret = tmp_path / "password"
    secret.write_text(SECRET)
    path = tmp_path / "driftstream.yaml"
    path.write_text(f"kafka:\n  secret_files:\n    sasl.password: {secret}\n")
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(secret) in result.stdout
    assert SECRET not in result.stdout + result.stderr
