"""The embedded broker's launcher: a broker that cannot start says why, at once."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pipeline.broker import BrokerStartError, EmbeddedBroker

pytestmark = pytest.mark.integration


def test_a_taken_port_fails_the_start_with_the_brokers_own_error(
    tmp_path: Path,
) -> None:
    """Something else listens on the port: the JVM exits, and start() raises
    with the cause from the broker's log instead of waiting out its timeout
    (the listener there accepts connections, so it looks up for a while)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = EmbeddedBroker(port=taken.getsockname()[1], data_dir=tmp_path)
        with pytest.raises(BrokerStartError) as raised:
            broker.start(timeout=120)
    assert "broker exited" in str(raised.value)
    assert "Unable to start acceptor" in str(raised.value)
    assert broker.pid is None  # nothing left running
