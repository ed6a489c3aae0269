"""Session fixtures: the broker under test and worker processes that always stop."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from pipeline.broker import EmbeddedBroker
from tests.support import BrokerUnderTest, WorkerProcess, unique


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerUnderTest]:
    """The embedded broker on a free loopback port, or ``NOTIFY_TEST_BROKER_URL``."""
    external = os.environ.get("NOTIFY_TEST_BROKER_URL")
    if external:
        yield BrokerUnderTest.external(external)
        return
    log_path = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log_path) as running:
        yield BrokerUnderTest.embedded_at(running.url, running.bootstrap)


# The machine is shared with worker processes and benchmarks: a slow draw is
# load, not a property of the code under test.
settings.register_profile(
    "notify", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("notify")

WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def start_worker(broker: BrokerUnderTest, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start real worker processes against the test broker; all stop afterwards."""
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
            "NOTIFY_BROKER_DEFECTS": ",".join(sorted(broker.defects)),
            "NOTIFY_APP_ID": app_id or unique("app"),
            "NOTIFY_DATA_DIR": str(data_dir or tmp_path / name),
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
