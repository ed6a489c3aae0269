"""Session fixtures: the broker under test and worker processes that always stop."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from pipeline.broker import EmbeddedBroker
from tests.support import BrokerUnderTest, Topics, WorkerProcess, unique


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerUnderTest]:
    """The embedded broker on a free loopback port, or ``NOTIFY_TEST_BROKER_URL``."""
    external = os.environ.get("NOTIFY_TEST_BROKER_URL")
    if external:
        yield BrokerUnderTest.external(external)
        return
    workdir = tmp_path_factory.mktemp("broker")
    with EmbeddedBroker(data_dir=workdir, log_path=workdir / "broker.log") as running:
        yield BrokerUnderTest.embedded_at(running.url, running.bootstrap)


# The machine is shared with worker processes and benchmarks: a slow draw is
# load, not a property of the code under test.
settings.register_profile(
    "notify", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("notify")

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def topics() -> Topics:
    """This test's pipeline topic names, under a prefix no other test uses."""
    return Topics.fresh()


@pytest.fixture
def start_worker(
    broker: BrokerUnderTest, tmp_path: Path, topics: Topics
) -> Iterator[WorkerFactory]:
    """Start real worker processes against the test broker; all stop afterwards.

    Every worker of a test shares the test's ``topics`` prefix unless it is
    given another (``notify_topic_prefix=``).
    """
    started: list[WorkerProcess] = []

    def start(
        app: str = "pipeline.app",
        *,
        app_id: str | None = None,
        data_dir: Path | None = None,
        name: str = "worker",
        web_port: int | None = None,
        **env: str,
    ) -> WorkerProcess:
        settings_env = {
            "NOTIFY_BROKER_URL": broker.url,
            "NOTIFY_APP_ID": app_id or unique("app"),
            "NOTIFY_DATA_DIR": str(data_dir or tmp_path / name),
            "NOTIFY_TOPIC_PREFIX": topics.prefix,
            **{key.upper(): value for key, value in env.items()},
        }
        worker = WorkerProcess(
            app=app, env=settings_env, log_path=tmp_path / f"{name}.log"
        )
        if web_port is not None:
            worker.web_port = web_port
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop()
