"""A notification after it was accepted: an operator's retry, a user's list.

(Its status and cancel are ``pipeline.api.views.NotificationStatusView``.)
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import orjson
from faust.web import Request, Response

from pipeline import actions
from pipeline.api import auth
from pipeline.api.accepted import accepted_statuses, freshest
from pipeline.api.contract import operation, route
from pipeline.api.errors import ApiError
from pipeline.api.views import (
    NOTIFICATION_ID,
    STATUS_LINK,
    USER_ID,
    ApiView,
    NotificationView,
    user_route,
)
from pipeline.app import app
from pipeline.partitioning import partition_for
from pipeline.scan import prefixed
from pipeline.streams import flush_durably
from pipeline.topology import user_key
from schemas.api import ListQuery, NotificationList, RetryScheduled
from schemas.records import NotificationStatus
from tables.idempotency import SeenRequest, idempotency


@route("/v1/notifications/{notification_id}/retry")
class RetryView(NotificationView):
    """Re-drive a notification's failed channels (admin scope)."""

    @operation(
        operation_id="retryNotification",
        summary="Send a notification's failed channels again (admin scope)",
        status=202,
        answer=RetryScheduled,
        path=NOTIFICATION_ID,
        errors=(403, 404, 409),
        links={"status": STATUS_LINK},
    )
    async def post(self, request: Request, notification_id: str) -> Response:
        """Every channel that failed for good is sent again, as a new run of
        attempts with its own retries: the send ledger lets it call the
        provider again (its ``redrive`` count is raised), and its status goes
        ``retried`` at once. 409 `not_retryable` when no channel failed (or
        only before any send, e.g. no device), or the notification was
        cancelled.
        """
        principal = self.principal(request)
        principal.require(auth.ADMIN_SCOPE)
        elsewhere = await self.at_holder(request, notification_id)
        if elsewhere is not None:
            return elsewhere
        current = self.visible(principal, notification_id)
        if current.cancelled_at is not None:
            raise ApiError(
                409, "not_retryable", f"notification {notification_id!r} was cancelled"
            )
        redrive = actions.retry_here(current, app.clock.now())
        if not redrive.channels:
            raise ApiError(
                409,
                "not_retryable",
                "no channel failed after a send began: "
                + ", ".join(f"{c} ({o})" for c, o in redrive.refused.items()),
                channels=redrive.refused,
            )
        await flush_durably(app)
        return self.answer(
            RetryScheduled(
                notification_id=notification_id,
                status="retry_scheduled",
                channels=list(redrive.channels),
            ),
            status=202,
        )


@route(user_route("notifications"))
class UserNotificationsView(ApiView):
    """A user's recent notifications."""

    @operation(
        operation_id="listNotifications",
        summary="A user's recent notifications, newest first, with their status",
        status=200,
        answer=NotificationList,
        path=USER_ID,
        query=ListQuery,
    )
    async def get(self, request: Request, user_id: str) -> Response:
        """A page of at most ``limit`` (1-100, default 20); ``next_cursor``
        fetches the next. Recent means within NOTIFY_IDEMPOTENCY_WINDOW: the
        list is read from the user's idempotency keys, which the worker keeps
        for that long on the user's partition, so listing costs the hot path
        nothing. A notification shows once a worker decided it (moments after
        its 202). With lanes run apart, each lane's workers list that lane's.
        """
        principal = self.principal(request)
        query = self.query(request, ListQuery)
        tenant = principal.tenant_for(query.tenant)
        ukey = user_key(tenant, user_id)
        forwarded = await self.routed(idempotency.name, ukey, request)
        if forwarded is not None:
            return forwarded
        after = parse_cursor(query.cursor)
        limit = int(query.limit)
        now = app.clock.now()
        window = timedelta(hours=app.settings.idempotency_window)
        partition = partition_for(ukey.encode(), app.settings.topic_partitions)
        seen = sorted(
            (
                entry
                for entry in user_entries(tenant, user_id, partition)
                if entry.live(now, window)
            ),
            key=position,
            reverse=True,
        )
        items: list[NotificationStatus] = []
        last: SeenRequest | None = None
        for entry in seen:
            if after is not None and position(entry) >= after:
                continue
            if len(items) == limit:
                break
            found = freshest(
                actions.stored_status(entry.notification_id),
                accepted_statuses,
                entry.notification_id,
            )
            last = entry
            if found is not None:
                items.append(found)
        more = last is not None and position(last) > position(seen[-1])
        cursor = make_cursor(last) if more and last is not None else None
        return self.answer(NotificationList(items=items, next_cursor=cursor))


def user_entries(tenant: str, user_id: str, partition: int) -> Iterator[SeenRequest]:
    """The first uses of every idempotency key of the user on this worker."""
    # Keys are JSON arrays [tenant, user, key]: a user's share a prefix.
    prefix = orjson.dumps([tenant, user_id]).decode()[:-1] + ","
    for _, raw in prefixed(idempotency, partition, prefix):
        entry = SeenRequest.loads(raw)
        if entry is not None:
            yield entry


def position(entry: SeenRequest) -> tuple[int, str]:
    """Where an entry sorts in the list: its epoch ms, then its id."""
    return round(entry.first_seen.timestamp() * 1000), entry.notification_id


def make_cursor(entry: SeenRequest) -> str:
    """The cursor after ``entry``: ``<epoch ms>.<notification id>``."""
    ms, nid = position(entry)
    return f"{ms}.{nid}"


def parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    """The position a cursor stands for (its form is checked by ``ListQuery``)."""
    if cursor is None:
        return None
    ms, nid = cursor.split(".", 1)
    return int(ms), nid
