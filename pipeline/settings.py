"""The one settings object: read from ``NOTIFY_*`` variables, frozen, documented."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Well-known development keys: fine on a laptop, refused in production.
DEV_API_KEY = "nk_dev_default_key_for_local_use_only"
DEV_ADMIN_KEY = "nk_dev_admin_key_for_local_use_only"
#: Well-known development secrets for signing tracking links and webhooks.
DEV_TRACKING_SECRET = "dev-tracking-secret-for-local-use-only"  # noqa: S105
DEV_WEBHOOK_SECRET = "dev-webhook-secret-for-local-use-only"  # noqa: S105
PLACEHOLDER_KEYS = frozenset(
    {DEV_API_KEY, DEV_ADMIN_KEY, DEV_TRACKING_SECRET, DEV_WEBHOOK_SECRET}
)
#: The email providers a deployment may name, in NOTIFY_EMAIL_PROVIDERS.
EMAIL_PROVIDERS = ("smtp", "sendgrid")

#: Critical and transactional traffic rides ``critical``; promotional ``bulk``.
LANES = ("critical", "bulk")

#: What a topic-name prefix may hold: the characters Kafka allows in topic
#: names, and room left for the longest name the topology declares (Kafka
#: refuses names over 249 characters).
TOPIC_PREFIX_CHARS = re.compile(r"[A-Za-z0-9._-]*")
TOPIC_PREFIX_MAX = 100


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
    topic_prefix: str = Field(
        "",
        description="Put before the name of every topic the pipeline declares, "
        "produces to or reads (`staging.` gives `staging.notify.events`).",
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
    metrics: bool = Field(
        True,
        description="Prometheus metrics: counted on the hot path and served at "
        "`GET /metrics` (and the `/dashboard` page); false counts nothing and "
        "both answer 404.",
    )
    clickhouse_dsn: str = Field(
        "",
        description="clickhouse-connect DSN; empty = in-process chDB under data_dir.",
    )
    crash_grace: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds a worker whose commit guard tripped (a failed produce, "
        "an agent's crash) gets to stop before it exits hard; nothing is committed "
        "after the trip, so its input is redone by the next owner.",
    )
    sink_port: int = Field(
        6070,
        ge=0,
        le=65535,
        description="Port of `notify sink`'s own web server (its status, and the "
        "queries of an in-process chDB store, which only its process may open); "
        "binds web_host.",
    )
    sink_url: str = Field(
        "",
        description="Where workers reach `notify sink` for analytics queries when "
        "the store is in-process chDB; empty = http://<web_host>:<sink_port>.",
    )
    sink_batch_rows: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Most events the sink inserts into ClickHouse in one batch.",
    )
    sink_batch_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Longest the sink holds events before inserting them.",
    )
    lanes: str = Field(
        "critical,bulk",
        description="Lanes this worker runs agents for: `critical`, `bulk` or both.",
    )
    lane_urls: str = Field(
        "",
        description="Where the other lanes' workers answer, `lane=URL,...` (e.g. "
        "`bulk=http://worker-bulk:6067`): a status lookup for a notification of a "
        "lane this worker does not run is forwarded there.",
    )

    idempotency_window: float = Field(
        24.0, gt=0, description="Hours an idempotency key is remembered."
    )
    ledger_retention: float = Field(
        168.0,
        gt=0,
        description="Hours a send attempt stays in the ledger after its last "
        "change. A replay of delivery jobs older than this calls providers "
        "again: keep it at least the retention of the topics you replay from.",
    )
    status_retention: float = Field(
        168.0,
        gt=0,
        description="Hours a notification's status and decision trail stay "
        "after its last change (and after anything it waits for is due); then "
        "GET /v1/notifications/{id} answers 404. notify.events keeps the record.",
    )
    unknown_user_wait: float = Field(
        30.0,
        ge=0,
        description="Seconds a notification for a user this worker knows nothing "
        "about (no profile, device or preferences yet) is held and looked at "
        "again before its channels are suppressed; 0 decides at once.",
    )
    types_file: str = Field(
        "",
        description="A notification-type catalogue (TOML, the shape of "
        "pipeline/notification_types.toml) to use instead of the packaged one.",
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

    # Delivery. A provider whose endpoint is empty is not configured: jobs for
    # a channel with no configured provider fail with `provider_not_configured`.
    public_url: str = Field(
        "",
        description="Base URL the outside world reaches the API at (tracking links, "
        "provider callbacks); empty = this worker's URL.",
    )
    send_batch: int = Field(
        200, ge=1, le=10_000, description="Delivery jobs a send agent takes per batch."
    )
    provider_timeout: float = Field(
        5.0, gt=0, description="Seconds a provider call may take before it is retried."
    )
    provider_concurrency: int = Field(
        64, ge=1, description="Calls in flight at once per provider and worker."
    )
    breaker_window: float = Field(
        30.0, gt=0, description="Seconds of calls a provider's circuit breaker weighs."
    )
    breaker_min_calls: int = Field(
        20, ge=1, description="Calls in the window before the breaker may open."
    )
    breaker_error_rate: float = Field(
        0.5, gt=0, le=1, description="Provider-side error rate that opens the breaker."
    )
    breaker_slow_call: float = Field(
        2.0, gt=0, description="Seconds after which a call counts as slow."
    )
    breaker_slow_rate: float = Field(
        0.8, gt=0, le=1, description="Share of slow calls that opens the breaker."
    )
    breaker_open_for: float = Field(
        15.0, gt=0, description="Seconds an open breaker waits before probing."
    )
    apns_url: str = Field(
        "", description="APNs endpoint, e.g. `https://api.push.apple.com`; empty = off."
    )
    apns_key_file: Path | None = Field(
        None, description="APNs provider key (.p8, ES256) for the JWT."
    )
    apns_key_id: str = Field("", description="APNs key id (the JWT `kid`).")
    apns_team_id: str = Field("", description="Apple team id (the JWT `iss`).")
    apns_topic: str = Field("", description="App bundle id, sent as `apns-topic`.")
    apns_ca_file: Path | None = Field(
        None, description="CA bundle to verify APNs with; empty = the system's."
    )
    fcm_url: str = Field(
        "", description="FCM endpoint, e.g. `https://fcm.googleapis.com`; empty = off."
    )
    fcm_service_account: Path | None = Field(
        None, description="FCM service-account JSON file (OAuth2 token source)."
    )
    email_providers: str = Field(
        "smtp,sendgrid",
        description="Email providers in order of preference: the first is primary, "
        "the next takes over while its breaker is open.",
    )
    email_from: str = Field(
        "notifications@example.com", description="From address of every email."
    )
    smtp_url: str = Field(
        "", description="SMTP server, `smtp://host:port`; empty = off."
    )
    smtp_username: str = Field("", description="SMTP login (empty: none).")
    smtp_password: SecretStr = Field(SecretStr(""), description="SMTP password.")
    smtp_starttls: bool = Field(False, description="Upgrade SMTP with STARTTLS.")
    sendgrid_url: str = Field(
        "", description="SendGrid API base, `https://api.sendgrid.com`; empty = off."
    )
    sendgrid_api_key: SecretStr = Field(SecretStr(""), description="SendGrid API key.")
    sendgrid_webhook_key: str = Field(
        "",
        description="SendGrid event-webhook verification key (base64); empty = "
        "SendGrid webhooks refused.",
    )
    twilio_url: str = Field(
        "", description="Twilio API base, `https://api.twilio.com`; empty = off."
    )
    twilio_account_sid: str = Field("", description="Twilio account SID.")
    twilio_auth_token: SecretStr = Field(
        SecretStr(""), description="Twilio auth token (also signs its webhooks)."
    )
    twilio_from: str = Field("", description="Sender number or messaging service SID.")
    sms_max_segments: int = Field(
        3, ge=1, le=10, description="Longer SMS are cut to fit, with an ellipsis."
    )
    tracking_secret: SecretStr = Field(
        SecretStr(DEV_TRACKING_SECRET),
        description="Signs email open/click tracking links; placeholder refused in "
        "production.",
    )
    webhook_secret: SecretStr = Field(
        SecretStr(DEV_WEBHOOK_SECRET),
        description="HMAC secret of the generic webhook (`/v1/webhooks/generic`); "
        "placeholder refused in production.",
    )

    @field_validator("email_providers")
    @classmethod
    def _known_email_providers(cls, value: str) -> str:
        unknown = set(_split(value)) - set(EMAIL_PROVIDERS)
        if unknown:
            raise ValueError(f"email providers must be among {list(EMAIL_PROVIDERS)}")
        return value

    @field_validator("lane_urls")
    @classmethod
    def _lane_urls_parse(cls, value: str) -> str:
        _lane_map(value)
        return value

    @field_validator("lanes")
    @classmethod
    def _known_lanes_only(cls, value: str) -> str:
        lanes = _split(value)
        unknown = set(lanes) - set(LANES)
        if not lanes or unknown:
            raise ValueError(f"lanes must name one or more of {list(LANES)}")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix_fits_a_topic_name(cls, value: str) -> str:
        if len(value) > TOPIC_PREFIX_MAX or not TOPIC_PREFIX_CHARS.fullmatch(value):
            raise ValueError(
                f"NOTIFY_TOPIC_PREFIX must be at most {TOPIC_PREFIX_MAX} of the "
                f"characters Kafka allows in topic names (A-Z a-z 0-9 . _ -); "
                f"got {value!r}"
            )
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
        for name in (
            "dev_api_key",
            "admin_api_key",
            "tracking_secret",
            "webhook_secret",
        ):
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
    def public_base(self) -> str:
        """Base URL of tracking links and provider callbacks.

        NOTIFY_PUBLIC_URL, else the worker's canonical URL, else its bind address.
        """
        if self.public_url:
            return self.public_url.rstrip("/")
        if self.web_canonical_url:
            return self.web_canonical_url.rstrip("/")
        return f"http://{self.web_host}:{self.web_port}"

    def lane_url(self, lane: str) -> str | None:
        """Base URL of the workers of ``lane`` (NOTIFY_LANE_URLS), if set."""
        return _lane_map(self.lane_urls).get(lane)

    @property
    def email_order(self) -> tuple[str, ...]:
        """Email providers, primary first."""
        return tuple(_split(self.email_providers))

    @property
    def bootstrap_servers(self) -> str:
        """The broker URL as a plain ``host:port,host:port`` list for clients."""
        return bootstrap_servers(self.broker_url)

    @property
    def resolved_sink_url(self) -> str:
        """Where the sink process answers analytics queries."""
        return self.sink_url or f"http://{self.web_host}:{self.sink_port}"

    @property
    def resolved_clickhouse_dsn(self) -> str:
        """The ClickHouse DSN, defaulting to an on-disk chDB under ``data_dir``."""
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _lane_map(value: str) -> dict[str, str]:
    """``critical=http://a:6066,bulk=http://b:6067`` as a dict; ValueError if bad."""
    urls: dict[str, str] = {}
    for part in _split(value):
        lane, sep, url = part.partition("=")
        lane, url = lane.strip(), url.strip().rstrip("/")
        if not sep or lane not in LANES or not url.startswith(("http://", "https://")):
            raise ValueError(
                f"lane_urls entries are lane=http(s)://host:port with a lane among "
                f"{list(LANES)}; got {part!r}"
            )
        urls[lane] = url
    return urls


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
