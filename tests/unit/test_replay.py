"""``notify replay``'s ranges, chunks, checkpoints and progress line."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.replay import (
    Checkpoint,
    Progress,
    ReplayError,
    Span,
    chunks,
    job_id,
    parse_bound,
)


def test_a_bound_is_an_offset_or_a_time_with_its_offset() -> None:
    assert parse_bound("1200") == 1200
    assert parse_bound("2026-12-05T03:00Z") == datetime(2026, 12, 5, 3, tzinfo=UTC)
    assert parse_bound(None) is None
    with pytest.raises(ReplayError, match="UTC offset"):
        parse_bound("2026-12-05T03:00")
    with pytest.raises(ReplayError, match="neither"):
        parse_bound("yesterday")


def test_a_span_goes_in_chunks_that_tile_it() -> None:
    pieces = list(chunks(Span(3, 5, 27), size=10))
    assert pieces == [Span(3, 5, 15), Span(3, 15, 25), Span(3, 25, 27)]
    assert list(chunks(Span(0, 9, 9))) == []


def test_a_checkpoint_keeps_the_ranges_and_resumes_after_the_last_chunk(
    tmp_path: Path,
) -> None:
    """Stopped after a chunk, the same job loads the ranges it began with
    (not the topic's end now) and what is left of each; finished, it is gone."""
    job = job_id("notify.events", 0, None, "clickhouse")
    first = Checkpoint.load(tmp_path, job)
    assert first.spans == []
    first.spans = [Span(0, 0, 100), Span(1, 10, 20)]
    first.save(0, 40)
    again = Checkpoint.load(tmp_path, job)
    assert again.spans == [Span(0, 0, 100), Span(1, 10, 20)]
    assert [again.remaining(s) for s in again.spans] == [
        Span(0, 40, 100),
        Span(1, 10, 20),
    ]
    again.finish()
    assert Checkpoint.load(tmp_path, job).spans == []
    assert job != job_id("notify.events", 0, None, "pipeline")


def test_the_progress_line_has_the_rate_and_the_time_left() -> None:
    ticks = iter([0.0, 0.5, 2.0])
    lines: list[str] = []
    progress = Progress(1_000, lines.append, clock=lambda: next(ticks))
    progress.add(100)  # within the second: no line
    progress.add(300)
    assert lines == [
        "[############..................] 40.0% 400/1,000 at 200/s, ETA 3s"
    ]
