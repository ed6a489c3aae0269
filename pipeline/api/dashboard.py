"""The dashboard: ``GET /v1/dashboard`` (admin scope) and the ``/dashboard`` page.

The answer is this worker's figures over the last minutes (sampled by
`pipeline.dashboard`), its providers' breakers (as ``/health`` shows them),
the dead-letter topic's size and newest reasons, and every tenant's newest
campaigns with the figures ``GET /v1/campaigns/{id}`` gives.

The page is public HTML, like ``/docs``: it holds no figure until the
browser signs in with an admin key, which it keeps in the tab's session
storage and sends as ``Authorization: Bearer``. Its plots are drawn with
uPlot, from the npm package pinned in ``web/package-lock.json``; its own
script and style sheet are in ``web/dashboard/``. Everything is served from
this origin, from an allow-list, under a policy that allows no inline script
or style (`pipeline.api.docs` serves the files).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from types import MappingProxyType

from faust.web import Request, Response

from agents.send import providers
from pipeline.api import auth
from pipeline.api.campaigns import all_parts, status_of, stored_campaigns
from pipeline.api.contract import operation, route
from pipeline.api.docs import (
    CSS,
    JAVASCRIPT,
    Asset,
    InstalledPage,
    PageAssetView,
    PageView,
    page_headers,
    read_installed,
    versioned_url,
)
from pipeline.api.errors import ApiError, not_found
from pipeline.api.views import ApiView
from pipeline.app import app
from pipeline.dashboard import SAMPLE_EVERY, SAMPLER, dead_letters
from schemas.campaigns import CampaignStatus
from schemas.dashboard import Breaker, Dashboard

PAGE_PATH = "/dashboard"
ASSETS_PATH = "/dashboard/assets/"
#: The page's routes: a viewer of the API, not operations of it.
ROUTES = (PAGE_PATH, ASSETS_PATH + "{name}")
API_PATH = "/v1/dashboard"
FUNNEL_PATH = "/v1/analytics/funnel"

#: How often the page asks for new figures, and for the chosen funnel (ms).
REFRESH_MS = 3000
FUNNEL_REFRESH_MS = 15000
#: Campaigns shown, newest first.
CAMPAIGNS_SHOWN = 20

#: uPlot's files the page loads (nothing else of the package is served).
UPLOT: Mapping[str, str] = MappingProxyType(
    {"uPlot.iife.min.js": JAVASCRIPT, "uPlot.min.css": CSS}
)
#: The page's own script and style sheet.
OWN: Mapping[str, str] = MappingProxyType(
    {"dashboard.js": JAVASCRIPT, "dashboard.css": CSS}
)
#: Every name ``/dashboard/assets/{name}`` answers, with its type.
SERVED: Mapping[str, str] = MappingProxyType({**UPLOT, **OWN})

WEB = Path(__file__).resolve().parents[2] / "web"
#: A source checkout: uPlot where ``make install`` puts it (``npm ci`` in
#: ``web/``), the page's own files beside it.
CHECKOUT_ASSETS: Mapping[str, Path] = MappingProxyType(
    {
        **{name: WEB / "node_modules" / "uplot" / "dist" / name for name in UPLOT},
        **{name: WEB / "dashboard" / name for name in OWN},
    }
)
#: An install that is not a checkout: the Docker image copies every file
#: here from its build stage (``/usr/local/share/notify-pipeline/dashboard``).
PREFIX_DIR = Path(sys.prefix) / "share" / "notify-pipeline" / "dashboard"
PREFIX_ASSETS: Mapping[str, Path] = MappingProxyType(
    {name: PREFIX_DIR / name for name in SERVED}
)
#: Looked up in this order: the first holding every file is served.
INSTALLS: Sequence[Mapping[str, Path]] = (CHECKOUT_ASSETS, PREFIX_ASSETS)

#: Scripts and style sheets from this origin only, no inline style either
#: (uPlot styles its elements through the DOM); the empty icon is a data:
#: URI; the sign-in form is submitted by the script, never as a navigation
#: (which would put the key in a URL).
PAGE_HEADERS = page_headers(
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "form-action 'none'",
)


def not_installed() -> ApiError:
    """503: uPlot or the page's own files are not where the worker looks."""
    return ApiError(
        503,
        "dashboard_not_installed",
        "the dashboard's files (the npm package uplot, and web/dashboard/) are "
        "not installed: run `make install` (or `npm ci` in web/) in a checkout, "
        f"or copy them to {PREFIX_DIR} as the Dockerfile does; "
        f"GET {API_PATH} answers the figures meanwhile",
    )


