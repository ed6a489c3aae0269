"""One-click unsubscribe (RFC 8058) on a real worker and the SMTP emulator:
a promotional email carries List-Unsubscribe with a signed https URL and
List-Unsubscribe-Post; a POST to it opts the user out of the category, with
no key, and the next promotional email is not sent."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
import yarl

from pipeline.emulators.stack import EmulatorStack
from tests.conftest import WorkerFactory
from tests.support import BrokerUnderTest, Topics, call, unique, wait_for

pytestmark = pytest.mark.integration

PUBLIC = "https://notify.example.test"


def promotion(user: str) -> dict[str, Any]:
    """A promotional campaign-type email."""
    return {
        "idempotency_key": unique("promo"),
        "recipient": {"user_id": user},
        "type": "campaign",
        "priority": "promotional",
        "channels": ["email"],
        "data": {"headline": "Winter sale", "message": "Everything half off."},
    }


def test_a_promotional_email_unsubscribes_in_one_click(
    broker: BrokerUnderTest,
    topics: Topics,
    emulators: EmulatorStack,
    start_worker: WorkerFactory,
) -> None:
    topics.create(broker.url)
    worker = start_worker(
        notify_email_providers="smtp",
        notify_public_url=PUBLIC,
        **emulators.env(),
    )
    worker.wait_ready(timeout=90)
    user, address = unique("u"), f"{unique('a')}@example.com"
    assert (
        call(worker.web_port, "PUT", f"/v1/users/{user}", {"email": address}).status
        == 202
    )
    wait_for(
        lambda: call(worker.web_port, "GET", f"/v1/users/{user}").status == 200,
        timeout=30,
    )
    first = call(worker.web_port, "POST", "/v1/notifications", promotion(user))
    assert first.status == 202, first.body
    [email] = wait_for(lambda: emulators.smtp.calls.to(address), timeout=60)
    header = email.payload["list_unsubscribe"]
    assert header.startswith(f"<{PUBLIC}/t/u/") and header.endswith(">")
    assert email.payload["list_unsubscribe_post"] == "List-Unsubscribe=One-Click"
    assert header[1:-1] in email.payload["text"]  # the template shows it too
    # The mailbox provider's POST, to the worker (the public URL's path).
    path = yarl.URL(header[1:-1]).path
    request = urllib.request.Request(  # noqa: S310 - loopback
        f"http://127.0.0.1:{worker.web_port}{path}",
        data=b"List-Unsubscribe=One-Click",
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=15) as answer:  # noqa: S310
        assert answer.status == 200
    prefs = f"/v1/users/{user}/preferences"
    wait_for(
        lambda: (
            call(worker.web_port, "GET", prefs).body.get("types")
            == {"marketing": False}
        ),
        timeout=30,
    )
    second = call(worker.web_port, "POST", "/v1/notifications", promotion(user))
    nid = second.body["notification_id"]

    def decided() -> dict[str, Any] | None:
        reply = call(worker.web_port, "GET", f"/v1/notifications/{nid}")
        settled = reply.status == 200 and reply.body["channels"].get("email")
        return reply.body if settled else None

    status = wait_for(decided, timeout=30)
    assert status["channels"] == {"email": "suppressed"}
    assert len(emulators.smtp.calls.to(address)) == 1
    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert call(worker.web_port, "POST", forged, key=None).status == 404
