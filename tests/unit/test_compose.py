"""docker-compose.yml and the Dockerfile, checked against the settings they feed."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from pydantic import ValidationError

from pipeline.settings import LANES, Settings, bootstrap_servers

Compose = dict[str, Any]
Service = dict[str, Any]
Env = dict[str, str | None]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
PREFIX = str(Settings.model_config.get("env_prefix", "")).upper()
#: What an operator exports before ``docker compose up``: the file requires it.
#: URL-safe, as it must be: Compose pastes it into the DSN without quoting.
OPERATOR_ENV = {
    "CLICKHOUSE_PASSWORD": "s3cret-Pa55_word",
    "NOTIFY_ADMIN_API_KEY": "an-admin-key-of-at-least-24-chars",
    "NOTIFY_TRACKING_SECRET": "a-tracking-secret-of-24-chars-or-more",
    "NOTIFY_WEBHOOK_SECRET": "a-webhook-secret-of-24-chars-or-more",
    "GRAFANA_ADMIN_PASSWORD": "a-grafana-admin-password",
}
WORKER_ARGV = ("notify", "worker")
TOPICS_ARGV = ("notify", "topics")

# ---------------------------------------------------------------------------
# Reading the files the way Docker does.

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))"
)
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.S)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR:?e}``... as Compose."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None:
            raise ValueError(f"invalid interpolation {match[0]!r}")
        name, op, arg = braced["name"], braced["op"] or "", braced["arg"] or ""
        value = env.get(name)
        missing = not value if op.startswith(":") else value is None
        if op.endswith("-"):
            return arg if missing else value or ""
        if op.endswith("?"):
            if missing:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return value or ""
        if op.endswith("+"):
            return "" if missing else arg
        return value or ""

    return _VARIABLE.sub(substitute, text)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(path: Path, env: Mapping[str, str]) -> Compose:
    """The compose file with anchors merged and ``${...}`` interpolated."""
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), f"{path.name} is not a mapping"
    compose: Compose = _interpolate_tree(loaded, env)
    return compose


@dataclass
class Dockerfile:
    """What a Dockerfile's final stage declares, as far as these checks need."""

    path: Path
    base: str = ""
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""
    runs: list[str] = field(default_factory=list)


def _instructions(text: str) -> list[tuple[str, str]]:
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def _exec_form(rest: str) -> list[str]:
    if rest.startswith("["):
        argv = json.loads(rest)
        return [str(arg) for arg in argv]
    return ["/bin/sh", "-c", rest]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Parse ``path`` (the last ``FROM`` stage is the image that runs)."""
    image = Dockerfile(path)
    for keyword, rest in _instructions(path.read_text()):
        if keyword == "FROM":
            image = Dockerfile(path, base=rest.split()[0])
        elif keyword == "ENTRYPOINT":
            image.entrypoint = _exec_form(rest)
            image.cmd = []  # a new ENTRYPOINT resets an inherited CMD
        elif keyword == "CMD":
            image.cmd = _exec_form(rest)
        elif keyword == "USER":
            image.user = rest
        elif keyword == "RUN":
            image.runs.append(rest)
        elif keyword == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:
                image.env[words[0]] = " ".join(words[1:])
            else:
                for word in words:
                    key, _, value = word.partition("=")
                    image.env[key] = value
    return image


def dockerfile_path(service: Service, base_dir: Path) -> Path | None:
    """The Dockerfile a service is built from, or None for a pulled image."""
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return base_dir / build / "Dockerfile"
    return base_dir / build.get("context", ".") / build.get("dockerfile", "Dockerfile")


def image_of(service: Service, base_dir: Path) -> Dockerfile | None:
    """The parsed Dockerfile of a built service (None: pulled, or file missing)."""
    path = dockerfile_path(service, base_dir)
    return parse_dockerfile(path) if path is not None and path.is_file() else None


def _argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(arg) for arg in value]


def effective_argv(service: Service, image: Dockerfile | None) -> list[str]:
    """What the container runs: Compose's entrypoint/command over the image's."""
    if "entrypoint" in service:
        # Compose: overriding the entrypoint also drops the image's CMD.
        return _argv(service["entrypoint"]) + _argv(service.get("command"))
    entrypoint = image.entrypoint if image else []
    if "command" in service:
        return entrypoint + _argv(service["command"])
    return entrypoint + (image.cmd if image else [])


def services_running(
    compose: Compose, base_dir: Path, argv: tuple[str, ...]
) -> dict[str, Service]:
    """The services whose container runs a command starting with ``argv``."""
    return {
        name: service
        for name, service in compose.get("services", {}).items()
        if tuple(effective_argv(service, image_of(service, base_dir))[: len(argv)])
        == argv
    }


def _env_value(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def declared_env(service: Service) -> Env:
    """A service's ``environment``, list or mapping form; None: taken from host."""
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return {str(key): _env_value(value) for key, value in environment.items()}
    result: Env = {}
    for item in environment:
        key, sep, value = str(item).partition("=")
        result[key] = value if sep else None
    return result


def container_env(service: Service, image: Dockerfile | None) -> Env:
    """The environment the process sees: the image's ENV, overridden by Compose."""
    env: Env = dict(image.env) if image else {}
    env.update(declared_env(service))
    return env