def metrics_off() -> ApiError:
    """404: with NOTIFY_METRICS=false nothing is counted, so nothing is shown."""
    return not_found("metrics are off (NOTIFY_METRICS=false): no dashboard")


def metrics_refused() -> ApiError | None:
    """``metrics_off()`` while NOTIFY_METRICS is false."""
    return None if app.settings.metrics else metrics_off()


def installed_assets(
    installs: Sequence[Mapping[str, Path]] | None = None,
) -> Mapping[str, Asset] | None:
    """Every file of the page, from the first of ``installs`` (default
    ``INSTALLS``) holding them all; None if none does."""
    return read_installed(INSTALLS if installs is None else installs, SERVED)


def dashboard_page(assets: Mapping[str, Asset]) -> str:
    """The HTML of ``/dashboard``: a sign-in form and the panels its script
    fills, every file from this origin."""

    def url(name: str) -> str:
        return escape(versioned_url(ASSETS_PATH, name, assets))

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>notify-pipeline dashboard</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="{url("uPlot.min.css")}">
  <link rel="stylesheet" href="{url("dashboard.css")}">
</head>
<body data-api="{API_PATH}" data-funnel="{FUNNEL_PATH}"
      data-refresh-ms="{REFRESH_MS}" data-funnel-refresh-ms="{FUNNEL_REFRESH_MS}">
  <header>
    <h1>notify-pipeline</h1>
    <p id="worker"></p>
    <p id="status" role="status"></p>
    <button id="sign-out" type="button" hidden>Sign out</button>
  </header>
  <section id="login" hidden>
    <form id="login-form">
      <h2>Sign in</h2>
      <p>The dashboard shows every tenant's traffic: it takes an API key with
      the admin scope. The key stays in this tab's session storage.</p>
      <label for="api-key">API key</label>
      <input id="api-key" name="api-key" type="password" autocomplete="off" required>
      <button type="submit">Open the dashboard</button>
      <p id="login-error" class="error" role="alert"></p>
    </form>
  </section>
  <main id="board" hidden>
    <section class="panel wide">
      <h2>Sends per second, by lane and channel</h2>
      <p class="note">This worker's sends over the last 15 minutes, a point every
      {SAMPLE_EVERY:g} s.</p>
      <div id="plot-sends" class="plot"></div>
    </section>
    <section class="panel wide">
      <h2>Send latency</h2>
      <div class="inline">
        <label for="quantile">quantile</label>
        <select id="quantile">
          <option value="p50">p50</option>
          <option value="p95" selected>p95</option>
          <option value="p99">p99</option>
        </select>
        <span class="note">from accepted (or due) to sent, over the minute
        before each point</span>
      </div>
      <div id="plot-latency" class="plot"></div>
    </section>
    <section class="panel wide">
      <h2>Lanes and channels</h2>
      <table id="traffic">
        <thead><tr><th>lane</th><th>channel</th><th>sent now</th><th>p50</th>
        <th>p95</th><th>p99</th><th>decisions since the worker started</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
    <section class="panel">
      <h2>Queues and schedule</h2>
      <div id="plot-queues" class="plot"></div>
      <table id="queues">
        <thead><tr><th>lane</th><th>records waiting</th></tr></thead><tbody></tbody>
      </table>
      <table id="backlog">
        <thead><tr><th>timer</th><th>entries waiting</th></tr></thead><tbody></tbody>
      </table>
    </section>
    <section class="panel">
      <h2>Provider breakers</h2>
      <table id="breakers">
        <thead><tr><th>provider</th><th>state</th><th>errors</th><th>calls</th>
        <th>opened</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
    <section class="panel">
      <h2>Consumer lag</h2>
      <div class="scroll">
        <table id="lag">
          <thead><tr><th>topic</th><th>records behind</th></tr></thead><tbody></tbody>
        </table>
      </div>
    </section>
    <section class="panel wide">
      <h2>Dead letters: <span id="dead-letter-size"></span></h2>
      <p id="dead-letter-error"></p>
      <table id="dead-letters">
        <thead><tr><th>time</th><th>stage</th><th>code</th><th>reason</th>
        <th>position</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
    <section class="panel wide">
      <h2>Campaigns</h2>
      <table id="campaigns">
        <thead><tr><th>campaign</th><th>tenant</th><th>state</th><th>progress</th>
        <th>recipients</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
    <section class="panel wide">
      <h2>Funnel</h2>
      <form id="funnel-form" class="inline">
        <select id="funnel-campaign" aria-label="campaign"></select>
        <label for="funnel-id">id</label>
        <input id="funnel-id" size="24">
        <label for="funnel-tenant">tenant</label>
        <input id="funnel-tenant" size="12" value="default">
        <label for="funnel-since">since</label>
        <select id="funnel-since">
          <option value="1h">1 hour</option>
          <option value="24h">24 hours</option>
          <option value="7d" selected>7 days</option>
        </select>
        <button type="submit">Show</button>
      </form>
      <p id="funnel-error"></p>
      <table id="funnel">
        <thead><tr><th>channel</th><th>sent</th><th>delivered</th><th>opened</th>
        <th>clicked</th><th>delivery</th><th>open</th><th>click</th>
        <th>p50</th><th>p99</th></tr></thead>
        <tbody></tbody>
      </table>
    </section>
  </main>
  <script src="{url("uPlot.iife.min.js")}"></script>
  <script src="{url("dashboard.js")}"></script>
