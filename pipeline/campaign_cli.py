"""``notify campaign``: create, watch and steer campaigns through the HTTP API.

The command is a client of the API like any other (the campaign lives in
the workers' tables): ``--api`` names a worker (default: this machine's
worker on NOTIFY_WEB_PORT), ``--key`` the API key (default NOTIFY_API_KEY,
else the dev key outside production).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Shown states after which ``status --follow`` stops.
FINAL = frozenset({"completed", "cancelled", "expired"})
#: Width of the progress bar, in characters.
BAR = 30


class CampaignCliError(Exception):
    """A call the API refused, or could not be made: its message is printed."""


@dataclass(frozen=True)
class Client:
    """Calls one worker's API with one key."""

    api: str
    key: str

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """The JSON answer; CampaignCliError with the API's error otherwise."""
        answer: dict[str, Any] = json.loads(self.raw(method, path, body))
        return answer

    def raw(self, method: str, path: str, body: Any = None) -> bytes:
        """The answer's bytes; CampaignCliError with the API's error otherwise."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the operator's own API URL
            self.api.rstrip("/") + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.key}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310
                body_read: bytes = answer.read()
                return body_read
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                problem = json.loads(raw)["error"]
                text = f"{error.code} {problem['code']}: {problem['message']}"
            except (ValueError, KeyError, TypeError):
                text = f"{error.code}: {raw[:200]!r}"
            raise CampaignCliError(text) from None
        except (urllib.error.URLError, OSError) as error:
            raise CampaignCliError(f"cannot reach {self.api}: {error}") from None


def read_body(source: str) -> dict[str, Any]:
    """A campaign body from a JSON file, or ``-`` for standard input."""
    try:
        text = sys.stdin.read() if source == "-" else open(source).read()  # noqa: SIM115
        body = json.loads(text)
    except (OSError, ValueError) as error:
        raise CampaignCliError(
            f"cannot read a JSON body from {source}: {error}"
        ) from None
    if not isinstance(body, dict):
        raise CampaignCliError("the body must be a JSON object (seed 002's bulk body)")
    return body


def summary(status: dict[str, Any]) -> str:
    """One line: state, partitions, and the counts that matter."""
    counts = status["counts"]
    return (
        f"{status['campaign_id']} {status['state']}: "
        f"partitions {status['partitions_done']}/{status['partitions']}, "
        f"targeted {counts['targeted']}, expanded {counts['expanded']}, "
        f"queued {counts['queued']}, sent {counts['sent']}, "
        f"delivered {counts['delivered']}, failed {counts['failed']}, "
        f"suppressed {counts['suppressed']}, throttled {counts['throttled']}, "
        f"deferred {counts['deferred']}"
    )


def progress_line(status: dict[str, Any], rate: float, walk_rate: float = 0.0) -> str:
    """A progress bar of expansion with the rate and the time left.

    With the audience known ahead (a list of user ids), the share expanded
    of it; otherwise how far the walk of the partitions is (``walked``), the
    time left from how fast that share grows (``walk_rate``, per second).
    """
    counts = status["counts"]
    expanded = counts["expanded"]
    total = status.get("audience")
    if total:
        done = min(1.0, expanded / total)
        eta = (total - expanded) / rate if rate > 0 else None
    else:
        done = float(status.get("walked") or 0.0)
        eta = (1.0 - done) / walk_rate if walk_rate > 0 else None
    if status["state"] in FINAL:
        done, eta = (1.0 if status["state"] == "completed" else done), 0.0
    filled = int(done * BAR)
    left = "--" if eta is None else f"{eta:.0f}s"
    return (
        f"[{'#' * filled}{'.' * (BAR - filled)}] {done:5.1%} "
        f"expanded {expanded} at {rate:.0f}/s, ETA {left}; "
        f"sent {counts['sent']}, {status['state']}"
    )


def follow(
    client: Client,
    cid: str,
    say: Callable[[str], None],
    every: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Print the progress line every ``every`` seconds until the campaign
    ends; its last status."""
    last: tuple[int, float, float] | None = None  # expanded, walked, when
    rate = walk_rate = 0.0
    while True:
        status = client.call("GET", f"/v1/campaigns/{cid}")
        now, expanded = clock(), status["counts"]["expanded"]
        walked = float(status.get("walked") or 0.0)
        if last is not None and now > last[2]:
            rate = (expanded - last[0]) / (now - last[2])
            walk_rate = (walked - last[1]) / (now - last[2])
        last = (expanded, walked, now)
        say(progress_line(status, rate, walk_rate))
        if status["state"] in FINAL:
            return status
        sleep(every)


def run(
    client: Client,
    action: str,
    target: str,
    say: Callable[[str], None],
    *,
    watch: bool = False,
) -> None:
    """One ``notify campaign`` action."""
    if action == "create":
        body = read_body(target)
        answer = client.call("POST", "/v1/notifications/bulk", body)
        say(answer["campaign_id"])
        if watch:
            follow(client, answer["campaign_id"], say)
        return
    if action == "status":
        if watch:
            follow(client, target, say)
            return
        say(summary(client.call("GET", f"/v1/campaigns/{target}")))
        return
    calls = {
        "cancel": ("DELETE", f"/v1/campaigns/{target}"),
        "pause": ("POST", f"/v1/campaigns/{target}/pause"),
        "resume": ("POST", f"/v1/campaigns/{target}/resume"),
    }
    if action not in calls:
        raise CampaignCliError(
            f"unknown action {action!r}: create, status, cancel, pause or resume"
        )
    method, path = calls[action]
    say(summary(client.call(method, path)))
