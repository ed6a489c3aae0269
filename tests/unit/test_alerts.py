"""The Prometheus alert rules and scrape config, checked and unit-tested by promtool.

``promtool`` (Debian's ``prometheus`` package, installed by ``make install``)
is required: without it these tests fail, they never skip, so a machine that
cannot check the rules does not pass for one that did.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agents.ingest import lane_for
from schemas.types import PRIORITIES

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
SEVERITIES = {"page", "ticket"}
#: Grafana's own variables in a query, and what stands for them in a rule.
GRAFANA_VARIABLES = re.compile(r"\$(__rate_interval|__interval|__range)\b")


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (never skip) if it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: `make install` installs it (Debian "
            "package `prometheus`); the alert rules cannot be checked without it"
        )
    return subprocess.run(  # noqa: S603 - a fixed tool, our own arguments
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def assert_succeeds(result: subprocess.CompletedProcess[str]) -> None:
    """promtool exited 0; its output shows otherwise."""
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )


def load_yaml(path: Path) -> Any:
    """A YAML file of this repository."""
    return yaml.safe_load(path.read_text())


def alert_rules(rules: Any | None = None) -> dict[str, dict[str, Any]]:
    """Alert name → its rule, over every group of alerts.yml."""
    loaded = load_yaml(RULES) if rules is None else rules
    return {
        rule["alert"]: rule
        for group in loaded["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target of every dashboard."""
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                queries.append((panel["title"], target["expr"]))
    return queries


def test_alert_rules_are_valid() -> None:
    """`promtool check rules` accepts alerts.yml: PromQL, templates, durations."""
    assert_succeeds(promtool("check", "rules", str(RULES.relative_to(REPO))))


def test_prometheus_config_is_valid_with_its_rules() -> None:
    """`promtool check config` accepts prometheus.yml and finds its rule file
    at the relative path that holds in the repository and in the container."""
    result = promtool("check", "config", str(CONFIG.relative_to(REPO)))
    assert_succeeds(result)
    assert "1 rule files found" in result.stdout, result.stdout


def test_alert_rule_unit_tests_pass() -> None:
    """`promtool test rules alerts_test.yml`: every case fires, or stays
    quiet, exactly as written."""
    assert_succeeds(promtool("test", "rules", str(RULE_TESTS.relative_to(REPO))))


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """Each alert is expected to fire in some case and to stay quiet in
    another; no case names an alert that does not exist (promtool would pass
    a quiet case for a misspelt name)."""
    rules = alert_rules()
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in rules, f"alerts_test.yml tests unknown alert {name!r}"
            (firing if check.get("exp_alerts") else quiet).add(name)
    assert set(rules) - firing == set(), "alerts never expected to fire"
    assert set(rules) - quiet == set(), "alerts never expected to stay quiet"


def test_the_unit_tests_catch_alerts_that_never_fire(tmp_path: Path) -> None:
    """With every alert's expression replaced by one that never holds,
    `promtool test rules` fails on each alert: its firing case checks it."""
    rules = load_yaml(RULES)
    for rule in alert_rules(rules).values():
        rule["expr"] = "vector(1) == 0"
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0, result.stdout
    failed = set(re.findall(r"alertname: (\w+),", result.stdout + result.stderr))
    assert failed == set(alert_rules()), result.stdout


def test_every_alert_has_a_severity_and_what_to_tell() -> None:
    """severity is page or ticket; summary and description say what fired."""
    for name, rule in alert_rules().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_each_priority_has_its_latency_and_queue_alert() -> None:
    """One latency alert and one queue-depth alert per priority of the schema."""
    rules = alert_rules().values()
    for priority in PRIORITIES:
        latency = [
            rule
            for rule in rules
            if "notify_send_latency_seconds_bucket" in rule["expr"]
            and f'priority="{priority}"' in rule["expr"]
        ]
        queue = [
            rule
            for rule in rules
            if "notify_queue_depth_records" in rule["expr"]
            and rule["labels"].get("priority") == priority
        ]
        assert len(latency) == 1, (priority, latency)
        assert len(queue) == 1, (priority, queue)


def test_queue_alerts_read_the_lane_their_priority_rides() -> None:
    """Queue depth is per lane: each priority's alert reads the lane ingest
    sends that priority to (critical and transactional share one)."""
    for name, rule in alert_rules().items():
        priority = rule["labels"].get("priority")
        if priority is None:
            continue
        lanes = re.findall(r'lane="([^"]*)"', rule["expr"])
        assert lanes == [lane_for(priority)], (name, priority, lanes)


def test_rules_name_only_the_jobs_prometheus_scrapes() -> None:
    """Every job="..." an alert filters on is a job of prometheus.yml."""
    jobs = {job["job_name"] for job in load_yaml(CONFIG)["scrape_configs"]}
    named = {
        job
        for rule in alert_rules().values()
        for job in re.findall(r'job="([^"]*)"', rule["expr"])
    }
    assert named, "no alert watches a scrape target"
    assert named <= jobs, named - jobs


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each dashboard query, with Grafana's variables given a value, parses:
    promtool checks them as the expressions of recording rules."""
    queries = dashboard_queries()
    assert queries, "no dashboard queries found"
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": expr}
                    for n, (_, raw) in enumerate(queries)
                    for expr in [GRAFANA_VARIABLES.sub("5m", raw)]
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    assert_succeeds(promtool("check", "rules", str(path)))


def test_dashboard_panels_are_distinct_and_do_not_overlap() -> None:
    """Each panel has its own id and its own place on Grafana's 24-column grid."""
    for path in sorted(DASHBOARDS.glob("*.json")):
        panels = json.loads(path.read_text())["panels"]
        ids = [panel["id"] for panel in panels]
        assert len(ids) == len(set(ids)), (path.name, ids)
        cells: dict[tuple[int, int], str] = {}
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (path.name, panel["title"])
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], (path.name, other, panel["title"])
