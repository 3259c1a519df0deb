// Admin (role `admin`): tenants' weights and quotas, editable, and a live chart per service of
// each tenant's granted cost and queue depth, from `GET /v1/admin/scheduler` polled every 2 s.

import { api, ApiError } from "./api.js";
import { $, act, clearError, h, niceMax, showError, svg as s } from "./ui.js";

const SETTINGS = [
  ["weight", "Weight", "0.1"],
  ["max_concurrency", "Max concurrency", "1"],
  ["rate_per_s", "Rate / s", "any"],
  ["burst", "Burst", "any"],
  ["max_queued", "Max queued", "1"],
];
const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;
const MIN_SPAN_MS = 30 * 1000;
const PALETTE = [
  "#6d5dfc",
  "#e4572e",
  "#17bebb",
  "#f2a541",
  "#3a86ff",
  "#8ac926",
  "#ff006e",
  "#6a4c93",
  "#1982c4",
  "#8d6e63",
];

const samples = []; // {t: ms, services: the scheduler's per-service state}
const colours = new Map(); // tenant → colour, kept while the page lives so each tenant keeps its own
let poller = null; // {timer} while the admin view is shown

// ---------------------------------------------------------------- tenants

export async function showAdmin() {
  startPolling();
  const body = await act(null, () => api("/v1/admin/tenants"));
  if (body) $("#tenants-body").replaceChildren(...body.items.map(tenantRow));
}

function tenantRow(record) {
  const inputs = SETTINGS.map(([key, label, step]) =>
    h("input", {
      type: "number",
      name: key,
      step,
      min: "0",
      value: record[key],
      "aria-label": `${label} of ${record.tenant}`,
    }),
  );
  const note = h("span", { class: "muted" }, record.configured ? "" : "defaults");
  const save = h("button", { type: "button", class: "small primary" }, "Save");
  const row = h(
    "tr",
    { dataset: { tenant: record.tenant } },
    h(
      "td",
      {},
      h("span", { class: "swatch", style: `background:${colour(record.tenant)}` }),
      h("code", {}, record.tenant),
    ),
    ...inputs.map((input, i) => h("td", { dataset: { label: SETTINGS[i][1] } }, input)),
    h("td", {}, save, " ", note),
  );
  save.addEventListener("click", () => {
    clearError();
    // Only what changed is sent: the API merges it into the stored settings.
    const changes = {};
    inputs.forEach((input) => {
      if (input.value === "") return;
      const value = Number(input.value);
      if (value !== record[input.name]) changes[input.name] = value;
    });
    act(save, async () => {
      const updated = await api(`/v1/admin/tenants/${encodeURIComponent(record.tenant)}`, {
        method: "PUT",
        json: changes,
      });
      row.replaceWith(tenantRow(updated));
      $(`#tenants-body tr[data-tenant="${CSS.escape(record.tenant)}"] .muted`).textContent = "saved";
    });
  });
  return row;
}

async function addTenant(event) {
  event.preventDefault();
  clearError();
  const tenant = $("#tenant-new").value.trim();
  if (!tenant) return;
  const record = await act(null, () => api(`/v1/admin/tenants/${encodeURIComponent(tenant)}`));
  if (!record) return;
  $(`#tenants-body tr[data-tenant="${CSS.escape(tenant)}"]`)?.remove();
  $("#tenants-body").prepend(tenantRow(record));
  $("#tenant-new").value = "";
}

// ---------------------------------------------------------------- the chart

function colour(tenant) {
  if (!colours.has(tenant)) colours.set(tenant, PALETTE[colours.size % PALETTE.length]);
  return colours.get(tenant);
}

function startPolling() {
  if (poller) return;
  const mine = { timer: null };
  poller = mine;
  const poll = async () => {
    try {
      const state = await api("/v1/admin/scheduler");
      const now = Date.now();
      samples.push({ t: now, services: state.services });
      while (samples.length && samples[0].t < now - WINDOW_MS) samples.shift();
      drawCharts();
    } catch (error) {
      showError(error);
      // a 401 or 403 will not heal: stop asking
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return stopAdmin();
    }
    if (poller === mine) mine.timer = setTimeout(poll, POLL_MS);
  };
  poll();
}

export function stopAdmin() {
  if (poller) clearTimeout(poller.timer);
  poller = null;
}

