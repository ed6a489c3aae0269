"""The providers a worker sends through, built from settings, one place.

Each configured provider gets its circuit breaker and a cap on calls in
flight; a channel's route lists its providers in order of preference, so a
provider whose breaker is open is passed over for the next one (email: SMTP
and SendGrid take over from each other) and probed again when it half-opens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.delivery.breaker import BreakerState, CircuitBreaker
from pipeline.delivery.classify import is_provider_side
from pipeline.providers.base import FailureKind, ProviderFailure, Sender, Sent
from pipeline.rendering import TemplateStore
from pipeline.settings import Settings


@dataclass
class Provider:
    """One sender with its breaker and its in-flight cap."""

    sender: Sender
    breaker: CircuitBreaker
    slots: asyncio.Semaphore

    def record(self, outcome: Sent | ProviderFailure, latency: float) -> None:
        """Tell the breaker; a recipient's problem is not the provider's fault."""
        failed = isinstance(outcome, ProviderFailure) and is_provider_side(outcome)
        self.breaker.record(not failed, latency)


@dataclass
class Route:
    """The providers of one channel, in order of preference."""

    channel: str
    providers: list[Provider] = field(default_factory=list)

    def candidates(self, platform: str | None) -> list[Provider]:
        """Who may take a call: for push the device's platform's provider only."""
        if self.channel == "push":
            return [p for p in self.providers if p.sender.name == platform]
        return list(self.providers)

    def all_open(self, platform: str | None) -> ProviderFailure:
        """The failure of a call no provider could take."""
        candidates = self.candidates(platform)
        if not candidates:
            wanted = platform or self.channel
            return ProviderFailure(
                FailureKind.REJECTED,
                "provider_not_configured",
                f"no provider is configured for {wanted}",
                provider=wanted,
            )
        names = ",".join(p.sender.name for p in candidates)
        return ProviderFailure(
            FailureKind.UNAVAILABLE,
            "circuit_open",
            f"every provider's breaker is open ({names})",
            provider=names,
            retry_after=min(p.breaker.open_for for p in candidates),
        )


class Providers:
    """Every provider of this worker, started and stopped with it."""

    def __init__(
        self,
        settings: Settings,
        senders: dict[str, list[Sender]] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        templates: TemplateStore | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.templates = templates or TemplateStore.load()
        self._senders = senders
        self.routes: dict[str, Route] = {}
        self._open = asyncio.Event()

    def configure(self, senders: dict[str, list[Sender]]) -> None:
        """Use these senders per channel (primary first) instead of the settings'."""
        self._senders = senders
        self.routes = {
            channel: Route(channel, [self._provider(s) for s in listed])
            for channel, listed in senders.items()
        }

    def _provider(self, sender: Sender) -> Provider:
        s = self.settings
        breaker = CircuitBreaker(
            sender.name,
            self.clock,
            window=s.breaker_window,
            min_calls=s.breaker_min_calls,
            error_rate=s.breaker_error_rate,
            slow_call=s.breaker_slow_call,
            slow_rate=s.breaker_slow_rate,
            open_for=s.breaker_open_for,
        )
        return Provider(sender, breaker, asyncio.Semaphore(s.provider_concurrency))

    def route(self, channel: str) -> Route:
        """The route of ``channel`` (empty when nothing is configured for it)."""
        return self.routes.get(channel) or Route(channel)

    async def start(self) -> None:
        """Build the senders from settings (unless given) and open their sessions."""
        if not self.routes:
            from pipeline.providers.build import senders_from_settings

            self.configure(self._senders or senders_from_settings(self.settings))
        for route in self.routes.values():
            for provider in route.providers:
                await provider.sender.start()
        self._open.set()

    async def opened(self) -> None:
        """Return once every provider's session is open.

        Faust starts app services only after table recovery, while agents
        may take records as soon as recovery resumes the flow: a worker
        restarted on a backlog would otherwise find no route yet and fail
        its first jobs with ``provider_not_configured``.
        """
        await self._open.wait()

    async def stop(self) -> None:
        """Close every provider's session."""
        self._open.clear()
        for route in self.routes.values():
            for provider in route.providers:
                await provider.sender.stop()

    def health(self) -> dict[str, dict[str, object]]:
        """Breaker state per provider, for /health."""
        return {
            p.sender.name: p.breaker.snapshot()
            for route in self.routes.values()
            for p in route.providers
        }

    def open_breakers(self) -> list[str]:
        """Providers whose breaker is not closed."""
        return [
            p.sender.name
            for route in self.routes.values()
            for p in route.providers
            if p.breaker.state is not BreakerState.CLOSED
        ]