</body>
</html>
"""


def breakers() -> dict[str, Breaker]:
    """Every provider's breaker, as ``/health`` shows them."""
    return {
        name: Breaker.model_validate(snapshot)
        for name, snapshot in providers.health().items()
    }


async def newest_campaigns(
    request: Request, limit: int = CAMPAIGNS_SHOWN
) -> list[CampaignStatus]:
    """Every tenant's newest campaigns, as ``GET /v1/campaigns/{id}`` shows
    each (the other workers asked for their partitions with the caller's key)."""
    newest = sorted(stored_campaigns(), key=lambda c: c.created_at, reverse=True)
    shown = newest[:limit]
    parts = await asyncio.gather(*(all_parts(c.campaign_id, request) for c in shown))
    return [status_of(c, part) for c, part in zip(shown, parts, strict=True)]


@route(API_PATH)
class DashboardView(ApiView):
    """What the dashboard page draws (admin scope: every tenant's traffic)."""

    @operation(
        operation_id="getDashboard",
        summary="This worker's throughput, latency, lag, queues and schedule "
        "over the last minutes, breakers, dead letters and campaigns (admin)",
        status=200,
        answer=Dashboard,
        errors=(404,),
    )
    async def get(self, request: Request) -> Response:
        """Series of this worker's metrics (a point every few seconds over the
        last 15 minutes), its breakers, the dead-letter topic's size and newest
        reasons, and the newest campaigns' progress; 404 with NOTIFY_METRICS
        false."""
        self.principal(request).require(auth.ADMIN_SCOPE)
        refused = metrics_refused()
        if refused is not None:
            raise refused
        # Taken together, before any await: the series end at that sample.
        series, sampled_at = SAMPLER.series(), SAMPLER.sampled_at
        answer = Dashboard(
            app_id=app.settings.app_id,
            lanes=list(app.settings.worker_lanes),
            generated_at=app.clock.now(),
            sampled_at=sampled_at,
            series=series,
            breakers=breakers(),
            dead_letters=await dead_letters(),
            campaigns=await newest_campaigns(request),
        )
        return self.answer(answer)


#: The page and its files: the page answers 404 with metrics off, 503
#: naming the fix without its files.
PAGE = InstalledPage(
    served=SERVED,
    installed=installed_assets,
    render=dashboard_page,
    missing=not_installed,
    headers=PAGE_HEADERS,
    refused=metrics_refused,
)


@app.page(PAGE_PATH)
class DashboardPage(PageView):
    """The dashboard page (no key to load it; its figures need an admin key)."""

    files = PAGE


@app.page(ROUTES[1])
class DashboardAsset(PageAssetView):
    """One file of the dashboard page, from the allow-list (no key needed)."""

    files = PAGE
