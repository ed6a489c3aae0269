"""The README's diagram and the settings table (docs/settings.md) match the
app; topics are declared once."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import faust
from faust.types import TopicT

from pipeline.app import DISCOVER, app
from pipeline.diagram import (
    AGENT_OUTPUTS,
    AGENT_TABLES,
    TIMERS,
    agent_inputs,
    mermaid,
)
from pipeline.settings import Settings
from pipeline.topology import ALL_TOPICS, EVENTS, SUPPRESSIONS, Topology, topic_name

for _module in DISCOVER:
    importlib.import_module(_module)  # registers every agent, table and view

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SETTINGS_DOC = (REPO / "docs" / "settings.md").read_text()


def test_readme_diagram_is_the_apps_real_chain() -> None:
    """The Mermaid block in the README is what `notify diagram` draws today."""
    blocks = re.findall(r"```mermaid\n(.*?)```", README, flags=re.S)
    assert blocks, "README has no mermaid diagram"
    assert blocks[0].strip() == mermaid(app).strip()


def test_every_table_is_drawn_with_an_agent_that_writes_it() -> None:
    """The diagram's table map is written by hand: a new table must join it."""
    drawn = {table for tables in AGENT_TABLES.values() for table in tables}
    drawn |= {table for _, writes, _ in TIMERS.values() for table in writes}
    assert set(app.tables.keys()) == drawn


def test_every_agent_reads_and_writes_declared_topics() -> None:
    """No agent consumes or produces a topic that topology.py does not declare."""
    declared = {spec.name for spec in ALL_TOPICS}
    inputs = agent_inputs(app)
    assert inputs, "no agents registered"
    assert set(inputs) == set(AGENT_OUTPUTS)
    for name, topics in inputs.items():
        assert set(topics) <= declared, name
        assert set(AGENT_OUTPUTS[name]) <= declared, name


def test_every_agent_has_help_text() -> None:
    """`notify agents` reads like a table of contents: one line per agent."""
    for agent in app.agents.values():
        assert agent.help and "\n" not in agent.help.strip(), agent.name


def test_topic_names_are_unique() -> None:
    """Each topic is declared exactly once."""
    names = [spec.name for spec in ALL_TOPICS]
    assert len(names) == len(set(names))


def test_every_setting_is_documented() -> None:
    """Each NOTIFY_ variable has a row in docs/settings.md, which the README
    links to; and the table names no variable the settings lack."""
    assert "(docs/settings.md)" in README
    for name in Settings.model_fields:
        assert f"| `NOTIFY_{name.upper()}` |" in SETTINGS_DOC, name
    documented = set(
        re.findall(r"^\| `NOTIFY_([A-Z0-9_]+)` \|", SETTINGS_DOC, flags=re.M)
    )
    assert documented <= {name.upper() for name in Settings.model_fields}


def test_topic_names_on_the_broker_carry_the_prefix() -> None:
    """A spec or its name, under NOTIFY_TOPIC_PREFIX; none by default."""
    assert topic_name(Settings(topic_prefix=""), EVENTS) == "notify.events"
    staging = Settings(topic_prefix="staging.")
    assert topic_name(staging, EVENTS) == "staging.notify.events"
    assert topic_name(staging, "notify.deadletter") == "staging.notify.deadletter"


def test_the_topology_binds_every_topic_under_the_prefix() -> None:
    """Every topic a worker reads or writes is prefixed; lookups stay logical."""
    settings = Settings(topic_prefix="p.")
    topology = Topology(faust.App("topology-prefix-test"), settings)
    bound = {
        name
        for attribute in vars(topology).values()
        for channel in (
            attribute.values() if isinstance(attribute, dict) else [attribute]
        )
        if isinstance(channel, TopicT)
        for name in channel.topics
    }
    assert bound == {f"p.{spec.name}" for spec in ALL_TOPICS}
    suppressions = topology.state_inputs[SUPPRESSIONS.name]
    assert suppressions.get_topic_name() == "p.notify.suppressions"
