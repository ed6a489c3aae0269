"""The dashboard on a real worker, in a real browser.

One worker and the sink (the analytics store's owner) on topics of their
own get real traffic: in-app notifications on the critical lane, a campaign
on the bulk lane, a request no decoder takes (dead-lettered). Debian's
headless chromium, driven through its chromedriver by Selenium and unable
to resolve any host but loopback, signs in through the page's form with the
admin key and must show exactly what the API answers: every figure of
``GET /v1/dashboard``, the breakers of ``/health``, the campaign of
``GET /v1/campaigns/{id}`` and its funnel from ``GET /v1/analytics/funnel``;
its plots hold the series; its console stays free of errors; a wrong key
brings the form back with the API's message. The screenshot is kept in
``var/artifacts/dashboard.png``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from pipeline.broker import free_port
from tests.integration.test_campaigns import (
    add_users,
    campaign_body,
    create,
    profiles_known,
)
from tests.support import (
    ADMIN_KEY,
    DEV_KEY,
    REPO,
    BrokerUnderTest,
    SinkProcess,
    Topics,
    WorkerProcess,
    call,
    module_worker,
    produce,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOT = REPO / "var" / "artifacts" / "dashboard.png"

#: What the traffic is: in-app notifications on the critical lane, and a
#: campaign's recipients (in-app, bulk lane).
DIRECT = 6
RECIPIENTS = 4
MALFORMED = b'{"recipient": "not an object"'

#: Every figure on the page: each element with data-metric, its data-value
#: (the figure as the API gave it) and its text (as shown).
FIGURES_JS = """
const found = {};
for (const element of document.querySelectorAll("[data-metric]")) {
  found[element.dataset.metric] = [element.dataset.value, element.textContent];
}
const sends = window.dashboardPlots && window.dashboardPlots.sends;
return {figures: found, sends: sends ? sends.data : null};
"""


@dataclass(frozen=True)
class Stack:
    """The worker, its topics, the sink, and the traffic they carried."""

    worker: WorkerProcess
    topics: Topics
    sink: SinkProcess
    campaign_id: str

    @property
    def port(self) -> int:
        """The worker's web port."""
        return self.worker.web_port

    @property
    def url(self) -> str:
        """The worker's dashboard page."""
        return f"http://127.0.0.1:{self.port}/dashboard"

    def api(self, path: str, key: str = ADMIN_KEY) -> Any:
        """GET ``path`` with ``key``; its JSON, which must be a 200."""
        reply = call(self.port, "GET", path, key=key)
        assert reply.status == 200, (path, reply.status, reply.body)
        return reply.body


