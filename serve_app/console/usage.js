// Usage: model calls per day and service over the last 7 days, as a chart and a table. A user sees
// the own tenant's (`GET /v1/usage`); an admin any tenant's, or every tenant's (`/v1/admin/usage`).

import { api } from "./api.js";
import { $, SERVICES, act, h, niceMax, svg } from "./ui.js";

const DAYS = 7;
const DAY_MS = 24 * 60 * 60 * 1000;
const COLOURS = {
  llm: "#6d5dfc",
  stt: "#17bebb",
  tts: "#f2a541",
  pic2text: "#e4572e",
  text2pic: "#3a86ff",
  embed: "#8ac926",
};
const COLUMNS = [
  ["requests", "Requests"],
  ["errors", "Errors"],
  ["cost", "Cost"],
  ["tokens_in", "Tokens in"],
  ["tokens_out", "Tokens out"],
  ["audio_seconds", "Audio s"],
  ["images", "Images"],
];

let isAdmin = false;

/** The last `DAYS` days, oldest first, as the API names them (UTC dates). */
function lastDays() {
  const today = Date.now();
  return Array.from({ length: DAYS }, (_, i) => new Date(today - (DAYS - 1 - i) * DAY_MS).toISOString().slice(0, 10));
}

const format = (value) => String(Number(Number(value).toPrecision(4)));

export function setUsageRole(role) {
  isAdmin = role === "admin";
  $("#usage-tenant-label").hidden = !isAdmin;
}

export async function showUsage() {
  const tenant = isAdmin ? $("#usage-tenant").value.trim() : "";
  const params = new URLSearchParams({ days: DAYS });
  if (tenant) params.set("tenant", tenant);
  const path = isAdmin ? `/v1/admin/usage?${params}` : `/v1/usage?${params}`;
  const body = await act($("#usage-refresh"), () => api(path));
  if (!body) return;
  $("#usage-scope").textContent = !isAdmin ? "your tenant" : tenant ? `tenant ${tenant}` : "every tenant";
  drawChart(body.items);
  renderTable(body.items, isAdmin && !tenant);
}

/** Requests per day, a bar per day stacked by service. */
function drawChart(items) {
  const days = lastDays();
  const totals = new Map(days.map((day) => [day, Object.fromEntries(SERVICES.map((s) => [s, 0]))]));
  for (const item of items) {
    const day = totals.get(item.day);
    if (day) day[item.service] = (day[item.service] || 0) + item.requests;
  }
  const width = 720;
  const height = 220;
  const left = 44;
  const bottom = 24;
  const top = 12;
  const max = niceMax(Math.max(0, ...[...totals.values()].map((d) => Object.values(d).reduce((a, b) => a + b, 0))));
  const slot = (width - left - 8) / DAYS;
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const chart = $("#usage-chart");
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const parts = [];
  for (const v of [0, max / 2, max]) {
    parts.push(svg("line", { x1: left, x2: width - 8, y1: y(v), y2: y(v), class: "grid" }));
    parts.push(svg("text", { x: left - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, format(v)));
  }
  days.forEach((day, i) => {
    const x = left + i * slot + slot * 0.2;
    let base = 0;
    for (const service of SERVICES) {
      const requests = totals.get(day)[service];
      if (!requests) continue;
      const bar = svg("rect", {
        x,
        y: y(base + requests),
        width: slot * 0.6,
        height: y(base) - y(base + requests),
        fill: COLOURS[service],
        "data-day": day,
        "data-service": service,
        "data-requests": requests,
      });
      bar.append(svg("title", {}, `${day} ${service}: ${requests} requests`));
      parts.push(bar);
      base += requests;
    }
    parts.push(svg("text", { x: x + slot * 0.3, y: height - 6, class: "axis", "text-anchor": "middle" }, day.slice(5)));
  });
  chart.replaceChildren(...parts);
  $("#usage-legend").replaceChildren(
    ...SERVICES.map((service) =>
      h("span", { class: "legend-item" }, h("span", { class: "swatch", style: `background:${COLOURS[service]}` }), service),
    ),
  );
}

/** One row per day (newest first), tenant and service, and the totals. */
function renderTable(items, withTenant) {
  const head = ["Day", withTenant ? "Tenant" : null, "Service", ...COLUMNS.map(([, label]) => label)].filter(Boolean);
  $("#usage-head").replaceChildren(h("tr", {}, head.map((label) => h("th", {}, label))));
  const newest = [...items].reverse();
  const rows = newest.map((item) =>
    h(
      "tr",
      { dataset: { day: item.day, service: item.service, tenant: item.tenant } },
      h("td", { dataset: { label: "Day" } }, item.day),
      withTenant ? h("td", { dataset: { label: "Tenant" } }, h("code", {}, item.tenant)) : null,
      h("td", { dataset: { label: "Service" } }, item.service),
      COLUMNS.map(([key, label]) => h("td", { class: "num", dataset: { label, key } }, format(item[key]))),
    ),
  );
  if (!rows.length) {
    rows.push(h("tr", {}, h("td", { colspan: head.length, class: "muted" }, `No model calls in the last ${DAYS} days.`)));
  } else {
    const sums = COLUMNS.map(([key, label]) =>
      h("td", { class: "num", dataset: { label, key } }, format(items.reduce((sum, item) => sum + item[key], 0))),
    );
    rows.push(h("tr", { class: "total" }, h("th", { colspan: head.length - COLUMNS.length }, "Total"), sums));
  }
  $("#usage-body").replaceChildren(...rows);
}

export function initUsage() {
  $("#usage-form").addEventListener("submit", (event) => {
    event.preventDefault();
    showUsage();
  });
}
