"""What a cancel stops, refuses and marks (``pipeline.cancel``), and the
status book that keeps the mark when another writer folded meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import pipeline.status
from pipeline.cancel import cancel_event, cancel_events, plan, stopped
from pipeline.status import StatusBook, fold
from pipeline.sweep import PartitionEvent
from schemas.records import NotificationEvent, NotificationStatus

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
NID = "n_c" + "0" * 32


def status(**channels: str) -> NotificationStatus:
    """A notification with these channel outcomes."""
    return NotificationStatus(
        notification_id=NID, tenant="acme", user_id="u1", channels=channels
    )


@pytest.mark.parametrize("waiting", ["deferred", "digested", "retried", "queued"])
def test_every_waiting_channel_is_cancelled(waiting: str) -> None:
    """Scheduled or deferred, in a digest, waiting for a retry, queued and not
    begun: cancelled, and the answer is not a refusal."""
    decided = plan(status(email=waiting), started=())
    assert decided.cancelled == ("email",) and not decided.refused


def test_a_sent_channel_is_named_and_the_others_are_cancelled() -> None:
    """409 naming what went; what waited is cancelled all the same."""
    decided = plan(status(push="delivered", email="deferred", sms="queued"), {"sms"})
    assert decided.cancelled == ("email",)
    assert decided.sent == {"push": "delivered", "sms": "sending"}
    assert decided.refused
    assert decided.message() == (
        "already sent: push (delivered), sms (sending); cancelled: email"
    )


def test_nothing_left_to_cancel_is_refused_and_a_second_cancel_is_not() -> None:
    """Channels that ended on their own: 409; cancelled ones: the same 200."""
    ended = plan(status(email="suppressed"), ())
    assert ended.refused and ended.settled == {"email": "suppressed"}
    assert ended.message() == "nothing left to cancel: email (suppressed)"
    again = plan(status(email="cancelled"), ())
    assert again.cancelled == ("email",) and not again.refused


def test_the_mark_is_folded_once_and_a_second_cancel_emits_nothing() -> None:
    """The notification-wide event sets ``cancelled_at``; a cancelled status
    gets no second mark, nor a second event for a cancelled channel."""
    current = status(email="deferred")
    decided = plan(current, ())
    events = cancel_events(current, decided, NOW)
    assert [(e.event_type, e.channel) for e in events] == [
        ("cancelled", None),
        ("cancelled", "email"),
    ]
    for event in events:
        current = fold(current, event)
    assert stopped(current) and current.cancelled_at == NOW
    assert current.channels == {"email": "cancelled"}
    assert cancel_events(current, plan(current, ()), NOW + timedelta(1)) == []


def test_a_notification_cancelled_before_any_channel_says_cancelled() -> None:
    """Accepted, not decided yet: the mark alone makes it ``cancelled``."""
    marked = fold(status(), cancel_event(status(), NOW))
    assert marked.status == "cancelled" and marked.channels == {}


def test_the_same_cancel_event_wherever_it_is_decided() -> None:
    """API, fanout and send build the channel's event with one id."""
    a = cancel_event(status(), NOW, "email")
    b = cancel_event(status(email="queued"), NOW + timedelta(1), "email", locale="fr")
    assert a.event_id == b.event_id


def sent_event() -> NotificationEvent:
    """The send agent's ``sent`` of the email."""
    return NotificationEvent(
        event_id="e_sent",
        event_type="sent",
        ts=NOW,
        stage="send.email",
        notification_id=NID,
        channel="email",
    )


def test_a_book_folds_again_over_a_status_written_since_it_read_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The send agent reads, awaits its provider call, then writes: a cancel
    written meanwhile is kept, not overwritten with the stale read."""
    table: dict[str, Any] = {NID: status(email="queued")}
    monkeypatch.setattr(pipeline.status, "status", table)
    source = PartitionEvent("status", 0)
    sending = StatusBook()
    assert sending.current(source, NID) == table[NID]  # type: ignore[arg-type]
    cancelling = StatusBook()
    cancelling.add(source, cancel_event(table[NID], NOW))  # type: ignore[arg-type]
    cancelling.write()
    sending.add(source, sent_event())  # type: ignore[arg-type]
    sending.write()
    assert table[NID].channels == {"email": "sent"}
    assert table[NID].cancelled_at == NOW


def test_a_book_whose_stamp_was_forgotten_reads_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``MAX_STAMPS`` writes the oldest stamps go: a read older than the
    forgotten ones is treated as stale (read again), never trusted."""
    table: dict[str, Any] = {NID: status(email="queued")}
    monkeypatch.setattr(pipeline.status, "status", table)
    monkeypatch.setattr(pipeline.status, "MAX_STAMPS", 2)
    monkeypatch.setattr(pipeline.status, "_stamps", {})
    monkeypatch.setattr(pipeline.status, "_forgotten", 0)
    monkeypatch.setattr(pipeline.status, "_writes", pipeline.status._writes)
    source = PartitionEvent("status", 0)
    book = StatusBook()
    book.current(source, NID)  # type: ignore[arg-type]
    table[NID] = fold(table[NID], cancel_event(table[NID], NOW))  # no stamp
    for n in range(3):  # other notifications' writes push the stamps out
        pipeline.status._stamp(f"other-{n}")
    book.add(source, sent_event())  # type: ignore[arg-type]
    book.write()
    assert table[NID].cancelled_at == NOW