@pytest.fixture(scope="module")
def stack(
    broker: BrokerUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One worker and the sink on topics of their own, after the traffic."""
    directory = tmp_path_factory.mktemp("dashboard")
    sink_port = free_port()
    with ExitStack() as running:
        with pytest.MonkeyPatch.context() as patch:
            # The worker takes it from the environment: its analytics calls
            # reach this sink.
            patch.setenv("NOTIFY_SINK_URL", f"http://127.0.0.1:{sink_port}")
            worker, topics = running.enter_context(
                module_worker(broker.url, directory, "dash")
            )
        sink = SinkProcess.reading(
            broker.url, topics, directory, unique("dash-sink"), port=sink_port
        ).start()
        running.callback(sink.stop)
        sink.wait_ready(timeout=90)
        campaign_id = send_traffic(broker, worker, topics)
        yield Stack(worker, topics, sink, campaign_id)


def send_traffic(broker: BrokerUnderTest, worker: WorkerProcess, topics: Topics) -> str:
    """In-app notifications, a malformed request and a campaign; the
    campaign's id once everything has ended."""
    port = worker.web_port
    for n in range(DIRECT):
        reply = call(
            port,
            "POST",
            "/v1/notifications",
            {
                "idempotency_key": unique(f"dash{n}"),
                "recipient": {"user_id": unique("du")},
                "type": "comment_reply",
                "priority": "transactional",
                "channels": ["in_app"],
                "data": {"author": "Bob", "excerpt": f"reply {n}"},
            },
        )
        assert reply.status == 202, reply.body
    produce(broker.bootstrap, topics("notify.requests.bulk"), [(b"u_x", MALFORMED)])
    tag = unique("dash")
    profiles_known(worker, add_users(broker, topics, RECIPIENTS, [tag]))
    cid = create(worker, campaign_body(tag))

    def done() -> bool:
        shown = call(port, "GET", f"/v1/campaigns/{cid}").body
        figures = call(port, "GET", "/v1/dashboard", key=ADMIN_KEY).body
        totals = {
            (item["lane"], item["channel"]): item["totals"]
            for item in figures["series"]["traffic"]
        }
        return (
            shown["state"] == "completed"
            and shown["counts"].get("sent") == RECIPIENTS
            and totals.get(("critical", "in_app"), {}).get("sent") == DIRECT
            and totals.get(("bulk", "in_app"), {}).get("sent") == RECIPIENTS
            and figures["dead_letters"]["size"] == 1
            # Three samples at least: two points on each plot.
            and len(figures["series"]["t"]) >= 2
        )

    wait_for(done, timeout=120, interval=1.0)
    funnel = f"/v1/analytics/funnel?campaign_id={cid}&tenant=default"
    wait_for(
        lambda: (
            (rows := call(port, "GET", funnel, key=ADMIN_KEY).body.get("rows"))
            and rows[0]["sent"] == RECIPIENTS
        ),
        timeout=60,
        interval=1.0,
    )
    return cid


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Debian's chromium, headless, through Debian's chromedriver; every host
    but loopback unresolvable, so a file from elsewhere would be missing."""
    missing = [
        name
        for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
        if path is None
    ]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: `make install` installs them "
            "(Debian packages chromium and chromium-driver, through apt-get)"
        )
    assert CHROMIUM is not None and CHROMEDRIVER is not None
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # chromium refuses to start sandboxed as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--window-size=1400,2600",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options,
        service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
    )
    try:
        yield driver
    finally:
        driver.quit()


def sign_in(driver: webdriver.Chrome, key: str) -> None:
    """Type ``key`` into the page's form and send it."""
    field = wait_for(lambda: visible(driver, "api-key"), timeout=15)
    field.clear()
    field.send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()


def visible(driver: webdriver.Chrome, element_id: str) -> Any:
    """The element with ``element_id`` if it is displayed, else None."""
    found = driver.find_elements(By.ID, element_id)
    return found[0] if found and found[0].is_displayed() else None


def page_figures(driver: webdriver.Chrome) -> dict[str, Any]:
    """Every figure on the page and the sends plot's data."""
    return driver.execute_script(FIGURES_JS)  # type: ignore[no-any-return]


def last(values: list[Any]) -> Any:
    """The newest point of a series, None if it has none."""
    return values[-1] if values else None


def expected_figures(answer: dict[str, Any]) -> dict[str, Any]:
    """What the page must show of a ``GET /v1/dashboard`` answer, named as
    its data-metric attributes name them."""
    series = answer["series"]
    figures: dict[str, Any] = {
        "app_id": answer["app_id"],
        "sampled_at": answer["sampled_at"],
        "dead_letters/size": answer["dead_letters"]["size"],
    }
    for item in series["traffic"]:
        name = f"traffic/{item['lane']}/{item['channel'] or '-'}/"
        figures[name + "rate/sent"] = last(item["rates"].get("sent", []))
        for quantile in ("p50", "p95", "p99"):
            figures[name + f"latency/{quantile}"] = last(item["latency"][quantile])
        for outcome, count in item["totals"].items():
            figures[name + f"total/{outcome}"] = count
    for gauge in ("queue_depth", "backlog", "lag"):
        for key, values in series[gauge].items():
            figures[f"{gauge}/{key}"] = last(values)
    for provider, breaker in answer["breakers"].items():
        for field in ("state", "error_rate", "calls", "times_opened"):
            figures[f"breaker/{provider}/{field}"] = breaker[field]
    for entry in answer["dead_letters"]["newest"]:
        for field in ("time", "stage", "code", "reason"):
            figures[f"dead_letters/{entry['position']}/{field}"] = entry[field]
    for campaign in answer["campaigns"]:
        figures.update(campaign_figures(campaign))
    return figures


def campaign_figures(campaign: dict[str, Any]) -> dict[str, Any]:
    """What the page must show of one campaign's status."""
    name = f"campaign/{campaign['campaign_id']}/"
    figures = {
        name + "state": campaign["state"],
        name + "walked": campaign["walked"],
        name + "partitions_done": campaign["partitions_done"],
    }
    for count, value in campaign["counts"].items():
        figures[name + f"count/{count}"] = value
    return figures


def funnel_figures(report: dict[str, Any]) -> dict[str, Any]:
    """What the page must show of a funnel report."""
    figures: dict[str, Any] = {}
    for row in report["rows"]:
        name = f"funnel/{row['key']}/"
        for field in ("sent", "delivered", "opened", "clicked"):
            figures[name + field] = row[field]
        for field in ("delivery_rate", "open_rate", "click_rate"):
            figures[name + field] = row[field]
        latency = row["latency_ms"] or {}
        figures[name + "latency_p50"] = latency.get("p50")
        figures[name + "latency_p99"] = latency.get("p99")
    return figures


def mismatches(
    expected: dict[str, Any], shown: dict[str, list[str]], prefix: str = ""
) -> list[str]:
    """Each figure the page shows otherwise than ``expected`` (among those
    named ``prefix``...), or shows and should not, or lacks."""
    wrong = []
    names = {name for name in shown if name.startswith(prefix)} | set(expected)
    for name in sorted(names):
        if name not in expected or name not in shown:
            wrong.append(
                f"{name}: expected {expected.get(name)!r}, shown {shown.get(name)}"
            )
            continue
        value, text = shown[name]
        want = expected[name]
        if want is None:
            same = value == "" and text == "–"
        elif isinstance(want, bool) or not isinstance(want, int | float):
            same = value == str(want)
        else:
            same = value != "" and float(value) == float(want)
            if isinstance(want, int):  # counts are shown whole, 1,234
                same = same and text == f"{want:,}"
        if not same:
            wrong.append(f"{name}: expected {want!r}, shown {value!r} as {text!r}")
    return wrong


def browser_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console's SEVERE entries since the last read."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_the_dashboard_shows_what_the_api_answers(
    stack: Stack, browser: webdriver.Chrome
) -> None:
    """Signed in with the admin key through the form, the page shows every
    figure of the dashboard's answer, the breakers of /health, the campaign's
    figures and its funnel, exactly; its sends plot holds the series; the
    console has no error; the screenshot is kept."""
    browser.get(stack.url)
    assert visible(browser, "login") and not visible(browser, "board")
    sign_in(browser, ADMIN_KEY)
    wait_for(lambda: visible(browser, "board"), timeout=15)

    # The funnel of the campaign chosen in the select, from the analytics store.
    def listed() -> Any:
        select = Select(browser.find_element(By.ID, "funnel-campaign"))
        values = [option.get_attribute("value") for option in select.options]
        return select if stack.campaign_id in values else None

    wait_for(listed, timeout=15).select_by_value(stack.campaign_id)
    funnel = stack.api(
        f"/v1/analytics/funnel?campaign_id={stack.campaign_id}&tenant=default&since=7d"
    )
    wait_for(
        lambda: (
            not mismatches(
                funnel_figures(funnel), page_figures(browser)["figures"], "funnel/"
            )
        ),
        timeout=20,
    )

    # Every figure of the answer: read until the page and the API show the
    # same sample and the same breakers and dead letters (the traffic is over,
    # so the counts no longer move; the breakers' windows empty in seconds).
    attempts: list[list[str]] = []

    def consistent() -> tuple[dict[str, Any], dict[str, Any]] | None:
        shown = page_figures(browser)
        answer = stack.api("/v1/dashboard")
        figures = {
            k: v for k, v in shown["figures"].items() if not k.startswith("funnel/")
        }
        attempts.append(mismatches(expected_figures(answer), figures))
        return (answer, shown) if not attempts[-1] else None

    try:
        answer, shown = wait_for(consistent, timeout=60, interval=1.0)
    except AssertionError:
        pytest.fail(
            "the page never showed what the API answered:\n" + "\n".join(attempts[-1])
        )
    figures = shown["figures"]
    series = answer["series"]
    assert figures["traffic/critical/in_app/total/sent"][0] == str(DIRECT)
    assert figures["traffic/bulk/in_app/total/sent"][0] == str(RECIPIENTS)
    assert figures["dead_letters/size"][0] == "1"
    (dead,) = answer["dead_letters"]["newest"]
    assert dead["stage"] == "ingest" and dead["reason"]
    assert set(series["queue_depth"]) == {"critical", "bulk"}

    # The sends plot holds the series: one x per point, a line per lane and
    # channel that sent, each point the rate the API gives.
    sends = shown["sends"]
    assert sends is not None and len(sends[0]) == len(series["t"]) > 1
    assert sends[0] == pytest.approx(series["t"])
    sending = [item for item in series["traffic"] if "sent" in item["rates"]]
    assert sends[1:] == [item["rates"]["sent"] for item in sending]
    assert any(value for line in sends[1:] for value in line)
    drawn = browser.find_element(By.ID, "plot-sends")
    assert drawn.find_elements(By.TAG_NAME, "canvas")
    assert drawn.get_attribute("data-points") == str(len(series["t"]))

    # The breakers as /health has them; the campaign as its own status has it.
    health = stack.api("/health", key=DEV_KEY)
    providers = health.get("providers") or {}
    assert {
        name.split("/")[1] for name in figures if name.startswith("breaker/")
    } == set(providers)
    for provider, breaker in providers.items():
        assert figures[f"breaker/{provider}/state"][0] == breaker["state"]
        assert figures[f"breaker/{provider}/times_opened"][0] == str(
            breaker["times_opened"]
        )
    campaign = stack.api(f"/v1/campaigns/{stack.campaign_id}")
    assert campaign["state"] == "completed"
    assert not mismatches(
        campaign_figures(campaign), figures, f"campaign/{stack.campaign_id}/"
    )

    assert browser_errors(browser) == []
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000


