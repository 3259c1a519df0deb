// Watching a workflow (or a task) run: the graph coloured live from its event stream, the nodes'
// attempts, timings and errors, the results (text, audio, images) and the actions on it.

import { api, apiBlob, followEvents } from "./api.js";
import { loadSpec, recallSpec } from "./builder.js";
import { drawGraph } from "./graph.js";
import { $, FINAL, act, clearError, formatBytes, formatDuration, formatTime, h, statusBadge } from "./ui.js";

const EXTENSIONS = {
  "text/plain": "txt",
  "audio/wav": "wav",
  "image/png": "png",
  "image/jpeg": "jpg",
  "application/json": "json",
};
const REFRESH_DELAY_MS = 250;

let current = null; // the watched workflow: see `showWatch`

/** A workflow's or a task's body as one shape: `{id, name, status, created_at, updated_at, nodes}`. */
function normalise(kind, body) {
  if (kind === "workflows") return { ...body, id: body.workflow_id };
  const node = {
    service: body.service,
    status: body.status,
    attempts: body.attempts,
    error: body.error,
    output: body.output,
  };
  return { ...body, id: body.task_id, name: `task: ${body.service}`, nodes: { task: node } };
}

function outputUrl(w, nodeId) {
  return w.kind === "workflows" ? `${w.base}/outputs/${encodeURIComponent(nodeId)}` : `${w.base}/output`;
}

export function stopWatch() {
  if (!current) return;
  current.controller.abort();
  clearTimeout(current.refreshTimer);
  current.outputs.forEach((output) => URL.revokeObjectURL(output.url));
  current = null;
}

/** Show the workflow (`kind` "workflows") or task (`kind` "tasks") `id`, and follow its events. */
export async function showWatch(kind, id) {
  stopWatch();
  const body = $("#watch-body");
  if (!id) {
    body.replaceChildren(
      h("p", { class: "muted panel" }, "Submit a workflow from Build, or open one from History or by its id."),
    );
    return;
  }
  const w = {
    kind,
    id,
    base: `/v1/${kind}/${encodeURIComponent(id)}`,
    view: null,
    spec: kind === "workflows" ? recallSpec(id) : null,
    events: [],
    lastId: 0,
    lastFinal: false,
    following: false,
    controller: new AbortController(),
    refreshTimer: null,
    outputs: new Map(), // node id → {bytes, url, element}
  };
  current = w;
  body.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  const loaded = await act(null, async () => normalise(kind, await api(w.base)));
  if (current !== w) return;
  if (!loaded) {
    body.replaceChildren(h("p", { class: "muted panel" }, `Could not open ${kind.slice(0, -1)} ${id}.`));
    return;
  }
  w.view = loaded;
  body.replaceChildren(skeleton(w));
  render(w);
  follow(w);
}

function skeleton(w) {
  const what = w.kind === "workflows" ? "workflow" : "task";
  return h(
    "div",
    { class: "watch" },
    h(
      "div",
      { class: "watch-head panel" },
      h(
        "div",
        {},
        h("h2", { id: "watch-title" }),
        h("div", { class: "muted" }, `${what} `, h("code", {}, w.id), " · ", h("span", { id: "watch-times" })),
      ),
      h(
        "div",
        { class: "watch-state" },
        h("span", { id: "watch-status" }),
        h("span", { id: "watch-stream", class: "stream" }),
      ),
      h(
        "div",
        { class: "buttons" },
        h(
          "button",
          { type: "button", id: "watch-cancel", onclick: (e) => action(w, e.currentTarget, "cancel") },
          "Cancel",
        ),
        h(
          "button",
          { type: "button", id: "watch-retry", onclick: (e) => action(w, e.currentTarget, "retry") },
          "Retry",
        ),
        h(
          "button",
          { type: "button", id: "watch-delete", class: "danger", onclick: (e) => remove(w, e.currentTarget) },
          "Delete",
        ),
        w.spec
          ? h(
              "button",
              { type: "button", onclick: () => ((location.hash = "#/build"), loadSpec(w.spec)) },
              "Edit a copy",
            )
          : null,
      ),
    ),
    h(
      "div",
      { class: "panel" },
      h("div", { class: "graph-scroll" }, svgElement()),
      w.kind === "workflows" && !w.spec
        ? h(
            "p",
            { class: "muted" },
            "Edges are not shown: the API returns a workflow's nodes, not its edges; those submitted from this browser tab show them.",
          )
        : null,
    ),
    h(
      "div",
      { class: "panel" },
      h("h3", {}, "Nodes"),
      h(
        "div",
        { class: "table-scroll" },
        h(
          "table",
          { class: "nodes" },
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ["Node", "Service", "Status", "Attempts", "Started", "Finished", "Took", "Error"].map((t) =>
                h("th", {}, t),
              ),
            ),
          ),
          h("tbody", { id: "watch-nodes" }),
        ),
      ),
    ),
    h(
      "div",
      { class: "panel" },
      h("h3", {}, "Results"),
      h("div", { class: "results", id: "watch-results" }, h("p", { class: "muted placeholder" }, "Nothing yet.")),
    ),
    h(
      "details",
      { class: "panel events" },
      h("summary", { id: "watch-events-title" }, "Events"),
      h("ol", { id: "watch-events" }),
    ),
  );
}

