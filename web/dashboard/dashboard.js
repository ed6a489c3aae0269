// The /dashboard page: signs in with an API key kept in this tab's session
// storage, then reads GET /v1/dashboard every few seconds and draws it.
// Every number shown carries data-metric (its name) and data-value (the
// figure as the API gave it), so what the page shows can be checked against
// the API. Text from the API is only ever set as text, never as HTML.
"use strict";

(function () {
  const KEY = "notify-dashboard-api-key";
  const page = document.body.dataset;
  const REFRESH_MS = Number(page.refreshMs) || 3000;
  const FUNNEL_REFRESH_MS = Number(page.funnelRefreshMs) || 15000;
  const DASHBOARD = page.api || "/v1/dashboard";
  const FUNNEL = page.funnel || "/v1/analytics/funnel";
  const COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  ];
  const PLOT_HEIGHT = 220;

  const byId = (id) => document.getElementById(id);
  /** The uPlot instances, by name (what a test or a console may inspect). */
  const plots = {};
  window.dashboardPlots = plots;
  let refreshTimer = null;
  let funnelTimer = null;
  let latest = null;

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function getJson(path) {
    const key = sessionStorage.getItem(KEY);
    if (!key) {
      throw new ApiFailure(401, "unauthorized", "sign in with an API key");
    }
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + key, Accept: "application/json" },
      cache: "no-store",
    });
    let body = null;
    try {
      body = await response.json();
    } catch (ignored) {
      body = null;
    }
    if (!response.ok) {
      const error = (body && body.error) || {};
      throw new ApiFailure(
        response.status,
        error.code || "http_" + response.status,
        error.message || response.statusText || "request failed",
      );
    }
    return body;
  }

  // Formatting: the text shown; data-value keeps the figure itself.

  const integer = (n) => Math.round(n).toLocaleString("en-US");
  const perSecond = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) + "/s";
  const percent = (x) => x.toFixed(1) + " %";
  function duration(seconds) {
    if (seconds >= 60) return (seconds / 60).toFixed(1) + " min";
    if (seconds >= 1) return seconds.toFixed(2) + " s";
    return (seconds * 1000).toFixed(seconds < 0.01 ? 2 : 0) + " ms";
  }
  const clock = (unix) => new Date(unix * 1000).toLocaleTimeString("en-GB");
  const last = (values) => (values && values.length ? values[values.length - 1] : null);

  /** An element showing one figure, named for tests and tooltips. */
  function figure(name, value, format, tag) {
    const element = document.createElement(tag || "span");
    element.dataset.metric = name;
    element.dataset.value = value === null || value === undefined ? "" : String(value);
    element.textContent = value === null || value === undefined ? "–" : format(value);
    return element;
  }

  function cell(content, className) {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content);
    else td.textContent = content === null || content === undefined ? "" : String(content);
    if (className) td.className = className;
    return td;
  }

  function row(...cells) {
    const tr = document.createElement("tr");
    tr.append(...cells.map((c) => (c instanceof HTMLTableCellElement ? c : cell(c))));
    return tr;
  }

  /** Replace a table's body rows; an empty list says so in one row. */
  function fill(tableId, rows, empty) {
    const table = byId(tableId);
    const tbody = table.tBodies[0] || table.createTBody();
    if (rows.length) {
      tbody.replaceChildren(...rows);
    } else {
      const only = cell(empty, "empty");
      only.colSpan = table.tHead ? table.tHead.rows[0].cells.length : 1;
      tbody.replaceChildren(row(only));
    }
  }

  function chips(prefix, counts, format) {
    const list = document.createElement("span");
    list.className = "chips";
    for (const [name, value] of Object.entries(counts).sort()) {
      const chip = document.createElement("span");
      chip.className = "chip chip-" + name;
      chip.append(name + " ", figure(prefix + name, value, format, "b"));
      list.append(chip);
    }
    return list;
  }

  // Plots (uPlot): x is unix seconds, each series one line.

  /** Tick steps of a plot of whole counts: never a fraction of an entry. */
  const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6];

  function draw(name, unit, format, labels, data, incrs) {
    const target = byId("plot-" + name);
    const signature = unit + "\n" + labels.join("\n");
    let chart = plots[name];
    if (!chart || chart.signature !== signature) {
      if (chart) chart.destroy();
      target.replaceChildren();
      chart = new uPlot(
        {
          width: Math.max(target.clientWidth, 320),
          height: PLOT_HEIGHT,
          scales: {
            x: { time: true },
            // From zero, with room above the highest point (1 when all are 0).
            y: { range: (u, min, max) => [0, Number.isFinite(max) && max > 0 ? max * 1.1 : 1] },
          },
          axes: [
            {},
            {
              label: unit,
              size: 70,
              values: (u, ticks) => ticks.map((t) => format(t)),
              ...(incrs ? { incrs } : {}),
            },
          ],
          series: [
            { value: (u, v) => (v === null ? "–" : clock(v)) },
            ...labels.map((label, i) => ({
              label,
              stroke: COLORS[i % COLORS.length],
              width: 2,
              value: (u, v) => (v === null || v === undefined ? "–" : format(v)),
            })),
          ],
        },
        data,
        target,
      );
      chart.signature = signature;
      plots[name] = chart;
    } else {
      chart.setData(data);
    }
    target.dataset.points = String(data[0].length);
  }

  function laneChannel(item) {
    return item.lane + "/" + (item.channel || "-");
  }

  function drawPlots(series) {
    const sending = series.traffic.filter((item) => item.rates.sent);
    draw("sends", "sent/s", perSecond, sending.map(laneChannel), [
      series.t,
      ...sending.map((item) => item.rates.sent),
    ]);
    const quantile = byId("quantile").value;
    const timed = series.traffic.filter((item) => item.latency[quantile].some((v) => v !== null));
    draw("latency", quantile + " latency", duration, timed.map(laneChannel), [
      series.t,
      ...timed.map((item) => item.latency[quantile]),
    ]);
    const depth = Object.keys(series.queue_depth).sort();
    const backlog = Object.keys(series.backlog).sort();
    draw(
      "queues",
      "entries",
      integer,
      [...depth.map((lane) => "queue " + lane), ...backlog.map((timer) => "backlog " + timer)],
      [
        series.t,
        ...depth.map((lane) => series.queue_depth[lane]),
        ...backlog.map((timer) => series.backlog[timer]),
      ],
      WHOLE,
    );
  }

  // Tables.

  function renderTraffic(series) {
    fill(
      "traffic",
      series.traffic.map((item) => {
        const name = "traffic/" + item.lane + "/" + (item.channel || "-") + "/";
        return row(
          item.lane || "–",
          item.channel || "–",
          cell(figure(name + "rate/sent", last(item.rates.sent || []), perSecond)),
          cell(figure(name + "latency/p50", last(item.latency.p50), duration)),
          cell(figure(name + "latency/p95", last(item.latency.p95), duration)),
          cell(figure(name + "latency/p99", last(item.latency.p99), duration)),
          cell(chips(name + "total/", item.totals, integer)),
        );
      }),
      "nothing counted yet",
    );
  }

  function renderGauges(tableId, prefix, values, empty) {
    fill(
      tableId,
      Object.keys(values)
        .sort()
        .map((name) => row(name, cell(figure(prefix + name, last(values[name]), integer), "number"))),
      empty,
    );
  }

  function renderBreakers(breakers) {
    fill(
      "breakers",
      Object.keys(breakers)
        .sort()
        .map((name) => {
          const b = breakers[name];
          const state = figure("breaker/" + name + "/state", b.state, String);
          state.className = "state state-" + b.state;
          return row(
            name,
            cell(state),
            cell(figure("breaker/" + name + "/error_rate", b.error_rate, (x) => percent(x * 100)), "number"),
            cell(figure("breaker/" + name + "/calls", b.calls, integer), "number"),
            cell(figure("breaker/" + name + "/times_opened", b.times_opened, integer), "number"),
          );
        }),
      "no provider configured",
    );
  }

  function renderDeadLetters(dead) {
    byId("dead-letter-size").replaceChildren(figure("dead_letters/size", dead.size, integer));
    byId("dead-letter-error").textContent = dead.error || "";
    fill(
      "dead-letters",
      dead.newest.map((entry) => {
        const name = "dead_letters/" + entry.position + "/";
        return row(
          cell(figure(name + "time", entry.time, (t) => new Date(t).toLocaleString("en-GB"))),
          cell(figure(name + "stage", entry.stage, String)),
          cell(figure(name + "code", entry.code, String)),
          cell(figure(name + "reason", entry.reason, String), "reason"),
          entry.position,
        );
      }),
      "no dead letter",
    );
  }

  function renderCampaigns(campaigns) {
    fill(
      "campaigns",
      campaigns.map((c) => {
        const name = "campaign/" + c.campaign_id + "/";
        const progress = document.createElement("progress");
        progress.max = 1;
        progress.value = c.walked;
        const walked = document.createElement("span");
        walked.className = "progress";
        walked.append(
          progress,
          figure(name + "walked", c.walked, (x) => percent(x * 100)),
          " · partitions ",
          figure(name + "partitions_done", c.partitions_done, integer),
          "/" + c.partitions,
        );
        const title = document.createElement("span");
        title.append(c.campaign_name, document.createElement("br"));
        const id = document.createElement("code");
        id.textContent = c.campaign_id;
        title.append(id);
        return row(
          cell(title),
          c.tenant,
          cell(figure(name + "state", c.state, String)),
          cell(walked),
          cell(chips(name + "count/", c.counts, integer)),
        );
      }),
      "no campaign",
    );
    const select = byId("funnel-campaign");
    const chosen = select.value;
    const options = [new Option("choose a campaign…", "")];
    for (const c of campaigns) {
      const option = new Option(c.campaign_name + " (" + c.campaign_id + ")", c.campaign_id);
      option.dataset.tenant = c.tenant;
      options.push(option);
    }
    select.replaceChildren(...options);
    select.value = campaigns.some((c) => c.campaign_id === chosen) ? chosen : "";
  }

  function render(data) {
    latest = data;
    byId("worker").replaceChildren(
      "worker ",
      figure("app_id", data.app_id, String, "b"),
      " · lanes " + data.lanes.join(", ") + " · sampled ",
      figure("sampled_at", data.sampled_at, clock, "b"),
    );
    const series = data.series;
    drawPlots(series);
    renderTraffic(series);
    renderGauges("queues", "queue_depth/", series.queue_depth, "no lane");
    renderGauges("backlog", "backlog/", series.backlog, "no timer");
    renderGauges("lag", "lag/", series.lag, "no partition assigned");
    renderBreakers(data.breakers);
    renderDeadLetters(data.dead_letters);
    renderCampaigns(data.campaigns);
  }

  // The funnel of one campaign, from the analytics store.

  async function loadFunnel() {
    clearTimeout(funnelTimer);
    const id = byId("funnel-id").value.trim();
    const tenant = byId("funnel-tenant").value.trim();
    if (!id) {
      byId("funnel-error").textContent = "";
      fill("funnel", [], "choose a campaign");
      return;
    }
    const query = new URLSearchParams({ campaign_id: id, since: byId("funnel-since").value });
    if (tenant) query.set("tenant", tenant);
    try {
      const report = await getJson(FUNNEL + "?" + query.toString());
      byId("funnel-error").textContent = "";
      fill(
        "funnel",
        report.rows.map((r) => {
          const name = "funnel/" + r.key + "/";
          const latency = r.latency_ms || {};
          const ms = (x) => x.toFixed(0) + " ms";
          return row(
            r.key,
            cell(figure(name + "sent", r.sent, integer), "number"),
            cell(figure(name + "delivered", r.delivered, integer), "number"),
            cell(figure(name + "opened", r.opened, integer), "number"),
            cell(figure(name + "clicked", r.clicked, integer), "number"),
            cell(figure(name + "delivery_rate", r.delivery_rate, percent), "number"),
            cell(figure(name + "open_rate", r.open_rate, percent), "number"),
            cell(figure(name + "click_rate", r.click_rate, percent), "number"),
            cell(figure(name + "latency_p50", latency.p50, ms), "number"),
            cell(figure(name + "latency_p99", latency.p99, ms), "number"),
          );
        }),
        "no event of campaign " + id + " in the analytics store for this period",
      );
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        showLogin(error);
        return;
      }
      byId("funnel-error").textContent = describe(error);
    }
    funnelTimer = setTimeout(loadFunnel, FUNNEL_REFRESH_MS);
  }

  // Signing in and out, and the refresh loop.

  function describe(error) {
    return error instanceof ApiFailure
      ? error.status + " " + error.code + ": " + error.message
      : String(error.message || error);
  }

  function setStatus(kind, text) {
    const status = byId("status");
    status.className = kind;
    status.textContent = text;
  }

  function stop() {
    clearTimeout(refreshTimer);
    clearTimeout(funnelTimer);
  }

  function showLogin(error) {
    stop();
    sessionStorage.removeItem(KEY);
    byId("board").hidden = true;
    byId("sign-out").hidden = true;
    byId("login").hidden = false;
    byId("login-error").textContent = error ? describe(error) : "";
    setStatus("", "");
    byId("api-key").focus();
  }

  async function refresh() {
    clearTimeout(refreshTimer);
    try {
      const data = await getJson(DASHBOARD);
      byId("login").hidden = true;
      byId("board").hidden = false;
      byId("sign-out").hidden = false;
      render(data);
      setStatus("ok", "updated " + clock(Date.parse(data.generated_at) / 1000) + " · every " + REFRESH_MS / 1000 + " s");
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        showLogin(error);
        return;
      }
      setStatus("error", describe(error) + " · retrying");
    }
    refreshTimer = setTimeout(refresh, REFRESH_MS);
  }

  byId("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = byId("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    byId("api-key").value = "";
    byId("login-error").textContent = "";
    refresh();
  });
  byId("sign-out").addEventListener("click", () => showLogin(null));
  byId("quantile").addEventListener("change", () => latest && drawPlots(latest.series));
  byId("funnel-campaign").addEventListener("change", (event) => {
    const option = event.target.selectedOptions[0];
    byId("funnel-id").value = event.target.value;
    byId("funnel-tenant").value = (option && option.dataset.tenant) || "";
    loadFunnel();
  });
  byId("funnel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    loadFunnel();
  });
  byId("funnel-since").addEventListener("change", loadFunnel);
  window.addEventListener("resize", () => {
    for (const [name, chart] of Object.entries(plots)) {
      chart.setSize({ width: Math.max(byId("plot-" + name).clientWidth, 320), height: PLOT_HEIGHT });
    }
  });

  if (sessionStorage.getItem(KEY)) refresh();
  else showLogin(null);
})();
