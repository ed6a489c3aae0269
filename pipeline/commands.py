"""Project commands added to the app's CLI: ``notify topics``, ``notify broker``, ..."""

from __future__ import annotations

import asyncio
import os
import urllib.parse

import click
from faust.cli import AppCommand, argument, option

from pipeline import campaign_cli as campaigns
from pipeline import dlq as deadletters
from pipeline.admin import ensure_topics
from pipeline.analytics.funnel import table as funnel_table
from pipeline.app import app
from pipeline.broker import EmbeddedBroker, EmbeddedCluster
from pipeline.diagram import mermaid
from pipeline.topology import DEADLETTER, topic_name


def api_client(
    api: str | None, key: str | None, *, admin: bool = False
) -> campaigns.Client:
    """A client of a worker's API: ``--api`` (default: this machine's worker)
    with ``--key`` (default NOTIFY_API_KEY, else the dev or admin key)."""
    settings = app.settings
    fallback = settings.admin_api_key if admin else settings.dev_api_key
    return campaigns.Client(
        api=api or f"http://127.0.0.1:{settings.web_port}",
        key=key or os.environ.get("NOTIFY_API_KEY") or fallback.get_secret_value(),
    )


API_OPTION = option(
    "--api",
    default=None,
    help="A worker's API (default: this machine's, on NOTIFY_WEB_PORT).",
)
KEY_OPTION = option("--key", default=None, help="API key (default: NOTIFY_API_KEY).")


@app.command()
async def topics(self: AppCommand) -> None:
    """Create every topic of the topology that does not exist yet."""
    app.discover()
    created = ensure_topics(app.settings)
    self.say(f"created: {', '.join(created) if created else 'nothing (all exist)'}")


@app.command()
async def diagram(self: AppCommand) -> None:
    """Print the chain as a Mermaid flowchart, from the app's agents and topics."""
    app.discover()
    self.say(mermaid(app))


@app.command(
    option("--port", type=int, default=0, help="Loopback port (0: pick a free one)."),
    option(
        "--nodes",
        type=int,
        default=1,
        help="Nodes (3: a cluster with three replicas of every topic and "
        "min.insync.replicas 2, as in production).",
    ),
)
async def broker(self: AppCommand, port: int, nodes: int) -> None:
    """Run the embedded Apache Kafka broker (KRaft) until Ctrl-C."""
    workdir = app.settings.data_dir / "broker"
    running: EmbeddedBroker | EmbeddedCluster
    if nodes > 1:
        if port:
            raise SystemExit("notify broker: --port is for one node; a cluster picks")
        running = EmbeddedCluster(nodes, data_dir=workdir)
        logs = ", ".join(
            str(workdir / f"node-{n}" / "broker.log") for n in range(1, nodes + 1)
        )
        replicas = f" NOTIFY_TOPIC_REPLICATION_FACTOR={nodes}"
    else:
        running = EmbeddedBroker(
            port=port or None, data_dir=workdir, log_path=workdir / "broker.log"
        )
        logs, replicas = str(workdir / "broker.log"), ""
    with running:
        self.say(
            f"Kafka listening (started in {running.started_in or 0:.1f} s): "
            f"export NOTIFY_BROKER_URL={running.url}{replicas}"
        )
        self.say(f"broker log: {logs} (parent {os.getpid()})")
        stop = asyncio.Event()
        try:
            await stop.wait()
        finally:
            self.say("stopping broker")


