"""A bare HTTP/1.1 client for the providers' POSTs: keep-alive connections
per origin, TLS verified, a total timeout per call.

aiohttp cost about 100 µs of a core per provider call, most of it in
``ClientSession._request`` itself (trimming its cookie jar, decompression
and automatic headers bought nothing); this client costs about 40 µs for
the same call (`benchmarks/README.md`, "Provider clients"). It does what
the providers' APIs need and no more:

- ``POST`` with a body, the caller's headers over the client's defaults,
  ``Host`` and ``Content-Length`` always;
- responses with ``Content-Length``, ``Transfer-Encoding: chunked``, or
  neither (the body runs to the connection's close); no body for 1xx, 204
  and 304;
- a connection is reused unless either side said ``Connection: close`` or
  the answer's length was unknown; a reused connection the server had
  closed (it may close an idle one at any time) is replaced and the request
  sent once more, only if no byte of an answer came;
- the timeout covers connecting, sending and reading; a call that times out
  or fails leaves its connection closed, never reused half-read.

Errors: `TimeoutError` past the timeout, `ssl.SSLCertVerificationError` for
an untrusted certificate, `ConnectionError` for anything else on the wire
(refused, reset, a malformed answer).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

#: Answers that never carry a body.
NO_BODY = frozenset({204, 304})
#: The longest head (status line and headers) accepted.
MAX_HEAD = 64 * 1024


class ProtocolError(ConnectionError):
    """The server's answer is not HTTP/1.1 as this client reads it."""


Answer = tuple[int, CIMultiDictProxy[str], bytes]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; reads one answer at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Answer] | None = None
        self.closed = False
        self.reusable = True
        self.got_bytes = False
        self._head: tuple[int, CIMultiDict[str]] | None = None
        self._length: int | None = None  # body bytes; None: chunked or to close
        self._chunked = False
        self._chunks = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buffer += data
        if self.waiter is not None and not self.waiter.done():
            try:
                self._parse(eof=False)
            except ProtocolError as exc:
                self._fail(exc)

    def eof_received(self) -> bool | None:
        return False  # close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            try:
                if self._parse(eof=True):
                    return
            except ProtocolError as error:
                self._fail(error)
                return
            self._fail(
                ConnectionError(
                    "the server closed the connection before its answer was whole"
                    + (f": {exc}" if exc else "")
                )
            )

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def begin(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Answer]:
        """Expect the answer to the request about to be written."""
        self.waiter = loop.create_future()
        self.got_bytes = False
        self._head, self._length, self._chunked = None, None, False
        self._chunks.clear()
        return self.waiter

    def _parse(self, *, eof: bool) -> bool:
        """Set the waiter's result once the answer is whole; True if set."""
        buffer = self.buffer
        if self._head is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    raise ProtocolError("the answer's head is too long")
                return False
            self._read_head(bytes(buffer[:end]))
            del buffer[: end + 4]
            if self._head is None:  # an interim 1xx answer: read the next
                return self._parse(eof=eof)
        if self._chunked:
            return self._read_chunks()
        if self._length is not None:
            if len(buffer) < self._length:
                return False
            body = bytes(buffer[: self._length])
            del buffer[: self._length]
            return self._done(body)
        if not eof:  # the body runs to the connection's close
            return False
        body = bytes(buffer)
        buffer.clear()
        return self._done(body)

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise ProtocolError(f"bad status: {parts[1][:20]!r}") from None
        if 100 <= status < 200:
            return
        headers: CIMultiDict[str] = CIMultiDict()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ProtocolError(f"bad header line: {line[:80]!r}")
            headers.add(name.strip().decode("latin-1"), value.strip().decode("latin-1"))
        self._head = (status, headers)
        if parts[0] == b"HTTP/1.0" or "close" in headers.get("Connection", "").lower():
            self.reusable = False
        if status in NO_BODY:
            self._length = 0
        elif "chunked" in headers.get("Transfer-Encoding", "").lower():
            self._chunked = True
        elif "Content-Length" in headers:
            try:
                self._length = int(headers["Content-Length"])
            except ValueError:
                raise ProtocolError("bad Content-Length") from None
        else:
            self.reusable = False  # read to the close

    def _read_chunks(self) -> bool:
        buffer = self.buffer
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                return False
            size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size: {size_text[:20]!r}") from None
            if size == 0:
                trailers = buffer.find(b"\r\n\r\n", end)
                if trailers < 0:
                    return False
                del buffer[: trailers + 4]
                return self._done(bytes(self._chunks))
            if len(buffer) < end + 2 + size + 2:
                return False
            self._chunks += buffer[end + 2 : end + 2 + size]
            del buffer[: end + 2 + size + 2]

    def _done(self, body: bytes) -> bool:
        assert self._head is not None and self.waiter is not None  # noqa: S101
        status, headers = self._head
        self.waiter.set_result((status, CIMultiDictProxy(headers), body))
        return True


