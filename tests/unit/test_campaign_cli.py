"""``notify campaign``'s progress: the bar, the rate and the time left,
clock-driven against a scripted API."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.campaign_cli import CampaignCliError, follow, progress_line, run


def status(
    expanded: int,
    state: str = "expanding",
    done: int = 0,
    *,
    audience: int | None = None,
    walked: float = 0.0,
) -> dict[str, Any]:
    """A campaign status as the API answers it."""
    counts = dict.fromkeys(
        (
            "targeted",
            "queued",
            "sent",
            "delivered",
            "failed",
            "suppressed",
            "throttled",
            "deferred",
        ),
        0,
    )
    return {
        "campaign_id": "c_1",
        "state": state,
        "partitions_done": done,
        "partitions": 4,
        "audience": audience,
        "walked": walked,
        "counts": {**counts, "expanded": expanded, "sent": expanded // 2},
    }


class Scripted:
    """An API answering a list of statuses in turn, recording the calls."""

    def __init__(self, answers: list[dict[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path))
        return self.answers.pop(0)


def test_the_bar_shows_rate_and_time_left_for_a_known_audience() -> None:
    line = progress_line(status(250, audience=1_000), rate=50.0)
    assert line.startswith("[#######" + "." * 23 + "] 25.0%")
    assert "expanded 250 at 50/s, ETA 15s; sent 125, expanding" in line


def test_without_a_known_audience_the_walk_tells_how_far_and_how_long() -> None:
    line = progress_line(status(10, walked=0.25), rate=5.0, walk_rate=0.05)
    assert " 25.0% " in line and "ETA 15s" in line  # 0.75 left at 0.05/s
    unknown = progress_line(status(10, walked=0.25), rate=5.0)
    assert "ETA --" in unknown
    final = progress_line(status(40, "completed", done=4, walked=1.0), rate=0.0)
    assert "100.0%" in final and "ETA 0s" in final


def test_follow_measures_the_rate_between_looks_and_stops_when_done() -> None:
    api = Scripted(
        [
            status(0, audience=300),
            status(100, audience=300),
            status(300, "completed", done=4, audience=300),
        ]
    )
    ticks = iter([0.0, 2.0, 4.0, 6.0])
    lines: list[str] = []
    last = follow(
        api,  # type: ignore[arg-type]
        "c_1",
        lines.append,
        clock=lambda: next(ticks),
        sleep=lambda _: None,
    )
    assert last["state"] == "completed" and len(lines) == 3
    assert "at 50/s, ETA 4s" in lines[1]  # 100 in 2 s; 200 left
    assert "at 100/s" in lines[2] and lines[2].startswith("[" + "#" * 30 + "]")


def test_follow_times_a_walk_by_how_fast_its_share_grows() -> None:
    api = Scripted(
        [
            status(0, walked=0.0),
            status(40, walked=0.2),
            status(90, "completed", done=4, walked=1.0),
        ]
    )
    ticks = iter([0.0, 4.0, 8.0])
    lines: list[str] = []
    follow(
        api,  # type: ignore[arg-type]
        "c_1",
        lines.append,
        clock=lambda: next(ticks),
        sleep=lambda _: None,
    )
    assert " 20.0% " in lines[1] and "ETA 16s" in lines[1]  # 0.8 left at 0.05/s


def test_actions_call_their_endpoints_and_unknown_ones_are_refused() -> None:
    api = Scripted([status(5, "paused")])
    said: list[str] = []
    run(api, "pause", "c_1", said.append)  # type: ignore[arg-type]
    assert api.calls == [("POST", "/v1/campaigns/c_1/pause")]
    assert said[0].startswith("c_1 paused: partitions 0/4")
    with pytest.raises(CampaignCliError):
        run(api, "explode", "c_1", said.append)  # type: ignore[arg-type]
