"""The one settings object: read from ``NOTIFY_*`` variables, frozen, documented."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Broker behaviours a broker may get wrong, each with a workaround or a
#: conformance case. The embedded Tansu broker gets these wrong (BROKER defects
#: are pinned by ``tests/broker``); Apache Kafka gets none of them wrong.
KNOWN_BROKER_DEFECTS = frozenset(
    {
        # ListOffsets(latest) answers (first offset of the last batch + 1).
        "list_offsets_latest",
        # cleanup.policy=compact is accepted but never performed.
        "compaction",
        # read_committed consumers see aborted records.
        "transactions",
    }
)
EMBEDDED_BROKER_DEFECTS = "list_offsets_latest,compaction,transactions"

#: Well-known development keys: fine on a laptop, refused in production.
DEV_API_KEY = "nk_dev_default_key_for_local_use_only"
DEV_ADMIN_KEY = "nk_dev_admin_key_for_local_use_only"
PLACEHOLDER_KEYS = frozenset({DEV_API_KEY, DEV_ADMIN_KEY})

#: Critical and transactional traffic rides ``critical``; promotional ``bulk``.
LANES = ("critical", "bulk")


class Settings(BaseSettings):
    """Everything a worker, the CLI and the tests can be told from the environment.

    Defaults describe the embedded stack (the dev profile); production sets the
    broker, ClickHouse and group timeouts through the same variables.
    """

    model_config = SettingsConfigDict(env_prefix="NOTIFY_", frozen=True, extra="ignore")

    profile: Literal["dev", "production"] = Field(
        "dev", description="dev: embedded stack, short group timeouts; production."
    )
    app_id: str = Field(
        "notify-pipeline",
        description="Faust app id: prefixes consumer groups, changelogs, internals.",
    )
    broker_url: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap servers, `kafka://host:port[;host:port]`.",
    )
    broker_defects: str = Field(
        EMBEDDED_BROKER_DEFECTS,
        description="Comma list of known broker defects to work around; empty for "
        "Apache Kafka.",
    )
    broker_session_timeout: float = Field(
        3.0, gt=0, description="Consumer group session timeout, seconds."
    )
    broker_heartbeat_interval: float = Field(
        0.5, gt=0, description="Consumer group heartbeat interval, seconds."
    )
    broker_request_timeout: float = Field(
        10.0,
        gt=0,
        description="Producer request timeout, seconds (bounded on purpose).",
    )
    producer_linger: float = Field(
        0.005,
        ge=0,
        description="Seconds the producer waits to fill a batch (aiokafka linger); "
        "5 ms halved the broker's CPU per event (benchmarks/README.md).",
    )
    broker_commit_interval: float = Field(
        1.0, gt=0, description="Seconds between consumer offset commits."
    )
    topic_partitions: int = Field(
        4, ge=1, description="Partitions of every topic the app declares."
    )
    topic_replication_factor: int = Field(
        1, ge=1, description="Replication factor of every topic the app declares."
    )
    data_dir: Path = Field(
        Path("var"), description="Worker state: RocksDB tables, logs of `make run`."
    )
    store_url: str = Field(
        "rocksdb://",
        description="Table store: `rocksdb://` (rocksdict) or `memory://`.",
    )
    web_host: str = Field("127.0.0.1", description="Address the web server binds.")
    web_port: int = Field(6066, ge=0, le=65535, description="Web server port.")
    web_canonical_url: str = Field(
        "",
        description="URL other workers use to reach this one (table routing); "
        "empty = http://<web_host>:<web_port> (the hostname if bound to all).",
    )
    clickhouse_dsn: str = Field(
        "",
        description="clickhouse-connect DSN; empty = in-process chDB under data_dir.",
    )
    lanes: str = Field(
        "critical,bulk",
        description="Lanes this worker runs agents for: `critical`, `bulk` or both.",
    )

    idempotency_window: float = Field(
        24.0, gt=0, description="Hours an idempotency key is remembered."
    )
    dev_api_key: SecretStr = Field(
        SecretStr(DEV_API_KEY),
        description="API key of the `default` tenant (empty: none); the placeholder "
        "is refused in production.",
    )
    admin_api_key: SecretStr = Field(
        SecretStr(DEV_ADMIN_KEY),
        description="Admin-scope API key (tenants and keys); the placeholder is "
        "refused in production.",
    )

    @field_validator("broker_defects")
    @classmethod
    def _known_defects_only(cls, value: str) -> str:
        unknown = set(_split(value)) - KNOWN_BROKER_DEFECTS
        if unknown:
            raise ValueError(
                f"unknown broker defect(s) {sorted(unknown)}; "
                f"known: {sorted(KNOWN_BROKER_DEFECTS)}"
            )
        return value

    @field_validator("lanes")
    @classmethod
    def _known_lanes_only(cls, value: str) -> str:
        lanes = _split(value)
        unknown = set(lanes) - set(LANES)
        if not lanes or unknown:
            raise ValueError(f"lanes must name one or more of {list(LANES)}")
        return value

    @model_validator(mode="after")
    def _production_needs_servers(self) -> Settings:
        if self.profile != "production":
            return self
        if not self.clickhouse_dsn:
            raise ValueError(
                "NOTIFY_CLICKHOUSE_DSN must name a ClickHouse server in production "
                "(the in-process chDB engine is for development)"
            )
        for name in ("dev_api_key", "admin_api_key"):
            secret = getattr(self, name).get_secret_value()
            if name == "dev_api_key" and not secret:
                continue  # no default-tenant key in this deployment
            if secret in PLACEHOLDER_KEYS or len(secret) < 24:
                raise ValueError(
                    f"NOTIFY_{name.upper()} is a placeholder or shorter than 24 "
                    "characters; set a real secret in production"
                )
        return self

    @property
    def group_id(self) -> str:
        """Faust app id (= consumer group): one per lane set, so lanes deploy apart.

        A worker for one lane must not share a group with the other lane's
        workers: a rebalance in one group would pause the other lane.
        """
        if self.worker_lanes == LANES:
            return self.app_id
        return "-".join((self.app_id, *self.worker_lanes))

    @property
    def worker_lanes(self) -> tuple[str, ...]:
        """The lanes this worker runs, in canonical order."""
        chosen = set(_split(self.lanes))
        return tuple(lane for lane in LANES if lane in chosen)

    @property
    def defects(self) -> frozenset[str]:
        """The broker defects this deployment declares."""
        return frozenset(_split(self.broker_defects))

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as a plain ``host:port,host:port`` list for clients."""
        return bootstrap_servers(self.broker_url)

    @property
    def resolved_clickhouse_dsn(self) -> str:
        """The ClickHouse DSN, defaulting to an on-disk chDB under ``data_dir``."""
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def bootstrap_servers(broker_url: str) -> str:
    """Turn ``kafka://a:1;b:2`` (Faust's form) into ``a:1,b:2`` (librdkafka's)."""
    hosts = []
    for part in broker_url.replace(";", ",").split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            hosts.append(part.rstrip("/"))
    return ",".join(hosts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
