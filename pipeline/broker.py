"""Start and stop the embedded broker: Apache Kafka in KRaft mode, one node
or a cluster of several (``EmbeddedCluster``).

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
from typing import Self

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
    # "Whoever" is the thread that started it: a thread that starts a broker
    # must outlive it.
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


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` free ports on ``host``, no two the same (the kernel may hand
    a just-released port out again)."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port(host)) not in ports:
            ports.append(port)
    return ports


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
    *,
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    node_id: int = 1,
    voters: str | None = None,
    replicas: int = 1,
) -> dict[str, str]:
    """One node's configuration: broker and controller together.

    Alone (``replicas`` 1) every internal topic has one replica and a min ISR
    of one. In a cluster of ``replicas`` nodes (``voters`` names every
    controller) every topic, internal or not, defaults to ``replicas``
    replicas and ``min.insync.replicas`` of ``replicas - 1``: a write with
    ``acks=all`` survives the loss of any one node, and no node is elected
    leader without the records it lacks. A group's first rebalance does not
    wait for more members; sessions may be as short as one second, so the dev
    profile's short session timeout is accepted.
    """
    min_isr = str(max(1, replicas - 1))
    return {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        "controller.quorum.voters": voters or f"{node_id}@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(AUTO_CREATE_PARTITIONS),
        "default.replication.factor": str(replicas),
        "min.insync.replicas": min_isr,
        "unclean.leader.election.enable": "false",
        "offsets.topic.replication.factor": str(replicas),
        # Fewer than Kafka's 50: each is a log the first group join waits for.
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": min_isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": min_isr,
        "group.initial.rebalance.delay.ms": "0",
        # A killed node's partitions move after 3 s without its heartbeat
        # (Kafka's 9 s is for networks slower than loopback).
        "broker.heartbeat.interval.ms": "500",
        "broker.session.timeout.ms": "3000",
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
    brokers: int = 1,
) -> None:
    """Block until the broker at ``bootstrap`` answers a metadata request
    naming at least ``brokers`` brokers.

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
            if len(metadata.brokers) >= brokers:
                return
            last_error = f"{len(metadata.brokers)} of {brokers} brokers up"
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_error = repr(exc)
        time.sleep(0.05)
    raise BrokerStartError(f"broker at {bootstrap} did not answer: {last_error}")


