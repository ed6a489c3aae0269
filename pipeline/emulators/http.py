"""Serving an aiohttp emulator on loopback, and posting its callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web


class AppServer:
    """One aiohttp app on ``host:port``, plus callbacks posted in the background
    (status callbacks, event webhooks) with their own client session."""

    def __init__(self) -> None:
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def serve(self, app: web.Application, host: str, port: int) -> str:
        """Serve ``app`` (port 0: the OS picks); the base URL."""
        # A client that gave up must not keep its held answer running, and a
        # held answer must not hold up stop().
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=1.0, access_log=None
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0]
        self.url = f"http://{bound[0]}:{bound[1]}"
        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.url

    def spawn(
        self,
        post: Callable[[aiohttp.ClientSession], Coroutine[Any, Any, None]],
    ) -> None:
        """Run ``post(client)`` in the background, without delaying the answer."""
        if self._client is None:
            return
        task = asyncio.create_task(post(self._client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait until every callback started so far has finished."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop serving, cancel callbacks still under way."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