/** Per tenant, points `[t, value]`: the granted cost per second between polls, and the queue. */
function series(service) {
  const cost = new Map();
  const queued = new Map();
  samples.forEach((sample, i) => {
    const tenants = sample.services[service]?.tenants || {};
    const before = i > 0 ? samples[i - 1].services[service]?.tenants || {} : {};
    const seconds = i > 0 ? (sample.t - samples[i - 1].t) / 1000 : 0;
    for (const [tenant, flow] of Object.entries(tenants)) {
      if (!cost.has(tenant)) {
        cost.set(tenant, []);
        queued.set(tenant, []);
      }
      // The first poll has nothing before it: rates start at 0. A tenant new since the last poll
      // is new to the scheduler, which starts it at 0. The served cost is corrected when a call
      // ends, so it may step back: no negative rates.
      const previous = i === 0 ? flow.served_cost : (before[tenant]?.served_cost ?? 0);
      const rate = seconds > 0 ? Math.max(0, flow.served_cost - previous) / seconds : 0;
      cost.get(tenant).push([sample.t, rate]);
      queued.get(tenant).push([sample.t, flow.queued]);
    }
  });
  return { cost, queued };
}

function lineChart(title, lines, service, kind, width) {
  const height = 140;
  const left = 40;
  const right = 8;
  const top = 24;
  const bottom = 20;
  // The axis spans what has been seen, up to the window: the first minutes are not squeezed right.
  const now = samples.at(-1).t;
  const span = Math.min(WINDOW_MS, Math.max(MIN_SPAN_MS, now - samples[0].t));
  const max = niceMax(Math.max(0, ...[...lines.values()].flat().map(([, v]) => v)));
  const x = (t) => left + ((t - (now - span)) / span) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const format = (v) => String(Number(v.toPrecision(3)));
  const svg = s("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    "data-service": service,
    "data-kind": kind,
    role: "img",
    "aria-label": `${title}, ${service}`,
  });
  svg.append(s("text", { x: left, y: 13, class: "chart-title" }, title));
  for (const v of [0, max / 2, max]) {
    svg.append(s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, format(v)));
  }
  const ago = span >= 60_000 ? `−${Math.round(span / 60_000)} min` : `−${Math.round(span / 1000)} s`;
  svg.append(s("text", { x: left, y: height - 4, class: "axis" }, ago));
  svg.append(s("text", { x: width - right, y: height - 4, class: "axis", "text-anchor": "end" }, "now"));
  for (const [tenant, points] of lines) {
    const d = points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const line = s("polyline", { points: d, class: "series", stroke: colour(tenant), "data-tenant": tenant });
    line.append(s("title", {}, tenant));
    svg.append(line);
  }
  return svg;
}

/** Each tenant's share of the cost granted in the window: the fairness the weights ask for. */
function shares(service) {
  const first = samples[0]?.services[service]?.tenants || {};
  const last = samples.at(-1)?.services[service]?.tenants || {};
  const granted = Object.entries(last)
    .map(([t, flow]) => [t, Math.max(0, flow.served_cost - (first[t]?.served_cost ?? 0))])
    .filter(([, c]) => c > 0);
  const total = granted.reduce((sum, [, c]) => sum + c, 0);
  if (!total) return "none granted since this page opened";
  return granted.map(([t, c]) => `${t} ${Math.round((100 * c) / total)}%`).join(" · ");
}

function drawCharts() {
  const latest = samples.at(-1).services;
  // Drawn at the width the cards have, so that the text keeps its size on any screen.
  const card = $("#charts .chart-card:not(.idle)");
  const width = Math.max(280, Math.min(720, card ? card.clientWidth - 24 : 400));
  const cards = Object.entries(latest).map(([service, state]) => {
    const { cost, queued } = series(service);
    const head = h(
      "h3",
      {},
      service,
      h("small", {}, ` queued ${state.queued} · in flight ${state.in_flight} / ${state.dispatch_limit}`),
    );
    if (!cost.size)
      return h(
        "div",
        { class: "chart-card idle", dataset: { service } },
        head,
        h("p", { class: "muted" }, "No tenant has used it yet."),
      );
    return h(
      "div",
      { class: "chart-card", dataset: { service } },
      head,
      lineChart("granted cost / s", cost, service, "cost", width),
      lineChart("queued requests", queued, service, "queued", width),
      h("p", { class: "muted share" }, `share of the granted cost: ${shares(service)}`),
    );
  });
  // Busy services first; idle ones after, small.
  cards.sort((a, b) => a.classList.contains("idle") - b.classList.contains("idle"));
  $("#charts").replaceChildren(...cards);
  const tenants = new Set(Object.values(latest).flatMap((state) => Object.keys(state.tenants)));
  $("#legend").replaceChildren(
    ...[...tenants]
      .sort()
      .map((t) =>
        h("span", { class: "legend-item" }, h("span", { class: "swatch", style: `background:${colour(t)}` }), t),
      ),
  );
}

export function initAdmin() {
  $("#tenant-add").addEventListener("submit", addTenant);
  window.addEventListener("resize", () => poller && samples.length && drawCharts());
}