@app.command(
    argument("action", metavar="list|show|replay"),
    argument("positions", nargs=-1, metavar="[PARTITION@OFFSET]..."),
    option(
        "--stage",
        default=None,
        help="Only entries of this stage or its sub-stages (send: send.*).",
    ),
    option("--code", default=None, help="Only entries with this notify.dlq.code."),
    option("--limit", type=int, default=None, help="list: at most N, oldest first."),
    option("--json", "as_json", is_flag=True, help="list: one JSON object a line."),
    option("--all", "everything", is_flag=True, help="replay: every dead letter."),
    option("--dry-run", is_flag=True, help="replay: print what would be produced."),
    option(
        "--to",
        default=None,
        help="replay: produce onto this topic instead (a pipeline topic's name "
        "gets NOTIFY_TOPIC_PREFIX).",
    ),
)
async def dlq(
    self: AppCommand,
    action: str,
    positions: tuple[str, ...],
    stage: str | None,
    code: str | None,
    limit: int | None,
    as_json: bool,
    everything: bool,
    dry_run: bool,
    to: str | None,
) -> None:
    """Dead letters: list, show PARTITION@OFFSET, replay (positions or filters).

    \b
    notify dlq list [--stage S] [--code C] [--limit N] [--json]
    notify dlq show PARTITION@OFFSET
    notify dlq replay (PARTITION@OFFSET... | --stage S | --code C | --all)
                      [--dry-run] [--to TOPIC]

    A replay produces the original key and value onto the source topic and
    partition (or --to), with a notify.replayed_from header; a send.* job gets
    its redrive count raised so the send ledger tries it again.
    """
    try:
        request = deadletters.DlqRequest.parse(
            action,
            positions,
            stage=stage,
            code=code,
            limit=limit,
            as_json=as_json,
            everything=everything,
            dry_run=dry_run,
            to=to,
            deadletter=topic_name(app.settings, DEADLETTER),
        )
    except deadletters.DlqUsageError as exc:
        self.stderr.write(f"notify dlq: {exc}\n")
        raise SystemExit(2) from exc

    def note(line: str) -> None:
        self.stderr.write(line + "\n")

    try:
        # confluent-kafka blocks; the worker's event loop stays free meanwhile.
        await asyncio.to_thread(deadletters.run, request, app.settings, self.say, note)
    except deadletters.DlqError as exc:
        self.stderr.write(f"notify dlq: {exc}\n")
        raise SystemExit(1) from exc


@app.command(
    argument("action", metavar="create|status|cancel|pause|resume"),
    argument("target", metavar="BODY.json|-|CAMPAIGN_ID"),
    option("--follow", is_flag=True, help="status/create: a live progress bar."),
    API_OPTION,
    KEY_OPTION,
)
async def campaign(
    self: AppCommand,
    action: str,
    target: str,
    follow: bool,
    api: str | None,
    key: str | None,
) -> None:
    """Campaigns through the HTTP API: create one from a JSON body, its
    status (--follow: progress bar with rate and ETA), cancel, pause, resume.

    \b
    notify campaign create body.json [--follow]
    notify campaign status c_... [--follow]
    notify campaign cancel|pause|resume c_...
    """
    client = api_client(api, key)
    try:
        await asyncio.to_thread(
            campaigns.run, client, action, target, self.say, watch=follow
        )
    except campaigns.CampaignCliError as exc:
        self.stderr.write(f"notify campaign: {exc}\n")
        raise SystemExit(1) from exc


@app.command()
async def sink(self: AppCommand) -> None:
    """Run the ClickHouse sink: notify.events into notif_events, in batches.

    It owns the analytics store (with the in-process chDB store, the only
    process that may open it) and answers the workers' analytics queries on
    NOTIFY_SINK_PORT. Stops on Ctrl-C or SIGTERM after inserting what it holds.
    """
    from pipeline.analytics import service  # chDB loads only in this process

    await service.main(app.settings)


@app.command(
    argument("query"),
    option(
        "--format",
        "fmt",
        default="PrettyCompact",
        help="A ClickHouse output format: PrettyCompact, TabSeparated, CSV, JSON...",
    ),
    API_OPTION,
    KEY_OPTION,
)
async def sql(
    self: AppCommand, query: str, fmt: str, api: str | None, key: str | None
) -> None:
    """Run read-only SQL on the analytics store and print the answer.

    \b
    notify sql "SELECT event_type, count() FROM notif_events GROUP BY event_type"
    """
    client = api_client(api, key, admin=True)
    try:
        answer = await asyncio.to_thread(
            client.raw, "POST", "/v1/analytics/sql", {"sql": query, "format": fmt}
        )
    except campaigns.CampaignCliError as exc:
        self.stderr.write(f"notify sql: {exc}\n")
        raise SystemExit(1) from exc
    self.say(answer.decode().rstrip("\n"))


