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
