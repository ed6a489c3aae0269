"""The embedded broker's cluster ids: what Kafka's storage tool accepts."""

from __future__ import annotations

import base64
import uuid

import pytest

from pipeline import broker


def test_a_cluster_id_is_16_bytes_in_url_safe_base64() -> None:
    """22 characters that decode back to 16 bytes."""
    cluster_id = broker.new_cluster_id()
    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id starting with "-" reads as an option to the storage tool's
    command line (one draw in 64): such a draw is replaced."""
    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    draws = iter([dashed, uuid.UUID(int=1)])
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: next(draws))
    assert broker.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAQ"
