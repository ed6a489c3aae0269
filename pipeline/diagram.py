"""The chain as a Mermaid flowchart, drawn from the app's real agents and topics."""

from __future__ import annotations

from collections.abc import Iterable

import faust

from pipeline.settings import LANES
from pipeline.topology import ALL_TOPICS
from schemas.records import CHANNELS

#: Which topics each agent writes to. Faust only knows an agent's input; the
#: outputs are declared here beside it and checked by the topology test.
AGENT_OUTPUTS: dict[str, tuple[str, ...]] = {
    **{
        f"ingest.{lane}": (
            "notify.accepted.critical",
            "notify.accepted.bulk",
            # a request already on its user's partition is decided in place
            *(f"notify.deliveries.{channel}.{lane}" for channel in CHANNELS),
            "notify.events",
            "notify.deadletter",
        )
        for lane in LANES
    },
    **{
        f"fanout.{lane}": (
            *(f"notify.deliveries.{channel}.{lane}" for channel in CHANNELS),
            "notify.events",
        )
        for lane in LANES
    },
    **{f"receipts.{lane}": ("notify.events",) for lane in LANES},
    "state.profiles": (),
    "state.preferences": (),
    "state.devices": (),
    "state.api_keys": (),
    "state.tenant_limits": (),
    "state.campaigns": (),
    "state.segments": (),
    "state.segment_members": (),
    **{
        f"send.{channel}.{lane}": (
            "notify.events",
            "notify.deadletter",
            "notify.users.devices",  # unregistered tokens deactivated
            "notify.suppressions",  # hard bounces, invalid numbers
        )
        for lane in LANES
        for channel in CHANNELS
    },
    "state.suppressions": (),
    "inbox.reads": (),
}
#: Tables each agent reads (dotted edges).
AGENT_READS: dict[str, tuple[str, ...]] = {
    **{
        f"{agent}.{lane}": (
            "profiles",
            "preferences",
            "devices",
            "tenant_limits",
            *(("campaigns",) if agent == "fanout" else ()),
        )
        for lane in LANES
        for agent in ("ingest", "fanout")
    },
    **{
        f"send.{channel}.{lane}": ("suppressions", "campaigns")
        for lane in LANES
        for channel in CHANNELS
    },
}
#: Tables each agent writes (drawn as cylinders).
AGENT_TABLES: dict[str, tuple[str, ...]] = {
    **{
        f"{agent}.{lane}": (
            "idempotency",
            "held_requests",
            "throttle",
            "digests",
            "status",
            "campaign_counts",
        )
        for lane in LANES
        for agent in ("ingest", "fanout")
    },
    **{f"receipts.{lane}": ("status", "campaign_counts") for lane in LANES},
    "state.profiles": ("profiles",),
    "state.preferences": ("preferences",),
    "state.devices": ("devices",),
    "state.api_keys": ("api_keys",),
    "state.tenant_limits": ("tenant_limits",),
    "state.campaigns": ("campaigns",),
    "state.segments": ("segments",),
    "state.segment_members": ("segment_members",),
    **{
        f"send.{channel}.{lane}": (
            "send_ledger",
            "retry_schedule",
            "failed_jobs",
            "inbox",
            "status",
            "campaign_counts",
        )
        for lane in LANES
        for channel in CHANNELS
    },
    "state.suppressions": ("suppressions",),
    "inbox.reads": ("inbox",),
}


#: Timers drawn as boxes too: (tables read, tables written, topics written).
TIMERS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "campaigns.expand": (
        ("campaigns", "segments", "segment_members", "profiles", "preferences"),
        ("campaign_progress",),
        ("notify.requests.bulk",),
    ),
}


#: Processes that are not Faust agents: (topic read, store written, note).
PROCESSES: dict[str, tuple[str, str, str]] = {
    "notify sink": ("notify.events", "ClickHouse notif_events", "batch consumer"),
}


def _node(name: str) -> str:
    return name.replace(".", "_").replace("-", "_").replace(" ", "_")


def agent_inputs(app: faust.App) -> dict[str, list[str]]:
    """Agent name → the (logical) topics it consumes, read from the app."""
    # The diagram draws logical names: a deployment's NOTIFY_TOPIC_PREFIX is
    # not part of the chain's shape.
    prefix = app.settings.topic_prefix  # type: ignore[attr-defined]
    inputs: dict[str, list[str]] = {}
    for agent in app.agents.values():
        topics: Iterable[str] = getattr(agent.channel, "topics", ())
        inputs[agent.name] = sorted(t.removeprefix(prefix) for t in topics)
    return dict(sorted(inputs.items()))


def _display(topic: str) -> str:
    """Per-channel delivery topics of a lane are drawn as one node."""
    parts = topic.split(".")
    if topic.startswith("notify.deliveries.") and len(parts) == 4:
        return f"notify.deliveries.{{{','.join(CHANNELS)}}}.{parts[3]}"
    return topic


def _agent_display(name: str) -> str:
    """A lane's per-channel send agents are drawn as one box."""
    parts = name.split(".")
    if parts[0] == "send" and len(parts) == 3:
        return f"send.{{{','.join(CHANNELS)}}}.{parts[2]}"
    return name


def _id(name: str) -> str:
    return _node(name.replace("{", "").replace("}", "").replace(",", "_"))


def mermaid(app: faust.App) -> str:
    """A ``flowchart LR``: topics as stadiums, agents as boxes, tables as cylinders."""
    lines = ["flowchart LR"]
    edges: list[str] = []
    for topic in dict.fromkeys(_display(spec.name) for spec in ALL_TOPICS):
        lines.append(f'    {_id(topic)}(["{topic}"])')
    for name, topics in agent_inputs(app).items():
        shown = _agent_display(name)
        agent = _id("agent_" + shown)
        lines.append(f'    {agent}["{shown}"]')
        for topic in topics:
            edges.append(f"    {_id(_display(topic))} --> {agent}")
        for topic in dict.fromkeys(map(_display, AGENT_OUTPUTS.get(name, ()))):
            edges.append(f"    {agent} --> {_id(topic)}")
        for table in AGENT_TABLES.get(name, ()):
            edges.append(f"    {agent} --> {_id('table_' + table)}[({table})]")
        for table in AGENT_READS.get(name, ()):
            edges.append(f"    {_id('table_' + table)}[({table})] -.-> {agent}")
    for name, (reads, writes, outputs) in TIMERS.items():
        timer = _id("timer_" + name)
        lines.append(f'    {timer}[/"{name} (timer)"/]')
        for table in reads:
            edges.append(f"    {_id('table_' + table)}[({table})] -.-> {timer}")
        for table in writes:
            edges.append(f"    {timer} --> {_id('table_' + table)}[({table})]")
        for topic in outputs:
            edges.append(f"    {timer} --> {_id(topic)}")
    for name, (topic, store, note) in PROCESSES.items():
        process = _id("process_" + name)
        lines.append(f'    {process}[["{name} ({note})"]]')
        edges.append(f"    {_id(topic)} --> {process}")
        edges.append(f"    {process} --> {_id('store_' + store)}[({store})]")
    return "\n".join(dict.fromkeys(lines + edges))
