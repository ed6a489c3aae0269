"""Settings: environment names, validation, and the one mapping onto Faust."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.app import faust_options
from pipeline.settings import TOPIC_PREFIX_MAX, Settings, bootstrap_servers


def test_defaults_describe_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no environment the settings are the dev profile's."""
    for name in list(__import__("os").environ):
        if name.startswith("NOTIFY_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.profile == "dev"
    assert settings.web_port == 6066
    assert settings.web_host == "127.0.0.1"
    assert settings.worker_lanes == ("critical", "bulk")
    assert settings.resolved_clickhouse_dsn.startswith("chdb://")


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY_* variables set the fields of the same name."""
    monkeypatch.setenv("NOTIFY_BROKER_URL", "kafka://k1:9092;k2:9092")
    monkeypatch.setenv("NOTIFY_WEB_PORT", "7001")
    monkeypatch.setenv("NOTIFY_LANES", "bulk")
    settings = Settings()
    assert settings.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.web_port == 7001
    assert settings.worker_lanes == ("bulk",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lanes", "critical,express"),
        ("lanes", ""),
        ("web_port", "70000"),
        ("profile", "staging"),
        ("topic_partitions", "0"),
    ],
)
def test_bad_values_are_refused(field: str, value: str) -> None:
    """A wrong value fails at start-up, naming the field."""
    with pytest.raises(ValidationError) as raised:
        Settings(**{field: value})
    assert field in str(raised.value)


def test_settings_are_frozen() -> None:
    """Nobody changes the settings of a running worker."""
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.web_port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
        ("kafka://a:1;b:2", "a:1,b:2"),
        ("a:1,b:2", "a:1,b:2"),
        ("kafka://a:1/", "a:1"),
    ],
)
def test_bootstrap_servers(url: str, expected: str) -> None:
    """Faust's broker URL becomes librdkafka's bootstrap list."""
    assert bootstrap_servers(url) == expected


def test_faust_options_carry_the_dev_profile(tmp_path: Path) -> None:
    """The group timeouts and bounded request timeout reach Faust."""
    options = faust_options(Settings(data_dir=tmp_path, producer_linger=0.01))
    assert options["broker_session_timeout"] == 3.0
    assert options["broker_heartbeat_interval"] == 0.5
    assert options["producer_request_timeout"] == 10.0
    assert options["producer_linger"] == 0.01
    assert options["web_bind"] == "127.0.0.1"
    assert options["datadir"] == str(tmp_path / "faust")
    assert options["version"] == 1


def test_production_refuses_the_embedded_analytics_engine() -> None:
    """A production worker must be pointed at a ClickHouse server."""
    secrets = {
        "admin_api_key": "x" * 32,
        "tracking_secret": "t" * 32,
        "webhook_secret": "w" * 32,
    }
    with pytest.raises(ValidationError) as raised:
        Settings(profile="production", clickhouse_dsn="", **secrets)
    assert "NOTIFY_CLICKHOUSE_DSN" in str(raised.value)
    production = Settings(
        profile="production",
        clickhouse_dsn="http://ch:8123/db",
        dev_api_key="",
        **secrets,
    )
    assert production.resolved_clickhouse_dsn == "http://ch:8123/db"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("admin_api_key", "nk_dev_admin_key_for_local_use_only"),
        ("admin_api_key", "short"),
        ("dev_api_key", "nk_dev_default_key_for_local_use_only"),
        ("tracking_secret", "dev-tracking-secret-for-local-use-only"),
        ("webhook_secret", "dev-webhook-secret-for-local-use-only"),
    ],
)
def test_production_refuses_placeholder_keys(field: str, value: str) -> None:
    """The well-known development keys never authenticate a production worker."""
    values = {
        "profile": "production",
        "clickhouse_dsn": "http://ch:8123/db",
        "admin_api_key": "y" * 32,
        "tracking_secret": "t" * 32,
        "webhook_secret": "w" * 32,
        "dev_api_key": "",
        field: value,
    }
    with pytest.raises(ValidationError) as raised:
        Settings(**values)
    assert f"NOTIFY_{field.upper()}" in str(raised.value)


def test_a_single_lane_worker_gets_its_own_group() -> None:
    """Lanes deploy apart: a one-lane worker never joins the other lane's group."""
    assert Settings(app_id="np").group_id == "np"
    assert Settings(app_id="np", lanes="critical").group_id == "np-critical"
    assert Settings(app_id="np", lanes="bulk").group_id == "np-bulk"


def test_topic_prefix_is_empty_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """No prefix by default; NOTIFY_TOPIC_PREFIX sets one."""
    monkeypatch.delenv("NOTIFY_TOPIC_PREFIX", raising=False)
    assert Settings().topic_prefix == ""
    monkeypatch.setenv("NOTIFY_TOPIC_PREFIX", "staging.")
    assert Settings().topic_prefix == "staging."


@pytest.mark.parametrize(
    "prefix", ["", "staging.", "t-0a1b2c3d4e.", "Team_A-", "x" * TOPIC_PREFIX_MAX]
)
def test_topic_prefixes_kafka_allows_are_taken(prefix: str) -> None:
    """Letters, digits, dot, underscore and dash, up to the bound."""
    assert Settings(topic_prefix=prefix).topic_prefix == prefix


@pytest.mark.parametrize(
    "prefix", ["staging/", "has space.", "tést.", "a:b.", "x" * (TOPIC_PREFIX_MAX + 1)]
)
def test_other_topic_prefixes_are_refused(prefix: str) -> None:
    """Anything a topic name cannot hold fails at start-up, naming the variable."""
    with pytest.raises(ValidationError) as raised:
        Settings(topic_prefix=prefix)
    assert "NOTIFY_TOPIC_PREFIX" in str(raised.value)
