"""The chain profile sorts a sample by its innermost frame that names a part."""

from __future__ import annotations

from pathlib import Path

from benchmarks.profile_chain import part_of, shares

LOOP = "BaseEventLoop._run_once (asyncio/base_events.py:1922)"
AGENT = "deliver_batch (agents/send.py:640)"


def test_the_innermost_named_frame_decides() -> None:
    sent = [
        LOOP,
        AGENT,
        "Topic.send_soon (faust/topics.py:260)",
        "call_soon (asyncio/base_events.py:781)",
    ]
    assert part_of(sent) == "produce"
    called = [
        LOOP,
        AGENT,
        "dispatch (agents/send.py:380)",
        "ClientSession._request (aiohttp/client.py:500)",
    ]
    assert part_of(called) == "provider call"
    assert part_of([LOOP, AGENT, "parse_job (agents/send.py:600)"]) == "decisions"
    assert part_of([LOOP, "getmany (pipeline/transport.py:300)", AGENT]) == "decisions"


def test_idle_and_loop_samples() -> None:
    assert part_of([LOOP, "EpollSelector.select (selectors.py:468)"]) is None
    assert part_of([LOOP, "Handle._run (asyncio/events.py:80)"]) == "event loop"
    assert part_of(["<module> (x.py:1)"]) == "other"


def test_shares_add_the_counts(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        f"{LOOP};{AGENT} 3\n"
        f"{LOOP};EpollSelector.select (selectors.py:468) 9\n"
        f"{LOOP};Handle._run (asyncio/events.py:80) 2\n"
    )
    assert shares(stacks) == {"decisions": 3, "event loop": 2}