@app.command(
    option("--campaign", "campaign_id", required=True, help="The campaign id."),
    option("--since", default="7d", help="How far back: 7d, 24h, 30m."),
    option(
        "--by",
        default="channel",
        type=click.Choice(["channel", "variant", "template", "type"]),
        help="Break the funnel down by this.",
    ),
    API_OPTION,
    KEY_OPTION,
)
async def funnel(
    self: AppCommand,
    campaign_id: str,
    since: str,
    by: str,
    api: str | None,
    key: str | None,
) -> None:
    """A campaign's funnel: sent, delivered, opened, clicked, with rates and
    the accepted→sent latency percentiles (A/B variants side by side with
    --by variant)."""
    client = api_client(api, key)
    query = urllib.parse.urlencode(
        {"campaign_id": campaign_id, "since": since, "by": by}
    )
    try:
        report = await asyncio.to_thread(
            client.call, "GET", f"/v1/analytics/funnel?{query}"
        )
    except campaigns.CampaignCliError as exc:
        self.stderr.write(f"notify funnel: {exc}\n")
        raise SystemExit(1) from exc
    self.say(f"campaign {campaign_id}, last {since}, by {by}:")
    self.say(funnel_table(report["rows"], by))


@app.command(
    option(
        "--topic", required=True, help="The topic (a pipeline topic by its own name)."
    ),
    option("--from", "start", default=None, help="An offset, or an ISO 8601 time."),
    option(
        "--to",
        "stop",
        default=None,
        help="Exclusive; an offset or a time (default: the end).",
    ),
    option(
        "--into",
        required=True,
        type=click.Choice(["clickhouse", "pipeline"]),
        help="Insert events into ClickHouse again, or re-drive records.",
    ),
    option("--dry-run", is_flag=True, help="Decide or count only; nothing is written."),
    option("--json", "as_json", is_flag=True, help="Dry run: every decision as JSON."),
)
async def replay(
    self: AppCommand,
    topic: str,
    start: str | None,
    stop: str | None,
    into: str,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Replay a range of a topic into ClickHouse or the pipeline (resumable).

    \b
    notify replay --topic notify.events --from 2026-12-01T00:00Z --into clickhouse
    notify replay --topic notify.requests.bulk --from 0 --into pipeline --dry-run
    """
    from pipeline import replay as replays
    from pipeline.analytics.queries import QueryFailed, StoreUnavailable
    from pipeline.replay_run import replay as run_replay

    try:
        await asyncio.to_thread(
            run_replay,
            app.settings,
            topic,
            replays.parse_bound(start),
            replays.parse_bound(stop),
            into,
            dry_run=dry_run,
            say=self.say,
            as_json=as_json,
        )
    except (replays.ReplayError, QueryFailed, StoreUnavailable) as exc:
        self.stderr.write(f"notify replay: {exc}\n")
        raise SystemExit(1) from exc


@app.command(
    option(
        "--since", default="1d", help="Notifications accepted this far back: 1d, 6h..."
    ),
    option("--grace", default="5m", help="How long an outcome may take: 5m, 30s..."),
    option("--tenant", default=None, help="One tenant only."),
)
async def reconcile(
    self: AppCommand, since: str, grace: str, tenant: str | None
) -> None:
    """Check every accepted notification has one outcome per channel (the
    no-loss proof, on ClickHouse); exit 1 if one is missing or doubled."""
    from datetime import UTC, datetime

    import orjson

    from pipeline.analytics import reconcile as check
    from pipeline.analytics.funnel import seconds
    from pipeline.analytics.queries import QueryFailed, StoreUnavailable, read_query

    try:
        sql_text = check.reconcile_sql(seconds(since), seconds(grace), tenant)
        answer = await asyncio.to_thread(read_query, app.settings, sql_text, "JSON")
    except (ValueError, QueryFailed, StoreUnavailable) as exc:
        self.stderr.write(f"notify reconcile: {exc}\n")
        raise SystemExit(2) from exc
    found = check.classify(orjson.loads(answer)["data"], datetime.now(UTC))
    for line in check.report(found):
        self.say(line)
    if not found.ok:
        raise SystemExit(1)
