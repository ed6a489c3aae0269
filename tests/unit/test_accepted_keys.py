"""The API's memory of accepted idempotency keys: bounded, oldest forgotten."""

from __future__ import annotations

from pipeline.api.accepted import AcceptedKeys


def test_a_remembered_key_gives_its_digest_until_forgotten() -> None:
    """remember → digest; forget (the table has it) → None."""
    keys = AcceptedKeys()
    keys.remember("k1", "d1")
    assert keys.digest("k1") == "d1"
    assert keys.digest("k2") is None
    keys.forget("k1")
    assert keys.digest("k1") is None
    keys.forget("never-there")  # a failed produce of an unknown key: no error


def test_past_the_limit_the_oldest_keys_are_forgotten() -> None:
    """The memory holds ``limit`` keys; remembering one again makes it newest."""
    keys = AcceptedKeys(limit=3)
    for n in range(3):
        keys.remember(f"k{n}", f"d{n}")
    keys.remember("k0", "d0")  # k0 is now the newest
    keys.remember("k3", "d3")
    assert len(keys) == 3
    assert keys.digest("k1") is None
    assert [keys.digest(k) for k in ("k0", "k2", "k3")] == ["d0", "d2", "d3"]


def test_a_read_right_after_a_write_finds_what_was_written() -> None:
    """Until the table has the profile this worker wrote, a read gets the
    written one; once the table holds it (or a newer one), the table wins."""
    from datetime import UTC, datetime, timedelta

    from pipeline.api.accepted import Recent, freshest
    from schemas.records import UserProfile

    t0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    written: Recent[UserProfile] = Recent()
    mine = UserProfile(user_id="u1", email="new@example.org", updated_at=t0)
    written.remember("t/u1", mine)
    older = UserProfile(
        user_id="u1", email="old@example.org", updated_at=t0 - timedelta(1)
    )
    assert freshest(None, written, "t/u1") == mine
    assert freshest(older, written, "t/u1") == mine
    applied = mine.model_copy()
    assert freshest(applied, written, "t/u1") is applied
    assert written.get("t/u1") is None  # forgotten once the table caught up
    assert freshest(None, written, "t/u1") is None


def test_a_record_without_a_time_gives_way_to_the_table_once_there() -> None:
    """A notification's status (no updated_at): the stored one wins when present."""
    from pipeline.api.accepted import Recent, freshest
    from schemas.records import NotificationStatus

    accepted: Recent[NotificationStatus] = Recent()
    pending = NotificationStatus(notification_id="n1")
    accepted.remember("n1", pending)
    assert freshest(None, accepted, "n1") is pending
    stored = NotificationStatus(notification_id="n1", status="sent")
    assert freshest(stored, accepted, "n1") is stored
    assert len(accepted) == 0
