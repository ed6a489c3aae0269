-- Every decision of every stage, one row per event of notify.events.
--
-- Rows are kept once per event id: an event said twice (a job redelivered
-- after a crash says `sent` again under the same id, a replayed range is
-- inserted again) is folded by the ReplacingMergeTree, whose sorting key
-- holds the event id (the other key columns are the same for every copy of
-- an event). `notif_events` reads it with FINAL, so a query never sees a
-- copy the merges have not folded yet.
CREATE TABLE IF NOT EXISTS notif_events_log
(
    event_id String,
    notification_id String,
    tenant LowCardinality(String),
    user_id String,
    campaign_id String,
    type LowCardinality(String),
    priority LowCardinality(String),
    lane LowCardinality(String),
    channel LowCardinality(String),
    provider LowCardinality(String),
    event_type LowCardinality(String),
    stage LowCardinality(String),
    template LowCardinality(String),
    variant LowCardinality(String),
    locale LowCardinality(String),
    reason String,
    error String,
    attempt UInt16,
    digest String,
    until Nullable(DateTime64(3, 'UTC')),
    ts DateTime64(3, 'UTC'),
    kafka_partition UInt16,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (tenant, campaign_id, event_type, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE VIEW IF NOT EXISTS notif_events AS SELECT * FROM notif_events_log FINAL;