function svgElement() {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.id = "watch-graph";
  svg.setAttribute("class", "graph");
  return svg;
}

function render(w) {
  const view = w.view;
  $("#watch-title").textContent = view.name || "(unnamed)";
  $("#watch-times").textContent = `created ${formatTime(view.created_at)} · updated ${formatTime(view.updated_at)}`;
  $("#watch-status").replaceChildren(statusBadge(view.status));
  $("#watch-cancel").disabled = FINAL.has(view.status);
  $("#watch-retry").disabled = !["failed", "cancelled"].includes(view.status);

  const order = w.spec ? Object.keys(w.spec.nodes).filter((id) => id in view.nodes) : Object.keys(view.nodes);
  const graph = {
    nodes: order.map((id) => ({ id, ...view.nodes[id], attempt: view.nodes[id].attempts })),
    edges: w.spec ? w.spec.edges : [],
  };
  drawGraph($("#watch-graph"), graph);

  $("#watch-nodes").replaceChildren(
    ...order.map((id) => {
      const n = view.nodes[id];
      return h(
        "tr",
        { dataset: { node: id } },
        h("td", {}, h("code", {}, id)),
        h("td", {}, n.service),
        h("td", {}, statusBadge(n.status)),
        h("td", { class: "num" }, String(n.attempts ?? "")),
        h("td", {}, formatTime(n.started_at)),
        h("td", {}, formatTime(n.finished_at)),
        h("td", { class: "num" }, formatDuration(n.started_at, n.finished_at)),
        h("td", { class: "error-cell" }, n.error || ""),
      );
    }),
  );
  renderResults(w, order);
}

// ---------------------------------------------------------------- results

async function renderResults(w, order) {
  const box = $("#watch-results");
  const ready = order.filter((id) => w.view.nodes[id].status === "completed" && w.view.nodes[id].output);
  if (!ready.length) return;
  box.querySelector(".placeholder")?.remove();
  for (const nodeId of ready) {
    const output = w.view.nodes[nodeId].output;
    const known = w.outputs.get(nodeId);
    if (known && known.bytes === output.bytes) continue; // kept: a playing audio player is not reset
    const card = h(
      "div",
      { class: "result", dataset: { node: nodeId } },
      h(
        "h4",
        {},
        nodeId,
        h("small", {}, ` ${w.view.nodes[nodeId].service} · ${output.content_type} · ${formatBytes(output.bytes)}`),
      ),
      h("p", { class: "muted" }, "Loading…"),
    );
    if (known) known.element.replaceWith(card);
    else box.append(card);
    w.outputs.set(nodeId, { bytes: output.bytes, url: "", element: card });
    try {
      const blob = await apiBlob(outputUrl(w, nodeId));
      if (current !== w) return;
      const url = URL.createObjectURL(blob);
      w.outputs.get(nodeId).url = url;
      card.lastChild.replaceWith(
        await outputElement(blob, url, output.content_type),
        downloadLink(w, nodeId, url, output.content_type),
      );
    } catch (error) {
      card.lastChild.replaceWith(h("p", { class: "field-error" }, `Could not load the output: ${error.message}`));
    }
  }
}