def settings_env_names() -> set[str]:
    """Every variable the settings read: prefix + field name, upper-cased."""
    return {f"{PREFIX}{name}".upper() for name in Settings.model_fields}


def settings_from_env(env: Env, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Build the settings exactly as a worker would, from ``env`` alone."""
    for key in list(os.environ):
        if key.upper().startswith(PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.upper().startswith(PREFIX) and value is not None:
            monkeypatch.setenv(key, value)
    return Settings()


def _service_at(compose: Compose, host: str) -> tuple[str, Service] | None:
    for name, service in compose.get("services", {}).items():
        if host in (name, service.get("hostname")):
            return name, service
    return None


def _container_ports(service: Service) -> set[int]:
    ports = {int(port) for port in service.get("expose", [])}
    return ports | {target for _, target in published_ports(service)}


def published_ports(service: Service) -> list[tuple[int | None, int]]:
    """(host port, container port) of each ``ports`` entry, short or long syntax."""
    result: list[tuple[int | None, int]] = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            published = entry.get("published")
            result.append((int(published) if published else None, int(entry["target"])))
            continue
        parts = str(entry).split("/", 1)[0].rsplit(":", 2)
        host = int(parts[-2]) if len(parts) >= 2 and parts[-2] else None
        result.append((host, int(parts[-1])))
    return result


def _names(value: str | None) -> set[str]:
    return {item.strip() for item in (value or "").split(",") if item.strip()}


def _mounts(service: Service) -> list[tuple[str, str]]:
    """(source, target) of each volume, short or long syntax."""
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            result.append((str(volume.get("source", "")), str(volume["target"])))
        else:
            source, _, rest = str(volume).partition(":")
            result.append((source, rest.split(":")[0]))
    return result


def _listeners(value: str | None) -> dict[str, tuple[str, int]]:
    result = {}
    for item in (value or "").split(","):
        if "://" not in item:
            continue
        name, address = item.strip().split("://", 1)
        host, _, port = address.rpartition(":")
        result[name] = (host, int(port))
    return result


# ---------------------------------------------------------------------------
# The checks. Each returns what is wrong, so a test can show it can fail.


def unknown_notify_variables(compose: Compose, base_dir: Path) -> list[str]:
    """NOTIFY_* variables (Compose or image ENV) that no settings field reads."""
    allowed = settings_env_names()
    problems = []
    for name, service in compose.get("services", {}).items():
        image = image_of(service, base_dir)
        for key, value in container_env(service, image).items():
            if not key.upper().startswith(PREFIX):
                continue
            if key not in allowed:
                problems.append(f"{name}: {key} is not a settings field")
            if value is None:
                problems.append(f"{name}: {key} has no value (taken from the host)")
    return problems


def settings_problems(
    name: str, env: Env, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """What is wrong with the settings a worker builds from ``env``."""
    try:
        settings = settings_from_env(env, monkeypatch)
    except ValidationError as exc:
        return [f"{name}: settings rejected: {exc}"]
    problems = []
    if settings.profile != "production":
        problems.append(f"{name}: profile {settings.profile!r}, not production")
    if not settings.clickhouse_dsn:
        problems.append(f"{name}: no ClickHouse DSN (would run chDB in-process)")
    if settings.broker_heartbeat_interval * 3 > settings.broker_session_timeout:
        problems.append(f"{name}: heartbeat above a third of the session timeout")
    if not settings.data_dir.is_absolute():
        problems.append(f"{name}: data dir {settings.data_dir} is relative")
    if settings.web_host in ("127.0.0.1", "localhost", "::1"):
        problems.append(f"{name}: web server bound to loopback inside a container")
    return problems


def dependency_problems(compose: Compose) -> list[str]:
    """depends_on naming undefined services, or conditions they cannot meet."""
    services = compose.get("services", {})
    problems = []
    for name, service in services.items():
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, spec in depends_on.items():
            if dep not in services:
                problems.append(f"{name}: depends on undefined service {dep!r}")
                continue
            condition = (spec or {}).get("condition", "service_started")
            target = services[dep]
            if condition == "service_healthy" and not target.get("healthcheck"):
                problems.append(f"{name}: waits for {dep} healthy; it has no check")
            if condition == "service_completed_successfully" and target.get(
                "restart", "no"
            ) not in ("no", "on-failure"):
                problems.append(f"{name}: waits for {dep} to exit; it restarts")
    return problems


def _depends_with(service: Service, dep: str, condition: str) -> bool:
    depends_on = service.get("depends_on") or {}
    if isinstance(depends_on, list):
        return dep in depends_on and condition == "service_started"
    return (depends_on.get(dep) or {}).get("condition") == condition


def broker_problems(compose: Compose, name: str, env: Env) -> list[str]:
    """The broker URL must name listeners a Kafka service advertises."""
    url = env.get(f"{PREFIX}BROKER_URL") or ""
    problems = []
    for address in filter(None, bootstrap_servers(url).split(",")):
        host, _, port_text = address.rpartition(":")
        found = _service_at(compose, host)
        if found is None:
            problems.append(f"{name}: broker host {host!r} is no service")
            continue
        kafka_name, kafka = found
        kafka_env = declared_env(kafka)
        advertised = _listeners(kafka_env.get("KAFKA_ADVERTISED_LISTENERS"))
        listening = _listeners(kafka_env.get("KAFKA_LISTENERS"))
        controllers = _names(kafka_env.get("KAFKA_CONTROLLER_LISTENER_NAMES"))
        protocols = {
            pair.split(":", 1)[0]
            for pair in _names(kafka_env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"))
        }
        matches = [
            listener
            for listener, (adv_host, adv_port) in advertised.items()
            if (adv_host, str(adv_port)) == (host, port_text)
        ]
        if not matches:
            problems.append(f"{name}: {kafka_name} advertises no listener {address}")
        for listener in matches:
            if listening.get(listener, ("", -1))[1] != int(port_text):
                problems.append(f"{name}: {kafka_name} does not listen on {address}")
            if listener in controllers:
                problems.append(f"{name}: {address} is the controller listener")
            if listener not in protocols:
                problems.append(f"{name}: listener {listener} has no protocol")
        if not _depends_with(compose["services"][name], kafka_name, "service_healthy"):
            problems.append(f"{name}: does not wait for {kafka_name} to be healthy")
    if not url:
        problems.append(f"{name}: no broker URL")
    return problems


def clickhouse_problems(compose: Compose, name: str, env: Env) -> list[str]:
    """The DSN must log in to a ClickHouse service with the account it creates."""
    dsn = urlsplit(env.get(f"{PREFIX}CLICKHOUSE_DSN") or "")
    if dsn.scheme not in ("http", "https") or not dsn.hostname:
        return [f"{name}: ClickHouse DSN is not an http(s) server URL"]
    found = _service_at(compose, dsn.hostname)
    if found is None:
        return [f"{name}: ClickHouse host {dsn.hostname!r} is no service"]
    server_name, server = found
    server_env = declared_env(server)
    problems = []
    port = dsn.port or (8443 if dsn.scheme == "https" else 8123)
    if port not in _container_ports(server):
        problems.append(f"{name}: {server_name} exposes no port {port}")
    expected = {
        "user": (unquote(dsn.username or ""), server_env.get("CLICKHOUSE_USER")),
        "password": (
            unquote(dsn.password or ""),
            server_env.get("CLICKHOUSE_PASSWORD"),
        ),
        "database": (
            unquote(dsn.path.lstrip("/")) or "default",
            server_env.get("CLICKHOUSE_DB") or "default",
        ),
    }
    for what, (in_dsn, on_server) in expected.items():
        if in_dsn != on_server:
            problems.append(f"{name}: DSN {what} differs from {server_name}'s")
    if not _depends_with(compose["services"][name], server_name, "service_healthy"):
        problems.append(f"{name}: does not wait for {server_name} to be healthy")
    return problems


def lane_problems(workers: Mapping[str, Env]) -> list[str]:
    """Each lane has exactly one worker service, running that lane only."""
    problems = []
    for lane in LANES:
        running = [
            name
            for name, env in workers.items()
            if lane in (env.get(f"{PREFIX}LANES") or "").split(",")
        ]
        if len(running) != 1:
            problems.append(f"lane {lane}: {len(running)} worker services {running}")
        for name in running:
            if workers[name].get(f"{PREFIX}LANES") != lane:
                problems.append(f"{name}: runs more than lane {lane}")
    return problems


def web_port_problems(compose: Compose, workers: Mapping[str, Env]) -> list[str]:
    """Workers serve distinct web ports, published, and no host port is reused."""
    problems = []
    web_ports: dict[str, str] = {}
    for name, env in workers.items():
        port = env.get(f"{PREFIX}WEB_PORT") or ""
        if port in web_ports:
            problems.append(f"{name}: web port {port} also {web_ports[port]}'s")
        web_ports[port] = name
        targets = {target for _, target in published_ports(compose["services"][name])}
        if not port.isdigit() or int(port) not in targets:
            problems.append(f"{name}: web port {port!r} is not published")
    host_ports: dict[int, str] = {}
    for name, service in compose.get("services", {}).items():
        for host, _ in published_ports(service):
            if host is not None and host in host_ports:
                problems.append(f"{name}: host port {host} also {host_ports[host]}'s")
            if host is not None:
                host_ports[host] = name
    return problems


def state_volume_problems(
    compose: Compose, workers: Mapping[str, Env], data_dirs: Mapping[str, Path]
) -> list[str]:
    """Each worker keeps its data dir on its own named volume (RocksDB locks it)."""
    declared = set(compose.get("volumes") or {})
    owners: dict[str, str] = {}
    problems = []
    for name in workers:
        data_dir = str(data_dirs[name])
        mounted = [
            source
            for source, target in _mounts(compose["services"][name])
            if target == data_dir
        ]
        if not mounted:
            problems.append(f"{name}: no volume at {data_dir}")
        for source in mounted:
            if source not in declared:
                problems.append(f"{name}: volume {source!r} is not declared")
            if source in owners:
                problems.append(f"{name}: shares volume {source} with {owners[source]}")
            owners[source] = name
    return problems


def topics_job_problems(
    compose: Compose, base_dir: Path, workers: Mapping[str, Env]
) -> list[str]:
    """One ``notify topics`` job creates topics exactly as the workers expect."""
    jobs = services_running(compose, base_dir, TOPICS_ARGV)
    if len(jobs) != 1:
        return [f"{len(jobs)} services run `notify topics`"]
    ((job_name, job),) = jobs.items()
    job_env = container_env(job, image_of(job, base_dir))
    problems = []
    shared = (
        "APP_ID",
        "BROKER_URL",
        "TOPIC_PARTITIONS",
        "TOPIC_REPLICATION_FACTOR",
        "TOPIC_PREFIX",
    )
    for name, env in workers.items():
        for key in (f"{PREFIX}{suffix}" for suffix in shared):
            if env.get(key) != job_env.get(key):
                problems.append(f"{name}: {key} differs from {job_name}'s")
        service = compose["services"][name]
        if not _depends_with(service, job_name, "service_completed_successfully"):
            problems.append(f"{name}: does not wait for {job_name} to complete")
    return problems


def image_problems(compose: Compose, base_dir: Path) -> list[str]:
    """Built services have a Dockerfile that installs the lock and runs a worker."""
    problems = []
    for name, service in compose.get("services", {}).items():
        path = dockerfile_path(service, base_dir)
        if path is None:
            continue
        if not path.is_file():
            problems.append(f"{name}: no Dockerfile at {path.relative_to(base_dir)}")
            continue
        image = parse_dockerfile(path)
        if tuple((image.entrypoint + image.cmd)[:2]) != WORKER_ARGV:
            problems.append(f"{name}: image runs {image.entrypoint + image.cmd}")
        if image.user.split(":")[0] in ("", "root", "0"):
            problems.append(f"{name}: image runs as root")
        if not any(
            "--require-hashes -r requirements.lock" in run for run in image.runs
        ):
            problems.append(f"{name}: image does not install the hashed lock")
    return problems


# ---------------------------------------------------------------------------
# The tests.


@pytest.fixture
def compose() -> Compose:
    """The repository's compose file, interpolated with the operator's env."""
    return load_compose(COMPOSE_FILE, OPERATOR_ENV)


def worker_envs(compose: Compose, base_dir: Path = REPO) -> dict[str, Env]:
    """Each worker service's container environment."""
    return {
        name: container_env(service, image_of(service, base_dir))
        for name, service in services_running(compose, base_dir, WORKER_ARGV).items()
    }


def test_every_notify_variable_is_a_settings_field(compose: Compose) -> None:
    """No NOTIFY_* variable in the stack is ignored by the settings."""
    assert unknown_notify_variables(compose, REPO) == []


def test_an_unknown_notify_variable_is_rejected(compose: Compose) -> None:
    """A typo'd variable name, silently ignored by the settings, fails the check."""
    mutated = copy.deepcopy(compose)
    name = next(iter(worker_envs(mutated)))
    environment = mutated["services"][name]["environment"]
    environment[f"{PREFIX}BROKER_ULR"] = environment.pop(f"{PREFIX}BROKER_URL")
    assert unknown_notify_variables(mutated, REPO) == [
        f"{name}: {PREFIX}BROKER_ULR is not a settings field"
    ]


def test_workers_build_production_settings(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each worker's environment validates into production settings."""
    workers = worker_envs(compose)
    assert workers, "no service runs `notify worker`"
    for name, env in workers.items():
        assert settings_problems(name, env, monkeypatch) == []
        settings = settings_from_env(env, monkeypatch)
        assert settings.profile == "production"


def test_every_dependency_is_defined_and_reachable(compose: Compose) -> None:
    """depends_on names defined services whose conditions can be met."""
    assert dependency_problems(compose) == []


def test_workers_reach_kafka_and_clickhouse(compose: Compose) -> None:
    """Broker URL and ClickHouse DSN name services, ports and accounts that exist."""
    for name, env in worker_envs(compose).items():
        assert broker_problems(compose, name, env) == []
        assert clickhouse_problems(compose, name, env) == []


def test_each_lane_has_one_worker_service(compose: Compose) -> None:
    """Every lane of the settings is run by exactly one worker service."""
    assert lane_problems(worker_envs(compose)) == []


def test_worker_web_ports_and_state_volumes(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers publish distinct web ports and keep state on their own volumes."""
    workers = worker_envs(compose)
    data_dirs = {
        name: settings_from_env(env, monkeypatch).data_dir
        for name, env in workers.items()
    }
    assert web_port_problems(compose, workers) == []
    assert state_volume_problems(compose, workers, data_dirs) == []


def test_topics_job_matches_the_workers(compose: Compose) -> None:
    """`notify topics` runs once, with the workers' topic settings, before them."""
    assert topics_job_problems(compose, REPO, worker_envs(compose)) == []


def test_image_runs_a_worker_from_the_lock(compose: Compose) -> None:
    """The build context's Dockerfile exists, installs the lock, runs a worker."""
    assert image_problems(compose, REPO) == []


def test_compose_requires_the_clickhouse_password() -> None:
    """No ClickHouse password is baked into the file: the operator must set one."""
    with pytest.raises(ValueError, match="CLICKHOUSE_PASSWORD"):
        load_compose(COMPOSE_FILE, {})


def _first_worker(compose: Compose) -> Service:
    return compose["services"][next(iter(worker_envs(compose)))]


def _broker_on_controller_port(compose: Compose) -> None:
    _first_worker(compose)["environment"][f"{PREFIX}BROKER_URL"] = "kafka://kafka:9093"


def _dsn_to_unknown_host(compose: Compose) -> None:
    environment = _first_worker(compose)["environment"]
    key = f"{PREFIX}CLICKHOUSE_DSN"
    environment[key] = environment[key].replace("@clickhouse:", "@clickhous:")


def _both_workers_on_one_lane(compose: Compose) -> None:
    for name in worker_envs(compose):
        compose["services"][name]["environment"][f"{PREFIX}LANES"] = LANES[0]


def _web_ports_collide(compose: Compose) -> None:
    for name in worker_envs(compose):
        service = compose["services"][name]
        service["environment"][f"{PREFIX}WEB_PORT"] = "6066"


def _unknown_variable(compose: Compose) -> None:
    _first_worker(compose)["environment"][f"{PREFIX}BROKER_DEFECTS"] = "compaction"


def _missing_dockerfile(compose: Compose) -> None:
    _first_worker(compose)["build"] = {"context": ".", "dockerfile": "Missing.file"}


def _undefined_dependency(compose: Compose) -> None:
    _first_worker(compose)["depends_on"]["zookeeper"] = {"condition": "service_healthy"}


def _topics_job_other_partitions(compose: Compose) -> None:
    for service in compose["services"].values():
        if service.get("command") == ["topics"]:
            service["environment"] = {
                **service["environment"],
                f"{PREFIX}TOPIC_PARTITIONS": "3",
            }


def _topics_job_other_prefix(compose: Compose) -> None:
    for service in compose["services"].values():
        if service.get("command") == ["topics"]:
            service["environment"] = {
                **service["environment"],
                f"{PREFIX}TOPIC_PREFIX": "staging.",
            }


def _all_problems(compose: Compose, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    workers = worker_envs(compose)
    problems = [
        *unknown_notify_variables(compose, REPO),
        *dependency_problems(compose),
        *lane_problems(workers),
        *web_port_problems(compose, workers),
        *topics_job_problems(compose, REPO, workers),
        *image_problems(compose, REPO),
    ]
    for name, env in workers.items():
        problems += settings_problems(name, env, monkeypatch)
        problems += broker_problems(compose, name, env)
        problems += clickhouse_problems(compose, name, env)
    return problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_broker_on_controller_port, "advertises no listener kafka:9093"),
        (_dsn_to_unknown_host, "ClickHouse host 'clickhous' is no service"),
        (_both_workers_on_one_lane, "worker services"),
        (_web_ports_collide, "web port 6066 also"),
        (_unknown_variable, f"{PREFIX}BROKER_DEFECTS is not a settings field"),
        (_missing_dockerfile, "no Dockerfile at Missing.file"),
        (_undefined_dependency, "depends on undefined service 'zookeeper'"),
        (_topics_job_other_partitions, f"{PREFIX}TOPIC_PARTITIONS differs"),
        (_topics_job_other_prefix, f"{PREFIX}TOPIC_PREFIX differs"),
    ],
)
def test_checks_reject_a_broken_stack(
    compose: Compose,
    monkeypatch: pytest.MonkeyPatch,
    mutate: Callable[[Compose], None],
    expected: str,
) -> None:
    """Each check fails on a stack broken the way it guards against."""
    assert _all_problems(compose, monkeypatch) == []
    mutated = copy.deepcopy(compose)
    mutate(mutated)
    problems = _all_problems(mutated, monkeypatch)
    assert any(expected in problem for problem in problems), problems


def test_compose_runs_the_embedded_broker_kafka_version(compose: Compose) -> None:
    """The stack's Kafka image is the version broker/pom.xml pins for dev and CI."""
    pom = (REPO / "broker" / "pom.xml").read_text()
    pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert pinned is not None, "broker/pom.xml pins no kafka.version"
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{pinned.group(1)}"


SINK_ARGV = ("notify", "sink")


def test_one_sink_inserts_into_the_stacks_clickhouse(
    compose: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One service runs `notify sink`, with production settings whose broker
    and ClickHouse are the stack's, the workers' app id (its group is
    `<app id>-sink`) and a health check on its own port."""
    sinks = {
        name: container_env(service, image_of(service, REPO))
        for name, service in services_running(compose, REPO, SINK_ARGV).items()
    }
    assert len(sinks) == 1, sinks
    [(name, env)] = sinks.items()
    assert settings_problems(name, env, monkeypatch) == []
    assert broker_problems(compose, name, env) == []
    assert clickhouse_problems(compose, name, env) == []
    settings = settings_from_env(env, monkeypatch)
    workers = [settings_from_env(e, monkeypatch) for e in worker_envs(compose).values()]
    assert {w.app_id for w in workers} == {settings.app_id}
    probe = " ".join(compose["services"][name]["healthcheck"]["test"])
    assert "NOTIFY_SINK_PORT" in probe and "/health" in probe


# ---------------------------------------------------------------------------
# Monitoring: Prometheus scrapes the services the stack runs, on the ports
# their settings give them, and Grafana shows it through the provisioned
# datasource.

PROMETHEUS_IMAGE = "prom/prometheus"
GRAFANA_IMAGE = "grafana/grafana-oss"
#: Where the images look when the command or environment says nothing else.
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
PROMETHEUS_LISTEN_PORT = 9090
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Monitoring:
    """The stack and the files its Prometheus and Grafana read, as loaded."""

    compose: Compose
    #: prometheus.yml, as the prometheus service mounts it.
    config: dict[str, Any]
    #: Every datasource of the provisioning directory Grafana mounts.
    datasources: list[dict[str, Any]]
    #: File name → dashboard JSON, from the directory the file provider reads.
    dashboards: dict[str, dict[str, Any]]


def _binds(service: Service, base_dir: Path) -> list[tuple[Path, str, bool]]:
    """(host path, container path, read-only) of each bind mount."""
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") != "bind":
                continue
            source, target = str(volume["source"]), str(volume["target"])
            read_only = bool(volume.get("read_only"))
        else:
            source, target, *mode = str(volume).split(":")
            read_only = "ro" in (mode[0].split(",") if mode else [])
        if source.startswith((".", "/")):
            result.append(((base_dir / source).resolve(), target, read_only))
    return result


def host_path(service: Service, base_dir: Path, container_path: str) -> Path | None:
    """The host file or directory a container path comes from, via bind mounts."""
    inside = PurePosixPath(container_path)
    for source, target, _ in _binds(service, base_dir):
        if inside == PurePosixPath(target) or PurePosixPath(target) in inside.parents:
            return source.joinpath(*inside.relative_to(target).parts)
    return None


def _image_services(compose: Compose, image: str) -> dict[str, Service]:
    return {
        name: service
        for name, service in compose.get("services", {}).items()
        if str(service.get("image", "")).split(":")[0] == image
    }


def _flag(service: Service, name: str) -> str | None:
    for arg in _argv(service.get("command")):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def prometheus_config_path(service: Service) -> str:
    """Where the prometheus service reads its configuration."""
    return _flag(service, "--config.file") or PROMETHEUS_CONFIG


def grafana_provisioning_path(service: Service) -> str:
    """Where the grafana service reads its provisioning."""
    return declared_env(service).get("GF_PATHS_PROVISIONING") or GRAFANA_PROVISIONING


def load_monitoring(compose: Compose, base_dir: Path = REPO) -> Monitoring:
    """The files the stack's prometheus and grafana services mount."""
    [prometheus] = _image_services(compose, PROMETHEUS_IMAGE).values()
    config_file = host_path(prometheus, base_dir, prometheus_config_path(prometheus))
    assert config_file is not None, "prometheus mounts no configuration"
    [grafana] = _image_services(compose, GRAFANA_IMAGE).values()
    provisioning = host_path(grafana, base_dir, grafana_provisioning_path(grafana))
    assert provisioning is not None, "grafana mounts no provisioning"
    datasources = [
        source
        for path in sorted((provisioning / "datasources").glob("*.yml"))
        for source in yaml.safe_load(path.read_text()).get("datasources", [])
    ]
    dashboards = {}
    for path in sorted((provisioning / "dashboards").glob("*.yml")):
        for provider in yaml.safe_load(path.read_text()).get("providers", []):
            directory = host_path(grafana, base_dir, provider["options"]["path"])
            for board in sorted(directory.glob("*.json")) if directory else []:
                dashboards[board.name] = json.loads(board.read_text())
    return Monitoring(
        compose, yaml.safe_load(config_file.read_text()), datasources, dashboards
    )


def _pinned(name: str, service: Service) -> list[str]:
    image = str(service.get("image", ""))
    tag = image.partition(":")[2]
    if not re.fullmatch(r"v?\d+\.\d+\.\d+", tag):
        return [f"{name}: image {image!r} is not pinned to a release"]
    return []


def prometheus_problems(compose: Compose, base_dir: Path) -> list[str]:
    """One prometheus service, pinned, mounting prometheus.yml where it reads
    it and each rule file where the config's relative path points, read-only."""
    services = _image_services(compose, PROMETHEUS_IMAGE)
    if len(services) != 1:
        return [f"{len(services)} prometheus services"]
    [(name, service)] = services.items()
    problems = _pinned(name, service)
    expected = base_dir / "deploy" / "prometheus"
    config_path = prometheus_config_path(service)
    files = {config_path: expected / "prometheus.yml"}
    config = yaml.safe_load(files[config_path].read_text())
    for rule_file in config.get("rule_files", []):
        inside = PurePosixPath(config_path).parent / rule_file
        files[str(inside)] = expected / rule_file
    binds = {target: (source, ro) for source, target, ro in _binds(service, base_dir)}
    for inside, wanted in files.items():
        found, read_only = binds.get(inside, (None, False))
        if found != wanted.resolve():
            problems.append(f"{name}: {wanted.name} is not mounted at {inside}")
        elif not read_only:
            problems.append(f"{name}: {inside} is mounted writable")
    return problems


def scrape_target_problems(
    compose: Compose, base_dir: Path, config: dict[str, Any]
) -> list[str]:
    """Each target names a worker or sink service and the port its settings
    give it, bound beyond loopback; every worker and the sink are scraped, and
    Prometheus starts after them."""
    workers = services_running(compose, base_dir, WORKER_ARGV)
    sinks = services_running(compose, base_dir, SINK_ARGV)
    port_variable = {name: f"{PREFIX}WEB_PORT" for name in workers}
    port_variable |= {name: f"{PREFIX}SINK_PORT" for name in sinks}
    problems = []
    scraped = set()
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            for target in static.get("targets", []):
                host, _, port = str(target).rpartition(":")
                found = _service_at(compose, host)
                if found is None:
                    problems.append(f"{job['job_name']}: {host!r} is no service")
                    continue
                name, service = found
                scraped.add(name)
                if name not in port_variable:
                    problems.append(f"{job['job_name']}: {name} is no worker or sink")
                    continue
                env = container_env(service, image_of(service, base_dir))
                serves = env.get(port_variable[name])
                if serves != port:
                    problems.append(
                        f"{job['job_name']}: scrapes {name}:{port}, but "
                        f"{port_variable[name]} is {serves}"
                    )
                if (env.get(f"{PREFIX}WEB_HOST") or "127.0.0.1") in LOOPBACK:
                    problems.append(
                        f"{name}: binds loopback, Prometheus cannot reach it"
                    )
    for name in port_variable.keys() - scraped:
        problems.append(f"{name} is not scraped")
    for prometheus_name, prometheus in _image_services(
        compose, PROMETHEUS_IMAGE
    ).items():
        for name in sorted(scraped & workers.keys()):
            if not _depends_with(prometheus, name, "service_started"):
                problems.append(f"{prometheus_name}: does not start after {name}")
    return problems


def _datasource_uids(node: Any) -> set[str]:
    """Every ``datasource.uid`` a dashboard (or part of one) names."""
    found = set()
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and source.get("type") != "grafana":
            found.add(str(source.get("uid")))
        elif isinstance(source, str):  # the older form: a datasource's name
            found.add(source)
        for value in node.values():
            found |= _datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            found |= _datasource_uids(item)
    return found


def grafana_problems(
    compose: Compose,
    base_dir: Path,
    datasources: list[dict[str, Any]],
    dashboards: dict[str, dict[str, Any]],
) -> list[str]:
    """One grafana service, pinned, anonymous access off, an admin password;
    provisioning and dashboards mounted read-only; the dashboards name only
    the provisioned datasource, which is the stack's Prometheus."""
    services = _image_services(compose, GRAFANA_IMAGE)
    if len(services) != 1:
        return [f"{len(services)} grafana services"]
    [(name, service)] = services.items()
    problems = _pinned(name, service)
    env = declared_env(service)
    if (env.get("GF_AUTH_ANONYMOUS_ENABLED") or "").lower() != "false":
        problems.append(f"{name}: anonymous access is not turned off")
    if not env.get("GF_SECURITY_ADMIN_PASSWORD"):
        problems.append(f"{name}: no admin password")
    binds = {target: (source, ro) for source, target, ro in _binds(service, base_dir)}
    provisioning = grafana_provisioning_path(service)
    expected = base_dir / "deploy" / "grafana"
    if binds.get(provisioning) != ((expected / "provisioning").resolve(), True):
        problems.append(f"{name}: provisioning is not mounted read-only at it")
    if not dashboards:
        problems.append(f"{name}: its file provider finds no dashboard")
    for board in dashboards:
        if not (expected / "dashboards" / board).is_file():
            problems.append(f"{name}: dashboard {board} is not the repository's")
    for target, (source, read_only) in binds.items():
        if source == (expected / "dashboards").resolve() and not read_only:
            problems.append(f"{name}: {target} is mounted writable")
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home and PurePosixPath(home).name not in dashboards:
        problems.append(f"{name}: home dashboard {home} is not provisioned")
    problems += _datasource_problems(compose, name, datasources, dashboards)
    return problems


def _datasource_problems(
    compose: Compose,
    name: str,
    datasources: list[dict[str, Any]],
    dashboards: dict[str, dict[str, Any]],
) -> list[str]:
    problems = []
    uids = {str(source.get("uid")) for source in datasources}
    for source in datasources:
        url = urlsplit(str(source.get("url", "")))
        found = _service_at(compose, url.hostname or "")
        if source.get("type") != "prometheus" or found is None:
            problems.append(f"{name}: datasource {source.get('uid')} is no service")
            continue
        server_name, server = found
        image = str(server.get("image", "")).split(":")[0]
        listen = _flag(server, "--web.listen-address") or f":{PROMETHEUS_LISTEN_PORT}"
        if image != PROMETHEUS_IMAGE or url.port != int(listen.rpartition(":")[2]):
            problems.append(f"{name}: datasource URL {url.geturl()} is no Prometheus")
        elif not _depends_with(
            compose["services"][name], server_name, "service_healthy"
        ):
            problems.append(f"{name}: does not wait for {server_name} to be healthy")
    for board, dashboard in dashboards.items():
        for uid in sorted(_datasource_uids(dashboard) - uids):
            problems.append(f"{name}: {board} names datasource {uid}, not provisioned")
    return problems


@pytest.fixture
def monitoring(compose: Compose) -> Monitoring:
    """The stack with the monitoring files its services mount."""
    return load_monitoring(compose)


def _monitoring_problems(stack: Monitoring) -> list[str]:
    return [
        *prometheus_problems(stack.compose, REPO),
        *scrape_target_problems(stack.compose, REPO, stack.config),
        *grafana_problems(stack.compose, REPO, stack.datasources, stack.dashboards),
    ]


def test_prometheus_mounts_its_config_and_rules(monitoring: Monitoring) -> None:
    """prometheus.yml where Prometheus reads it, the alert rules where its
    relative rule_files path points inside the container, both read-only."""
    assert prometheus_problems(monitoring.compose, REPO) == []
    assert monitoring.config["rule_files"], "prometheus.yml loads no rules"


def test_prometheus_scrapes_each_worker_and_the_sink_on_their_ports(
    monitoring: Monitoring,
) -> None:
    """Every target is a worker (NOTIFY_WEB_PORT) or the sink
    (NOTIFY_SINK_PORT) on the port its environment gives it, and none is
    left out."""
    targets = [
        target
        for job in monitoring.config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    assert len(targets) == 3, targets
    assert scrape_target_problems(monitoring.compose, REPO, monitoring.config) == []


def test_grafana_shows_the_dashboard_through_the_provisioned_datasource(
    monitoring: Monitoring,
) -> None:
    """Provisioning and dashboards mounted read-only; each dashboard's
    datasource uid is the provisioned one, which is the stack's Prometheus."""
    assert [source["uid"] for source in monitoring.datasources] == ["notify-prometheus"]
    assert "notify-pipeline.json" in monitoring.dashboards
    assert _datasource_uids(monitoring.dashboards["notify-pipeline.json"]) == {
        "notify-prometheus"
    }
    assert (
        grafana_problems(
            monitoring.compose, REPO, monitoring.datasources, monitoring.dashboards
        )
        == []
    )


def test_compose_requires_the_grafana_admin_password() -> None:
    """No Grafana password is baked into the file: the operator must set one."""
    env = {k: v for k, v in OPERATOR_ENV.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    with pytest.raises(ValueError, match="GRAFANA_ADMIN_PASSWORD"):
        load_compose(COMPOSE_FILE, env)


def _worker_serves_another_port(stack: Monitoring) -> None:
    environment = stack.compose["services"]["worker-critical"]["environment"]
    environment[f"{PREFIX}WEB_PORT"] = "6068"


def _sink_on_loopback(stack: Monitoring) -> None:
    environment = stack.compose["services"]["sink"]["environment"]
    environment[f"{PREFIX}WEB_HOST"] = "127.0.0.1"


def _worker_left_out(stack: Monitoring) -> None:
    for job in stack.config["scrape_configs"]:
        for static in job["static_configs"]:
            static["targets"] = [
                t for t in static["targets"] if not t.startswith("worker-bulk:")
            ]


def _target_no_service(stack: Monitoring) -> None:
    stack.config["scrape_configs"][0]["static_configs"][0]["targets"][0] = (
        "worker-standard:6066"
    )


def _rules_not_mounted(stack: Monitoring) -> None:
    service = stack.compose["services"]["prometheus"]
    service["volumes"] = [v for v in service["volumes"] if "alerts.yml" not in v]


def _config_writable(stack: Monitoring) -> None:
    service = stack.compose["services"]["prometheus"]
    service["volumes"] = [v.removesuffix(":ro") for v in service["volumes"]]


def _prometheus_unpinned(stack: Monitoring) -> None:
    stack.compose["services"]["prometheus"]["image"] = f"{PROMETHEUS_IMAGE}:latest"


def _dashboard_other_datasource(stack: Monitoring) -> None:
    panel = stack.dashboards["notify-pipeline.json"]["panels"][0]
    panel["targets"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C"}


def _datasource_to_a_worker(stack: Monitoring) -> None:
    stack.datasources[0]["url"] = "http://worker-bulk:6067"


def _grafana_anonymous(stack: Monitoring) -> None:
    environment = stack.compose["services"]["grafana"]["environment"]
    environment["GF_AUTH_ANONYMOUS_ENABLED"] = "true"


def _provisioning_elsewhere(stack: Monitoring) -> None:
    service = stack.compose["services"]["grafana"]
    service["volumes"] = [
        v.replace(":/etc/grafana/provisioning:", ":/etc/grafana/provision:")
        for v in service["volumes"]
    ]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_worker_serves_another_port, "scrapes worker-critical:6066, but"),
        (_sink_on_loopback, "sink: binds loopback"),
        (_worker_left_out, "worker-bulk is not scraped"),
        (_target_no_service, "'worker-standard' is no service"),
        (_rules_not_mounted, "alerts.yml is not mounted at /etc/prometheus/alerts.yml"),
        (_config_writable, "is mounted writable"),
        (_prometheus_unpinned, "is not pinned to a release"),
        (_dashboard_other_datasource, "names datasource P1809F7CD0C"),
        (_datasource_to_a_worker, "is no Prometheus"),
        (_grafana_anonymous, "anonymous access is not turned off"),
        (_provisioning_elsewhere, "provisioning is not mounted"),
    ],
)
def test_monitoring_checks_reject_a_broken_stack(
    monitoring: Monitoring, mutate: Callable[[Monitoring], None], expected: str
) -> None:
    """Each monitoring check fails on a stack broken the way it guards against."""
    assert _monitoring_problems(monitoring) == []
    mutated = copy.deepcopy(monitoring)
    mutate(mutated)
    problems = _monitoring_problems(mutated)
    assert any(expected in problem for problem in problems), problems
