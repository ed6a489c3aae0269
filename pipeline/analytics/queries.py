"""Queries from a worker: straight to a ClickHouse server, or through the
sink process when the store is in-process chDB (which only that process may
open). Either way read-only, and never on the event loop."""

from __future__ import annotations

import asyncio
import functools
import urllib.error
import urllib.request

import aiohttp
import orjson

from pipeline.analytics.store import Reader, embedded
from pipeline.settings import Settings


class QueryFailed(Exception):
    """ClickHouse refused the query: its message."""


class StoreUnavailable(Exception):
    """The store (or the sink process that owns it) does not answer."""


@functools.cache
def _reader(dsn: str, settings: Settings) -> Reader:
    return Reader.open(settings)


async def run(
    settings: Settings, sql: str, fmt: str, session: aiohttp.ClientSession
) -> bytes:
    """The answer of a read-only query in ClickHouse's output format ``fmt``."""
    if not embedded(settings):
        try:
            reader = await asyncio.to_thread(
                _reader, settings.resolved_clickhouse_dsn, settings
            )
        except Exception as exc:  # noqa: BLE001 - any failure to connect
            raise StoreUnavailable(f"ClickHouse does not answer: {exc}") from exc
        try:
            return await asyncio.to_thread(reader.query, sql, fmt)
        except Exception as exc:  # noqa: BLE001 - ClickHouse's own message
            raise QueryFailed(str(exc)[:2000]) from exc
    url = settings.resolved_sink_url.rstrip("/") + "/query"
    admin = settings.admin_api_key.get_secret_value()
    try:
        async with session.post(
            url,
            data=orjson.dumps({"sql": sql, "format": fmt}),
            headers={"Authorization": f"Bearer {admin}"},
            timeout=aiohttp.ClientTimeout(total=120),
        ) as answer:
            body = await answer.read()
            if answer.status == 200:
                return body
            try:
                message = orjson.loads(body)["error"]["message"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = body[:500].decode(errors="replace")
            if answer.status in (400, 422):
                raise QueryFailed(message)
            raise StoreUnavailable(
                f"the sink at {url} answered {answer.status}: {message}"
            )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"the analytics store's owner (`notify sink`) does not answer at {url}: {exc}"
        ) from exc


def read_query(settings: Settings, sql: str, fmt: str) -> bytes:
    """``run`` for a command-line process (blocking, no event loop)."""
    if not embedded(settings):
        reader = Reader.open(settings)
        try:
            return reader.query(sql, fmt)
        except Exception as exc:  # noqa: BLE001 - ClickHouse's own message
            raise QueryFailed(str(exc)[:2000]) from exc
        finally:
            reader.close()
    try:
        return sink_post(settings, "/query", {"sql": sql, "format": fmt}, 120)
    except urllib.error.HTTPError as error:
        raise QueryFailed(error.read()[:2000].decode(errors="replace")) from None
    except OSError as error:
        raise StoreUnavailable(
            f"`notify sink` does not answer at {settings.resolved_sink_url}: {error}"
        ) from None


def sink_post(settings: Settings, path: str, body: object, timeout: float) -> bytes:
    """POST ``body`` to the sink process with the admin key, from a command
    line (blocking); urllib's errors as they come."""
    request = urllib.request.Request(  # noqa: S310 - the deployment's own sink
        settings.resolved_sink_url.rstrip("/") + path,
        data=orjson.dumps(body),
        method="POST",
        headers={
            "Authorization": f"Bearer {settings.admin_api_key.get_secret_value()}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        read: bytes = answer.read()
        return read