class _Started:
    """``with`` starts it and stops it, whatever happens inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class EmbeddedBroker(_Started):
    """One Apache Kafka node (KRaft, combined roles) on loopback ports.

    ``data_dir`` holds the broker's ``log.dirs`` (``kafka/``), its config and
    log; it is wiped and formatted anew at each start. Without one, a
    temporary directory is used and removed at stop. As a member of an
    ``EmbeddedCluster`` it gets its ``node_id``, the quorum's ``voters``, the
    cluster's id and replica count from the cluster.
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
        node_id: int = 1,
        controller_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        # The kernel may hand a just-released port out again: never the same.
        self.controller_port = controller_port or free_port(host)
        while self.controller_port == self.port:
            self.controller_port = free_port(host)
        self.data_dir = data_dir
        self.log_path = log_path
        self.heap = heap
        self.libs = libs
        self.node_id = node_id
        self.voters: str | None = None
        self.replicas = 1
        self.started_in: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._temporary: Path | None = None
        self._workdir_path: Path | None = None

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

    @property
    def running(self) -> bool:
        """Whether its JVM is alive."""
        return self._process is not None and self._process.poll() is None

    def _workdir(self) -> Path:
        if self._workdir_path is None:
            if self.data_dir is not None:
                self._workdir_path = self.data_dir
            else:
                self._temporary = Path(tempfile.mkdtemp(prefix="notify-kafka-"))
                self._workdir_path = self._temporary
        return self._workdir_path

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

    @staticmethod
    def _checked_java() -> str:
        java = java_binary()
        if (major := java_major_version(java)) < MIN_JAVA:
            raise BrokerStartError(
                f"{java} is Java {major}; the Kafka broker needs Java {MIN_JAVA}+"
            )
        return java

    @property
    def _log_path(self) -> Path:
        return self.log_path or self._workdir() / "broker.log"

    def properties(self, log_dir: Path) -> dict[str, str]:
        """This node's ``server.properties``."""
        return server_properties(
            host=self.host,
            port=self.port,
            controller_port=self.controller_port,
            log_dir=log_dir,
            node_id=self.node_id,
            voters=self.voters,
            replicas=self.replicas,
        )

    def format(self, cluster_id: str, timeout: float = 60.0) -> None:
        """Write the config and format a fresh, empty ``log.dirs``."""
        java = self._checked_java()
        workdir = self._workdir()
        log_dir = workdir / "kafka"
        shutil.rmtree(log_dir, ignore_errors=True)
        log_dir.mkdir(parents=True)
        config = workdir / "server.properties"
        props = self.properties(log_dir)
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        log4j = workdir / "log4j2.properties"
        log4j.write_text(LOG4J2_PROPERTIES)
        formatted = subprocess.run(  # noqa: S603
            self._java(
                java,
                log4j,
                "kafka.tools.StorageTool",
                "format",
                "--cluster-id",
                cluster_id,
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

    def launch(self) -> None:
        """Start the JVM on the formatted (or previously used) ``log.dirs``."""
        java = self._checked_java()
        workdir = self._workdir()
        log_path = self._log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as output:
            self._process = subprocess.Popen(  # noqa: S603
                self._java(
                    java,
                    workdir / "log4j2.properties",
                    "kafka.Kafka",
                    str(workdir / "server.properties"),
                    heap=self.heap,
                ),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a shell reaches us, not it
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self, timeout: float, brokers: int = 1) -> None:
        """Until this node answers a metadata request naming ``brokers``
        brokers; stopped, with the cause from its log, if it cannot."""
        process = self._process
        if process is None:
            raise BrokerStartError("the node was not launched")
        try:
            wait_for_metadata(
                self.bootstrap,
                timeout,
                alive=lambda: process.poll() is None,
                brokers=brokers,
            )
        except BrokerStartError:
            code = process.poll()
            # Read before stop(): a temporary work dir goes with it.
            errors = _error_lines(self._log_path)
            self.stop()
            if code is not None:
                raise BrokerStartError(
                    f"broker exited with {code}; from its log:\n{errors}"
                ) from None
            raise

    def start(self, timeout: float = 60.0) -> EmbeddedBroker:
        """Format a fresh log dir, start the broker, wait until it answers."""
        started = time.monotonic()
        self.format(new_cluster_id(), timeout)
        self.launch()
        self.wait_ready(max(1.0, started + timeout - time.monotonic()))
        self.started_in = time.monotonic() - started
        log.info(
            "Kafka broker listening on %s (pid %s, started in %.1f s)",
            self.bootstrap,
            self.pid,
            self.started_in,
        )
        return self

    def kill(self) -> None:
        """SIGKILL the JVM, as a machine that loses power: no clean shutdown.
        Its ``log.dirs`` stay; ``restart`` brings the node back on them."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(30)

    def ask_to_stop(self) -> None:
        """SIGTERM without waiting: the node starts its clean shutdown."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()

    def restart(self, timeout: float = 60.0, brokers: int = 1) -> None:
        """Start the node again on the ``log.dirs`` it had (after ``kill``)."""
        self.launch()
        self.wait_ready(timeout, brokers)

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
            self._workdir_path = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): requests hang as on a stuck broker."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused broker (SIGCONT)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)


class EmbeddedCluster(_Started):
    """``size`` Kafka nodes on loopback, every one broker and controller: the
    production shape on one machine.

    Every topic gets ``size`` replicas and ``min.insync.replicas`` of
    ``size - 1`` by default (see ``server_properties``). ``kill(n)`` and
    ``restart(n)`` take one node down (SIGKILL) and bring it back on its own
    data, to show that nothing acknowledged is lost with a node. Each node
    lives under ``data_dir/node-<n>``; a temporary directory without one.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        host: str = "127.0.0.1",
        data_dir: Path | None = None,
        heap: str = DEFAULT_HEAP,
        libs: Path = BROKER_LIBS,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        root = data_dir or Path(tempfile.mkdtemp(prefix="notify-kafka-"))
        self._temporary = None if data_dir else root
        ports = iter(free_ports(2 * size, host))
        self.nodes = [
            EmbeddedBroker(
                port=next(ports),
                controller_port=next(ports),
                host=host,
                data_dir=root / f"node-{n}",
                heap=heap,
                libs=libs,
                node_id=n,
            )
            for n in range(1, size + 1)
        ]
        voters = ",".join(
            f"{node.node_id}@{host}:{node.controller_port}" for node in self.nodes
        )
        for node in self.nodes:
            node.voters, node.replicas = voters, size
        self.started_in: float | None = None

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated, for clients."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def url(self) -> str:
        """The cluster in the form ``NOTIFY_BROKER_URL`` takes."""
        return "kafka://" + ";".join(node.bootstrap for node in self.nodes)

    def start(self, timeout: float = 90.0) -> EmbeddedCluster:
        """Format every node with one cluster id, start them all (a quorum
        needs a majority up to elect), wait until each sees every broker."""
        started = time.monotonic()
        cluster_id = new_cluster_id()
        try:
            for node in self.nodes:
                node.format(cluster_id, timeout)
            for node in self.nodes:
                node.launch()
            for node in self.nodes:
                left = max(1.0, started + timeout - time.monotonic())
                node.wait_ready(left, brokers=len(self.nodes))
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started
        log.info(
            "Kafka cluster of %d nodes on %s (started in %.1f s)",
            len(self.nodes),
            self.bootstrap,
            self.started_in,
        )
        return self

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (0-based)."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 90.0) -> None:
        """Bring node ``index`` back on its data; wait until the cluster has
        every broker again."""
        self.nodes[index].restart(timeout, brokers=len(self.nodes))

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every node; remove a temporary data dir.

        All are told at once: one by one, the last ones would wait for a
        quorum of controllers that is already gone."""
        for node in self.nodes:
            node.resume()
            node.ask_to_stop()
        for node in self.nodes:
            node.stop(timeout)
        if self._temporary is not None:
            shutil.rmtree(self._temporary, ignore_errors=True)
            self._temporary = None


def _error_lines(log_path: Path, most: int = 10) -> str:
    """The first ERROR lines of a broker log (the cause, not the shutdown)."""
    lines = log_path.read_text(errors="replace").splitlines()
    found = [line for line in lines if "] ERROR " in line or "Exception" in line]
    return "\n".join(found[:most] or lines[-most:])
