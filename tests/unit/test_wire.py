"""The providers' bare HTTP/1.1 client against a server whose every byte the
test writes: lengths, chunks, closes, stale connections, timeouts, TLS."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.emulators.ca import TestCA, server_ssl_context
from pipeline.providers.http import client_ssl_context
from pipeline.providers.wire import HttpClient, ProtocolError


@dataclass
class Server:
    """Answers each request with the next scripted reply; ``None`` as a reply
    closes the connection without a word. Counts connections."""

    replies: list[bytes | None] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    close_after: bool = False
    port: int = 0

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                reply = self.replies.pop(0) if self.replies else ok(b"{}")
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    listening = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = listening.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        listening.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    http = HttpClient(timeout=2.0, headers={"Authorization": "Bearer t"})
    try:
        yield http
    finally:
        await http.close()


def url(server: Server, path: str = "/v1/send") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_a_post_sends_its_body_and_headers_and_reads_the_answer(
    server: Server, client: HttpClient
) -> None:
    server.replies.append(ok(b'{"name":"m1"}', b"X-Message-Id: abc"))
    status, headers, body = await client.post(
        url(server, "/v1/send?x=1"), b'{"a":1}', {"Content-Type": "application/json"}
    )
    assert (status, body) == (200, b'{"name":"m1"}')
    assert headers["x-message-id"] == "abc"  # case-insensitive
    [request] = server.requests
    assert request.startswith(b"POST /v1/send?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
    assert b"Authorization: Bearer t\r\n" in request
    assert b"Content-Type: application/json\r\n" in request
    assert request.endswith(b'\r\n\r\n{"a":1}')


async def test_calls_reuse_one_connection(server: Server, client: HttpClient) -> None:
    for n in range(5):
        server.replies.append(ok(b"%d" % n))
    answers = [(await client.post(url(server), b"x"))[2] for _ in range(5)]
    assert answers == [b"0", b"1", b"2", b"3", b"4"]
    assert server.connections == 1


async def test_concurrent_calls_each_get_their_own_answer(
    server: Server, client: HttpClient
) -> None:
    server.replies.extend(ok(b"a") for _ in range(20))
    results = await asyncio.gather(*(client.post(url(server), b"x") for _ in range(20)))
    assert all(status == 200 for status, _, _ in results)
    assert server.connections <= 20


async def test_a_chunked_answer_is_joined(server: Server, client: HttpClient) -> None:
    server.replies.append(
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: y\r\n\r\n"
    )
    server.replies.append(ok(b"next"))
    assert (await client.post(url(server), b"x"))[::2] == (202, b"hello, world")
    assert (await client.post(url(server), b"x"))[2] == b"next"  # same connection
    assert server.connections == 1


async def test_an_answer_without_length_runs_to_the_close(
    server: Server, client: HttpClient
) -> None:
    server.close_after = True
    server.replies.append(b"HTTP/1.1 500 Internal Server Error\r\n\r\noops")
    status, _, body = await client.post(url(server), b"x")
    assert (status, body) == (500, b"oops")
    assert (await client.post(url(server), b"x"))[0] == 200  # a new connection
    assert server.connections == 2


async def test_connection_close_is_honoured(server: Server, client: HttpClient) -> None:
    server.close_after = True
    server.replies.append(ok(b"1", b"Connection: close"))
    assert (await client.post(url(server), b"x"))[2] == b"1"
    assert (await client.post(url(server), b"x"))[0] == 200
    assert server.connections == 2


async def test_no_body_after_204_and_an_interim_answer_is_skipped(
    server: Server, client: HttpClient
) -> None:
    server.replies.append(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    )
    status, headers, body = await client.post(url(server), b"x")
    assert (status, headers["X-A"], body) == (204, "1", b"")


async def test_a_stale_idle_connection_is_replaced_once(
    server: Server, client: HttpClient
) -> None:
    """The server closed the idle connection (its keep-alive ran out) without
    the client noticing yet: the call goes again on a fresh one."""
    server.replies.extend([ok(b"1"), None, ok(b"2")])
    assert (await client.post(url(server), b"x"))[2] == b"1"
    assert (await client.post(url(server), b"x"))[2] == b"2"
    assert server.connections == 2


async def test_a_connection_closed_mid_answer_is_an_error_not_a_retry(
    server: Server, client: HttpClient
) -> None:
    server.close_after = True
    server.replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    with pytest.raises(ConnectionError, match="before its answer was whole"):
        await client.post(url(server), b"x")
    assert len(server.requests) == 1  # a half answer came: not sent again


async def test_a_malformed_answer_is_a_protocol_error(
    server: Server, client: HttpClient
) -> None:
    server.replies.append(b"SMTP ready\r\n\r\n")
    with pytest.raises(ProtocolError):
        await client.post(url(server), b"x")


async def test_no_answer_in_time_is_a_timeout_and_the_connection_dropped() -> None:
    slow = HttpClient(timeout=0.2)
    gate = asyncio.Event()

    async def stalling(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await gate.wait()
        writer.close()

    listening = await asyncio.start_server(stalling, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            await slow.post(f"http://127.0.0.1:{port}/", b"x")
        assert not any(slow._idle.values())  # never reused half-read
    finally:
        gate.set()
        listening.close()
        await slow.close()


async def test_a_refused_connection_is_a_connection_error() -> None:
    listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    http = HttpClient(timeout=2.0)
    with pytest.raises(ConnectionError):
        await http.post(f"http://127.0.0.1:{port}/", b"x")
    await http.close()


async def test_tls_is_verified(tmp_path: Path) -> None:
    """A server whose certificate the client's CA bundle holds is talked to;
    one it does not hold is refused, not talked to."""
    ca = TestCA.create(tmp_path / "ca")
    cert, key = ca.issue_server_cert(["127.0.0.1"])
    state = Server()
    listening = await asyncio.start_server(
        state.handle,
        "127.0.0.1",
        0,
        ssl=server_ssl_context(cert, key, alpn=("http/1.1",)),
    )
    port = listening.sockets[0].getsockname()[1]
    trusting = HttpClient(timeout=2.0, ssl_context=client_ssl_context(ca.ca_path))
    stranger = HttpClient(timeout=2.0, ssl_context=ssl.create_default_context())
    try:
        status, _, _ = await trusting.post(f"https://127.0.0.1:{port}/", b"x")
        assert status == 200
        with pytest.raises(ssl.SSLCertVerificationError):
            await stranger.post(f"https://127.0.0.1:{port}/", b"x")
    finally:
        listening.close()
        await trusting.close()
        await stranger.close()


async def test_a_url_that_is_not_http_is_refused(client: HttpClient) -> None:
    with pytest.raises(ValueError, match="not an http"):
        await client.post("ftp://example.test/x", b"x")