class HttpClient:
    """Keep-alive connections per origin; see the module docstring."""

    def __init__(
        self,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.timeout = timeout
        self._ssl = ssl_context
        self._defaults = dict(headers or {})
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy: set[_Connection] = set()
        self._targets: dict[str, tuple[tuple[str, str, int], bytes, bytes]] = {}
        self._closed = False

    def _target(self, url: str) -> tuple[tuple[str, str, int], bytes, bytes]:
        """(origin, request-target, Host value) of ``url``, remembered."""
        found = self._targets.get(url)
        if found is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.netloc.rsplit("@", 1)[-1]
            found = (parts.scheme, parts.hostname, port), path.encode(), host.encode()
            self._targets[url] = found
        return found

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> Answer:
        """POST ``body`` to ``url``: (status, headers, body) of the answer."""
        if self._closed:
            raise ConnectionError("the client is closed")
        origin, path, host = self._target(url)
        merged = {**self._defaults, **(headers or {})} if headers else self._defaults
        request = b"".join(
            (
                b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n"
                % (path, host, len(body)),
                *(f"{name}: {value}\r\n".encode() for name, value in merged.items()),
                b"\r\n",
                body,
            )
        )
        async with asyncio.timeout(self.timeout):
            return await self._exchange(origin, request)

    async def _exchange(self, origin: tuple[str, str, int], request: bytes) -> Answer:
        idle = self._idle.setdefault(origin, [])
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            # Idle, the server may have closed it unseen: once more on a
            # fresh connection, if no byte of an answer came.
            try:
                return await self._send(connection, origin, request)
            except ConnectionError:
                if connection.got_bytes:
                    raise
        return await self._send(await self._connect(origin), origin, request)

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            context = self._ssl or ssl.create_default_context()
        _, connection = await loop.create_connection(
            _Connection, host, port, ssl=context
        )
        return connection

    async def _send(
        self, connection: _Connection, origin: tuple[str, str, int], request: bytes
    ) -> Answer:
        transport = connection.transport
        if transport is None or connection.closed:
            raise ConnectionError("the connection is closed")
        waiter = connection.begin(asyncio.get_running_loop())
        self._busy.add(connection)
        try:
            transport.write(request)
            answer = await waiter
        except BaseException:
            connection.reusable = False
            transport.abort()
            raise
        finally:
            self._busy.discard(connection)
        if connection.reusable and not connection.closed and not self._closed:
            self._idle.setdefault(origin, []).append(connection)
        else:
            transport.close()
        return answer

    async def close(self) -> None:
        """Close every connection; later calls fail."""
        self._closed = True
        for connections in self._idle.values():
            for connection in connections:
                if connection.transport is not None:
                    connection.transport.close()
        self._idle.clear()
        for connection in list(self._busy):
            if connection.transport is not None:
                connection.transport.abort()
