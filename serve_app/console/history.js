// History: the tenant's workflows and tasks, filtered and paged, with cancel, retry and delete.

import { api } from "./api.js";
import { $, FINAL, SERVICES, act, clearError, formatTime, h, statusBadge } from "./ui.js";

const filters = { kind: "workflows", status: "", service: "", limit: 20, offset: 0 };

function query() {
  const params = new URLSearchParams({ limit: filters.limit, offset: filters.offset });
  if (filters.status) params.set("status", filters.status);
  if (filters.kind === "tasks" && filters.service) params.set("service", filters.service);
  return `/v1/${filters.kind}?${params}`;
}

// Filters change faster than pages arrive: only the answer to the latest request is shown, so a
// slow earlier one never overwrites it.
let latest = 0;

export async function showHistory() {
  const request = ++latest;
  const page = await act($("#hist-refresh"), () => api(query()));
  if (!page || request !== latest) return;
  // A page past the end (after deletions, say): step back to the last one that has items.
  if (!page.items.length && filters.offset > 0 && page.total > 0) {
    filters.offset = Math.max(0, Math.floor((page.total - 1) / filters.limit) * filters.limit);
    return showHistory();
  }
  render(page);
}

function render(page) {
  const tasks = filters.kind === "tasks";
  $("#hist-head").replaceChildren(
    h(
      "tr",
      {},
      ["Id", tasks ? "Service" : "Name", "Status", tasks ? "Attempts" : null, "Created", "Updated", ""]
        .filter((t) => t !== null)
        .map((t) => h("th", {}, t)),
    ),
  );
  const rows = page.items.map((item) => {
    const id = tasks ? item.task_id : item.workflow_id;
    return h(
      "tr",
      { dataset: { id } },
      h("td", {}, h("a", { href: `#/watch/${filters.kind}/${encodeURIComponent(id)}` }, h("code", {}, id))),
      h("td", {}, tasks ? item.service : item.name || h("span", { class: "muted" }, "(unnamed)")),
      h("td", {}, statusBadge(item.status), tasks && item.error ? h("div", { class: "error-cell" }, item.error) : null),
      tasks ? h("td", { class: "num", dataset: { label: "attempts" } }, String(item.attempts)) : null,
      h("td", { dataset: { label: "created" } }, formatTime(item.created_at)),
      h("td", { dataset: { label: "updated" } }, formatTime(item.updated_at)),
      h("td", { class: "actions" }, actions(id, item.status)),
    );
  });
  const empty = h("tr", {}, h("td", { colspan: 7, class: "muted" }, `No ${filters.kind} here yet.`));
  $("#hist-body").replaceChildren(...(rows.length ? rows : [empty]));
  const first = page.total ? filters.offset + 1 : 0;
  const last = filters.offset + page.items.length;
  $("#hist-range").textContent = `${first}–${last} of ${page.total}`;
  $("#hist-prev").disabled = filters.offset === 0;
  $("#hist-next").disabled = last >= page.total;
}

function actions(id, status) {
  const base = `/v1/${filters.kind}/${encodeURIComponent(id)}`;
  const post = (verb) => (event) => {
    clearError();
    act(event.currentTarget, async () => {
      await api(`${base}/${verb}`, { method: "POST" });
      await showHistory();
    });
  };
  const remove = (event) => {
    const button = event.currentTarget;
    // Two clicks: the first asks, the second deletes.
    if (!button.classList.contains("confirm")) {
      button.classList.add("confirm");
      button.textContent = "Really?";
      return;
    }
    clearError();
    act(button, async () => {
      await api(base, { method: "DELETE" });
      await showHistory();
    });
  };
  return [
    h("button", { type: "button", class: "small", disabled: FINAL.has(status), onclick: post("cancel") }, "Cancel"),
    h(
      "button",
      { type: "button", class: "small", disabled: !["failed", "cancelled"].includes(status), onclick: post("retry") },
      "Retry",
    ),
    h("button", { type: "button", class: "small danger", onclick: remove }, "Delete"),
  ];
}

export function initHistory() {
  $("#hist-service").append(...SERVICES.map((s) => h("option", { value: s }, s)));
  const reload = () => {
    filters.offset = 0;
    showHistory();
  };
  document.querySelectorAll("#hist-tabs button").forEach((tab) =>
    tab.addEventListener("click", () => {
      document.querySelectorAll("#hist-tabs button").forEach((t) => t.classList.toggle("on", t === tab));
      filters.kind = tab.dataset.kind;
      $("#hist-service-label").hidden = filters.kind !== "tasks";
      reload();
    }),
  );
  $("#hist-status").addEventListener("change", (e) => ((filters.status = e.target.value), reload()));
  $("#hist-service").addEventListener("change", (e) => ((filters.service = e.target.value), reload()));
  $("#hist-limit").addEventListener("change", (e) => ((filters.limit = Number(e.target.value)), reload()));
  $("#hist-refresh").addEventListener("click", showHistory);
  $("#hist-prev").addEventListener(
    "click",
    () => ((filters.offset = Math.max(0, filters.offset - filters.limit)), showHistory()),
  );
  $("#hist-next").addEventListener("click", () => ((filters.offset += filters.limit), showHistory()));
}
