"""Which records a worker's consumer really handed to its streams.

Faust decides what to drop and what to count as a gap from one number per
partition, the last offset read, and that number is wrong around seeks: a
seek back to the committed offset sets it below records of a prefetched
batch still being handed over, and those records then move it above records
never handed over, which are dropped on their way back and, counted as a gap,
committed. `pipeline.transport.Consumer` keeps this instead: per partition,
the offsets handed over, and the last offset the fetcher gave, since the
partition was last sought (or assigned).
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from mode.utils.queues import FlowControlEvent


class OffsetSet:
    """A set of offsets kept as sorted, disjoint, inclusive ranges; offsets
    arrive mostly in order, so it stays a handful of ranges."""

    def __init__(self) -> None:
        self._lows: list[int] = []
        self._highs: list[int] = []

    def __contains__(self, offset: int) -> bool:
        at = bisect_right(self._lows, offset) - 1
        return at >= 0 and offset <= self._highs[at]

    def add(self, offset: int) -> None:
        """Add ``offset``; joins the ranges it touches."""
        lows, highs = self._lows, self._highs
        at = bisect_right(lows, offset) - 1
        if at >= 0 and offset <= highs[at]:
            return
        if at >= 0 and offset == highs[at] + 1:
            highs[at] = offset
        else:
            at += 1
            lows.insert(at, offset)
            highs.insert(at, offset)
        following = at + 1
        if following < len(lows) and lows[following] == highs[at] + 1:
            highs[at] = highs[following]
            del lows[following], highs[following]

    def ranges(self) -> list[tuple[int, int]]:
        """The ranges, first to last, each (lowest, highest)."""
        return list(zip(self._lows, self._highs, strict=True))


class HiddenReadOffsets(defaultdict[Any, int | None]):
    """Faust's read offsets, hidden from its fetch loop.

    The loop drops a record below a partition's read offset and counts a
    jump above it as a gap; reading None it does neither, and
    `pipeline.transport.Consumer.getmany` does both from what was really
    handed over. Faust's own writes (seeks, the loop) still land.
    """

    def __init__(self) -> None:
        super().__init__(lambda: None)

    def __getitem__(self, tp: Any) -> int | None:
        return None


class RefetchingFlowControl(FlowControlEvent):
    """Faust's flow control, telling what its clears drop.

    Faust clears every stream buffer when a worker loses partitions, and
    again each time the flow resumes; a worker taking partitions resumes it
    several times during recovery, the last time just after the seek to the
    committed offsets. A record in a buffer then was handed over and never
    reaches a stream: it is never acknowledged, so its partition's commits
    stop below it, and the client's position is past it (a partition whose
    first records were buffered at that moment stalled for good, one request
    never accepted). ``on_dropped`` gets, per partition, the lowest offset a
    clear dropped, to seek back to.
    """

    def __init__(
        self, on_dropped: Callable[[dict[Any, int]], None], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._on_dropped = on_dropped

    def clear(self) -> None:
        first: dict[Any, int] = {}
        for queue in self._queues:
            for item in queue._queue:  # type: ignore[attr-defined]
                message = getattr(item, "message", None)
                if message is None:
                    continue
                tp, offset = message.tp, message.offset
                if offset < first.get(tp, offset + 1):
                    first[tp] = offset
        super().clear()
        if first:
            self._on_dropped(first)
