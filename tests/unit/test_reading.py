"""What the consumer hands to the streams: each record once per assignment,
nothing lost around seeks and pauses, gaps only where offsets hold no record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport import consumer as faust_consumer
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from pipeline.app import NotifyApp, create_app
from pipeline.reading import OffsetSet
from pipeline.settings import Settings

TOPIC = "notify.deliveries.push.critical"
TP0 = TP(TOPIC, 0)


@given(st.lists(st.integers(min_value=0, max_value=300), max_size=200))
def test_an_offset_set_holds_exactly_what_was_added(offsets: list[int]) -> None:
    kept = OffsetSet()
    for offset in offsets:
        kept.add(offset)
    assert all(o in kept for o in offsets)
    assert not any(o in kept for o in range(-1, 302) if o not in set(offsets))
    ranges = kept.ranges()
    assert all(low <= high for low, high in ranges)
    # Disjoint and not touching: joined as they meet.
    assert all(a[1] + 1 < b[0] for a, b in zip(ranges, ranges[1:], strict=False))


@pytest.fixture
def app(tmp_path: Path) -> NotifyApp:
    return create_app(Settings(data_dir=tmp_path, store_url="memory://"), discover=[])


class Fetcher:
    """Stands for Faust's own getmany: hands over scripted batches, and
    records the seeks asked of the client."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, consumer: Any) -> None:
        self.batches: list[tuple[list[int], set[TP] | None]] = []
        self.seeks: list[tuple[TP, int]] = []
        fetcher = self

        async def getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
            offsets, active = fetcher.batches.pop(0)
            self._batch_active = active
            for offset in offsets:
                yield TP0, SimpleNamespace(offset=offset, topic=TOPIC)

        async def seek(self: Any, tp: TP, offset: int) -> None:
            fetcher.seeks.append((tp, offset))

        monkeypatch.setattr(faust_consumer.Consumer, "getmany", getmany)
        monkeypatch.setattr(faust_consumer.Consumer, "seek", seek)
        # The client's own seek, which a flow-control clear asks for.
        monkeypatch.setattr(
            consumer,
            "_thread",
            SimpleNamespace(seek=lambda tp, offset: self.seeks.append((tp, offset))),
        )
        monkeypatch.setattr(type(consumer), "assignment", lambda self: {TP0})
        self.consumer = consumer

    async def hand(
        self, offsets: Iterable[int], active: set[TP] | None = None
    ) -> list[int]:
        self.batches.append((list(offsets), active))
        return [m.offset async for _, m in self.consumer.getmany(1.0)]


async def test_records_never_handed_over_come_back_after_a_seek_back(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client began the partition at 173 (the records before were lost
    to a pause); the seek back to its start comes while a batch is still
    being handed over. Faust's read offset then dropped 0..172 on their way
    back and counted them as a gap. Here everything from the seek on is
    handed over again (what came before may not have reached a stream), and
    what the batch handed over after the seek is not handed twice."""
    fetcher = Fetcher(monkeypatch, app.consumer)
    assert await fetcher.hand(range(173, 181)) == list(range(173, 181))
    await app.consumer.seek(TP0, 0)
    assert await fetcher.hand(range(181, 186)) == list(range(181, 186))
    assert await fetcher.hand(range(186)) == list(range(181))
    assert await fetcher.hand(range(186, 190)) == list(range(186, 190))
    assert not app.consumer._gap[TP0]


async def test_a_paused_partitions_records_wait_for_it_to_resume(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetcher = Fetcher(monkeypatch, app.consumer)
    assert await fetcher.hand(range(40, 50), active=set()) == []
    assert fetcher.seeks == [(TP0, 40)]  # fetched again from there
    assert await fetcher.hand(range(40, 45), active={TP0}) == list(range(40, 45))


async def test_offsets_that_hold_no_record_are_a_gap(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A jump with no seek between (a transaction marker, a compacted key)."""
    fetcher = Fetcher(monkeypatch, app.consumer)
    monkeypatch.setattr(app.topics, "acks_enabled_for", lambda topic: True)
    assert await fetcher.hand([10, 11, 14, 15]) == [10, 11, 14, 15]
    assert [(i.begin, i.end) for i in app.consumer._gap[TP0]] == [(12, 14)]


async def test_each_assignment_hands_its_records_over_again(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetcher = Fetcher(monkeypatch, app.consumer)
    assert await fetcher.hand(range(5)) == list(range(5))
    assert await fetcher.hand(range(5)) == []  # fetched again, no seek: once is enough

    async def assigned(self: Any, tps: set[TP], generation_id: int = 0) -> None:
        return None

    monkeypatch.setattr(faust_consumer.Consumer, "on_partitions_assigned", assigned)
    await app.consumer.on_partitions_assigned({TP0}, 2)
    assert await fetcher.hand(range(5)) == list(range(5))


def buffered(tp: TP, offset: int) -> Any:
    """A stream buffer's entry: an event carrying its message."""
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


async def test_records_a_flow_control_clear_drops_are_handed_over_again(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recovery resumes the flow just after its seek to the committed
    offsets, and Faust clears every stream buffer on each resume. The
    records waiting there were handed over and would never reach a stream:
    the partition's commits stopped below the first of them for good."""
    fetcher = Fetcher(monkeypatch, app.consumer)
    buffer = app.FlowControlQueue(maxsize=100, clear_on_resume=True)
    elsewhere = TP("notify.requests.bulk", 0)  # not this worker's partition
    assert await fetcher.hand(range(339, 345)) == list(range(339, 345))
    for offset in range(341, 345):  # 339 and 340 reached the stream
        buffer.put_nowait(buffered(TP0, offset))
    buffer.put_nowait(buffered(elsewhere, 7))
    app.flow_control.resume()
    assert buffer.empty()
    assert fetcher.seeks == [(TP0, 341)]
    assert await fetcher.hand(range(341, 347)) == list(range(341, 347))


async def test_a_clear_of_empty_buffers_seeks_nothing(
    app: NotifyApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetcher = Fetcher(monkeypatch, app.consumer)
    app.FlowControlQueue(maxsize=100, clear_on_resume=True)
    assert await fetcher.hand(range(5)) == list(range(5))
    app.flow_control.resume()
    app.flow_control.clear()
    assert fetcher.seeks == []
    assert await fetcher.hand(range(5)) == []  # fetched again, no seek: once is enough
