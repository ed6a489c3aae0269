"""Copying the other lane's idempotency keys: the first use wins on both sides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.idempotency_peer import merged
from tables.idempotency import SeenRequest

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def entry(nid: str, at: datetime, digest: str = "d1") -> bytes:
    """A stored idempotency entry."""
    return SeenRequest(nid, digest, at, "notify.requests.bulk[0]@1").dumps()


def test_a_key_this_lane_has_not_seen_is_copied() -> None:
    """Unknown here: the peer's entry becomes ours."""
    peer = entry("n_b1", T0)
    assert merged(None, peer) == peer


def test_an_echo_or_a_deletion_changes_nothing() -> None:
    """Our own entry coming back, or a tombstone, is left alone (no loop)."""
    ours = entry("n_c1", T0)
    assert merged(ours, ours) is None
    assert merged(ours, None) is None


def test_the_earlier_first_use_wins_whichever_side_had_it() -> None:
    """Both lanes accepted the key before seeing each other's: both keep the first."""
    early, late = entry("n_c1", T0), entry("n_b1", T0 + timedelta(seconds=1), "d2")
    assert merged(late, early) == early
    assert merged(early, late) is None


def test_a_tie_is_broken_by_the_notification_id() -> None:
    """Same millisecond: the smaller id wins on both sides, so they converge."""
    a, b = entry("n_b1", T0), entry("n_c1", T0, "d2")
    assert merged(b, a) == a
    assert merged(a, b) is None