def test_a_wrong_key_brings_the_form_back_with_the_apis_message(
    stack: Stack, browser: webdriver.Chrome
) -> None:
    """An unknown key: 401, the form again with its message and no figure; a
    tenant key without the admin scope: 403, likewise. Signing in again with
    the admin key shows the figures; signing out forgets the key."""
    browser.get(stack.url)
    sign_in(browser, "nk_not_a_key_" + unique("k"))
    message = wait_for(
        lambda: (shown := visible(browser, "login-error")) and shown.text, timeout=15
    )
    assert message == "401 unauthorized: unknown or revoked API key"
    assert not visible(browser, "board")
    assert browser.execute_script("return sessionStorage.length") == 0

    sign_in(browser, DEV_KEY)
    message = wait_for(
        lambda: (shown := visible(browser, "login-error")) and shown.text, timeout=15
    )
    assert message.startswith("403 forbidden: ") and "'admin' scope" in message
    errors = browser_errors(browser)
    assert errors and all(
        "/v1/dashboard" in e["message"]
        and ("401" in e["message"] or "403" in e["message"])
        for e in errors
    ), errors

    sign_in(browser, ADMIN_KEY)
    wait_for(lambda: visible(browser, "board"), timeout=15)
    assert not visible(browser, "login")
    stored = "return [Object.values(sessionStorage), localStorage.length]"
    assert browser.execute_script(stored) == [[ADMIN_KEY], 0]
    browser.refresh()  # the key lasts the tab's session
    wait_for(lambda: visible(browser, "board"), timeout=15)
    browser.find_element(By.ID, "sign-out").click()
    assert visible(browser, "login")
    assert browser.execute_script("return sessionStorage.length") == 0
    assert browser_errors(browser) == []