async function outputElement(blob, url, contentType) {
  const type = contentType.split(";")[0].trim();
  if (type.startsWith("audio/")) return h("audio", { controls: true, src: url, preload: "metadata" });
  if (type.startsWith("image/")) return h("img", { src: url, alt: "the node's image", class: "output-image" });
  let text = await blob.text();
  if (type === "application/json") {
    // an embedding: a long list of numbers, shown shortened
    const value = JSON.parse(text);
    text = JSON.stringify(
      value,
      (key, v) =>
        Array.isArray(v) && v.length > 8 && typeof v[0] === "number" ? [...v.slice(0, 8), `… ${v.length} numbers`] : v,
      2,
    );
  }
  return h("pre", { class: "text-output" }, text);
}

function downloadLink(w, nodeId, url, contentType) {
  const extension = EXTENSIONS[contentType.split(";")[0].trim()] || "bin";
  return h("a", { href: url, download: `${w.id}-${nodeId}.${extension}`, class: "download" }, "Download");
}

// ---------------------------------------------------------------- events

function onEvent(w, event, id) {
  w.events.push({ id, event, at: new Date() });
  w.lastId = id;
  w.lastFinal = event.type === "workflow" && FINAL.has(event.status);
  const node = event.type === "node" ? w.view.nodes[event.node_id] : null;
  if (node) {
    node.status = event.status;
    if (event.attempt) node.attempts = event.attempt;
    if (event.error) node.error = event.error;
  } else if (event.type === "workflow") {
    w.view.status = event.status;
  }
  render(w);
  const detail = [event.node_id, event.status, event.attempt ? `attempt ${event.attempt}` : null, event.error]
    .filter(Boolean)
    .join(" · ");
  $("#watch-events").append(
    h("li", {}, h("code", {}, `#${id}`), ` ${w.events.at(-1).at.toLocaleTimeString()} ${event.type}: ${detail}`),
  );
  $("#watch-events-title").textContent = `Events (${w.events.length})`;
  // Timings and outputs are in the record, not the events: fetch it once things settle.
  clearTimeout(w.refreshTimer);
  w.refreshTimer = setTimeout(() => refresh(w), REFRESH_DELAY_MS);
}

async function refresh(w) {
  try {
    const view = normalise(w.kind, await api(w.base, { signal: w.controller.signal }));
    if (current !== w) return;
    w.view = view;
    render(w);
  } catch {
    // the stream reports what matters (a deleted workflow, an expired token)
  }
}

async function follow(w) {
  if (w.following) return;
  w.following = true;
  const stream = $("#watch-stream");
  const states = {
    live: () => ["live", "● live"],
    reconnecting: (ms) => ["reconnecting", `reconnecting in ${Math.round(ms / 1000)} s…`],
    finished: () => ["finished", "stream ended"],
    failed: (error) => ["failed", `stream stopped: ${error.message}`],
  };
  await followEvents(`${w.base}/events`, {
    signal: w.controller.signal,
    lastId: w.lastId,
    isFinished: () => w.lastFinal,
    onEvent: (event, id) => onEvent(w, event, id),
    onState: (state, extra) => {
      if (current !== w) return;
      const [kind, text] = states[state](extra);
      stream.className = `stream ${kind}`;
      stream.textContent = text;
    },
  });
  w.following = false;
  if (current === w) refresh(w);
}

// ---------------------------------------------------------------- actions

async function action(w, button, verb) {
  clearError();
  await act(button, async () => {
    w.view = normalise(w.kind, await api(`${w.base}/${verb}`, { method: "POST" }));
    render(w);
    if (verb === "retry") {
      w.lastFinal = false;
      follow(w); // the log goes on after the last event seen
    }
  });
}

async function remove(w, button) {
  // Two clicks: the first asks, the second deletes.
  if (!button.classList.contains("confirm")) {
    button.classList.add("confirm");
    button.textContent = "Really delete?";
    setTimeout(() => {
      button.classList.remove("confirm");
      button.textContent = "Delete";
    }, 4000);
    return;
  }
  clearError();
  await act(button, async () => {
    await api(w.base, { method: "DELETE" });
    stopWatch();
    location.hash = "#/history";
  });
}
