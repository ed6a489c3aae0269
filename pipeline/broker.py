"""Start and stop the embedded broker: Apache Kafka, one node in KRaft mode.

Used by ``make run``, ``notify broker``, the tests' session fixture and the
benchmarks. The jars come from Maven Central, pinned in ``broker/pom.xml`` and
resolved by ``make`` into ``broker/lib``. One JVM runs the broker and its
controller together (KRaft combined mode) on two free loopback ports, with a
fresh ``log.dirs`` formatted by Kafka's own storage tool each start.
"""

from __future__ import annotations

import base64
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess  # noqa: S404 - the broker is a JVM we start ourselves
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

#: Where ``make`` puts the broker's jars (``broker/pom.xml`` pins them).
BROKER_LIBS = Path(__file__).resolve().parents[1] / "broker" / "lib"
#: The oldest Java a Kafka 4 broker runs on.
MIN_JAVA = 17
#: A bounded heap: plenty for one dev node, and the machine keeps the rest.
DEFAULT_HEAP = "512m"
#: Partitions of a topic a client creates by producing to it (as the app's
#: ``NOTIFY_TOPIC_PARTITIONS`` default, so a kcat-made topic matches).
AUTO_CREATE_PARTITIONS = 4

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
    """The broker could not be started, or never answered metadata requests."""


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the kernel for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def java_binary() -> str:
    """The ``java`` to run the broker with: ``$JAVA_HOME/bin/java``, else PATH's."""
    home = os.environ.get("JAVA_HOME")
    candidate = Path(home) / "bin" / "java" if home else None
    if candidate is not None and candidate.is_file():
        return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise BrokerStartError(
            f"no java found: the embedded Kafka broker needs Java {MIN_JAVA}+ "
            "(set JAVA_HOME or put java on PATH)"
        )
    return found


def java_major_version(java: str) -> int:
    """The major version of ``java`` (17 for ``openjdk version "17.0.15"``)."""
    output = subprocess.run(  # noqa: S603
        [java, "-version"], capture_output=True, text=True, check=False, timeout=30
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        raise BrokerStartError(f"cannot read the version of {java}: {output!r}")
    major = int(match.group(1))
    # Java 8 and older call themselves "1.8".
    return int(match.group(2) or 0) if major == 1 else major


def broker_classpath(libs: Path = BROKER_LIBS) -> str:
    """The broker's classpath, or a clear error if ``make`` has not resolved it."""
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise BrokerStartError(
            f"the Kafka broker's jars are not in {libs}: run `make install` "
            "(it resolves broker/pom.xml with Maven)"
        )
    return str(libs / "*")


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one starting with "-": the storage tool's command line would read it
    as an option and fail (one start in 64). Kafka's own Uuid.randomUuid
    draws again for the same reason.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(
    *, host: str, port: int, controller_port: int, log_dir: Path
) -> dict[str, str]:
    """One node's configuration: broker and controller, dev settings for one node.

    Every internal topic has one replica and a min ISR of one; a group's first
    rebalance does not wait for more members; sessions may be as short as one
    second, so the dev profile's short session timeout is accepted.
    """
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(AUTO_CREATE_PARTITIONS),
        "offsets.topic.replication.factor": "1",
        # Fewer than Kafka's 50: each is a log the first group join waits for.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        # The cleaner looks for compactable logs every second, not every 15 s.
        "log.cleaner.backoff.ms": "1000",
    }


LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# Every config object logs all its values at INFO: pages per client.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def wait_for_metadata(
    bootstrap: str,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """Block until the broker at ``bootstrap`` answers a metadata request.

    ``alive`` says whether the broker process still runs: one that exited
    fails the wait at once instead of at the timeout.
    """
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
            if not alive():
                raise BrokerStartError(f"broker exited: {last_error}") from None
            time.sleep(0.05)
    admin = AdminClient(
        # log_level 3: "not up yet" is expected here, not worth a warning.
        {"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000, "log_level": 3}
    )
    while time.monotonic() < deadline:
        if not alive():
            raise BrokerStartError(f"broker exited: {last_error}")
        try:
            metadata = admin.list_topics(timeout=1.0)
            if metadata.brokers:
                return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = repr(exc)
        time.sleep(0.05)
    raise BrokerStartError(f"broker at {bootstrap} did not answer: {last_error}")


class EmbeddedBroker:
    """One Apache Kafka node (KRaft, combined roles) on loopback ports.

    ``data_dir`` holds the broker's ``log.dirs`` (``kafka/``), its config and
    log; it is wiped and formatted anew at each start. Without one, a
    temporary directory is used and removed at stop.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        data_dir: Path | None = None,
        log_path: Path | None = None,
        heap: str = DEFAULT_HEAP,
        libs: Path = BROKER_LIBS,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # The kernel may hand a just-released port out again: never the same.
        self.controller_port = free_port(host)
        while self.controller_port == self.port:
            self.controller_port = free_port(host)
        self.data_dir = data_dir
        self.log_path = log_path
        self.heap = heap
        self.libs = libs
        self.started_in: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._temporary: Path | None = None

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
        """The broker's (the JVM's) process id while it runs."""
        return self._process.pid if self._process else None

    def _workdir(self) -> Path:
        if self.data_dir is not None:
            return self.data_dir
        self._temporary = Path(tempfile.mkdtemp(prefix="notify-kafka-"))
        return self._temporary

    def _java(
        self, java: str, log4j: Path, main: str, *args: str, heap: str
    ) -> list[str]:
        return [
            java,
            f"-Xmx{heap}",
            # Kafka's own start script's collector settings.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            broker_classpath(self.libs),
            main,
            *args,
        ]

    def start(self, timeout: float = 60.0) -> EmbeddedBroker:
        """Format a fresh log dir, start the broker, wait until it answers."""
        started = time.monotonic()
        java = java_binary()
        if (major := java_major_version(java)) < MIN_JAVA:
            raise BrokerStartError(
                f"{java} is Java {major}; the Kafka broker needs Java {MIN_JAVA}+"
            )
        workdir = self._workdir()
        log_dir = workdir / "kafka"
        shutil.rmtree(log_dir, ignore_errors=True)
        log_dir.mkdir(parents=True)
        config = workdir / "server.properties"
        props = server_properties(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dir=log_dir,
        )
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = workdir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        log_path = self.log_path or workdir / "broker.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        formatted = subprocess.run(  # noqa: S603
            self._java(
                java,
                log4j,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                new_cluster_id(),
                "--config",
                str(config),
                heap="256m",
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if formatted.returncode != 0:
            self._cleanup()
            raise BrokerStartError(
                f"formatting {log_dir} failed ({formatted.returncode}): "
                f"{formatted.stdout[-2000:]}{formatted.stderr[-2000:]}"
            )
        with log_path.open("ab") as output:
            self._process = subprocess.Popen(  # noqa: S603
                self._java(java, log4j, "kafka.Kafka", str(config), heap=self.heap),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a shell reaches us, not it
                preexec_fn=_die_with_parent,
            )
        try:
            left = max(1.0, started + timeout - time.monotonic())
            process = self._process
            wait_for_metadata(
                self.bootstrap, left, alive=lambda: process.poll() is None
            )
        except BrokerStartError:
            code = self._process.poll()
            # Read before stop(): a temporary work dir goes with it.
            errors = _error_lines(log_path)
            self.stop()
            if code is not None:
                raise BrokerStartError(
                    f"broker exited with {code}; from its log:\n{errors}"
                ) from None
            raise
        self.started_in = time.monotonic() - started
        log.info(
            "Kafka broker listening on %s (pid %s, started in %.1f s)",
            self.bootstrap,
            self.pid,
            self.started_in,
        )
        return self

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker: SIGTERM (a clean shutdown), SIGKILL if it lingers."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                # A frozen broker (pause) cannot act on SIGTERM.
                process.send_signal(signal.SIGCONT)
            terminate(process, timeout)
        self._cleanup()

    def _cleanup(self) -> None:
        temporary, self._temporary = self._temporary, None
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)

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


def _error_lines(log_path: Path, most: int = 10) -> str:
    """The first ERROR lines of a broker log (the cause, not the shutdown)."""
    lines = log_path.read_text(errors="replace").splitlines()
    found = [line for line in lines if "] ERROR " in line or "Exception" in line]
    return "\n".join(found[:most] or lines[-most:])
