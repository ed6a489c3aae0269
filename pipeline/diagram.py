"""The chain as a Mermaid flowchart, drawn from the app's real agents and topics."""

from __future__ import annotations

from collections.abc import Iterable

import faust

from pipeline.topology import ALL_TOPICS

#: Which topics each agent writes to. Faust only knows an agent's input; the
#: outputs are declared here beside it and checked by the topology test.
AGENT_OUTPUTS: dict[str, tuple[str, ...]] = {
    "ingest.critical": ("notify.events", "notify.deadletter"),
    "ingest.bulk": ("notify.events", "notify.deadletter"),
}


def _node(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


def agent_inputs(app: faust.App) -> dict[str, list[str]]:
    """Agent name → the topics it consumes, read from the app."""
    inputs: dict[str, list[str]] = {}
    for agent in app.agents.values():
        topics: Iterable[str] = getattr(agent.channel, "topics", ())
        inputs[agent.name] = sorted(topics)
    return dict(sorted(inputs.items()))


def mermaid(app: faust.App) -> str:
    """A ``flowchart LR`` with topics as stadiums and agents as boxes."""
    lines = ["flowchart LR"]
    for spec in ALL_TOPICS:
        lines.append(f'    {_node(spec.name)}(["{spec.name}"])')
    for name, topics in agent_inputs(app).items():
        lines.append(f'    {_node("agent_" + name)}["{name}"]')
        for topic in topics:
            lines.append(f"    {_node(topic)} --> {_node('agent_' + name)}")
        for topic in AGENT_OUTPUTS.get(name, ()):
            lines.append(f"    {_node('agent_' + name)} --> {_node(topic)}")
    return "\n".join(lines)
