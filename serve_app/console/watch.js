// Watching a workflow (or a task) run: the graph coloured live from its event stream, the nodes'
// attempts, timings and errors, its progress, the results (text, audio, images, videos) and the actions on it.

import { api, apiBlob, followEvents } from "./api.js";
import { loadSpec, recallSpec } from "./builder.js";
import { drawGraph } from "./graph.js";
import { $, FINAL, act, clearError, formatBytes, formatDuration, formatTime, h, statusBadge } from "./ui.js";

const EXTENSIONS = {
  "text/plain": "txt",
  "audio/wav": "wav",
  "image/png": "png",
  "image/jpeg": "jpg",
  "video/mp4": "mp4",
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
    progress: body.progress,
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

function message(text) {
  $("#watch").hidden = true;
  $("#watch-message").hidden = false;
  $("#watch-message").textContent = text;
}

/** Show the workflow (`kind` "workflows") or task (`kind` "tasks") `id`, and follow its events. */
export async function showWatch(kind, id) {
  stopWatch();
  if (!id) return message("Submit a workflow from Build, or open one from History or by its id.");
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
  message("Loading…");
  const loaded = await act(null, async () => normalise(kind, await api(w.base)));
  if (current !== w) return;
  if (!loaded) return message(`Could not open ${kind.slice(0, -1)} ${id}.`);
  w.view = loaded;
  $("#watch-kind").textContent = kind === "workflows" ? "workflow" : "task";
  $("#watch-id").textContent = id;
  $("#watch-edit").hidden = !w.spec;
  $("#watch-no-edges").hidden = kind !== "workflows" || Boolean(w.spec);
  $("#watch-results").replaceChildren(h("p", { class: "muted placeholder" }, "Nothing yet."));
  $("#watch-events").replaceChildren();
  $("#watch-events-title").textContent = "Events";
  $("#watch-stream").textContent = "";
  $("#watch-message").hidden = true;
  $("#watch").hidden = false;
  render(w);
  follow(w);
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
        h("td", {}, statusBadge(n.status), progressOf(n)),
        h("td", { class: "num", dataset: { label: "attempts" } }, String(n.attempts ?? "")),
        h("td", { dataset: { label: "started" } }, formatTime(n.started_at)),
        h("td", { dataset: { label: "finished" } }, formatTime(n.finished_at)),
        h("td", { class: "num", dataset: { label: "took" } }, formatDuration(n.started_at, n.finished_at)),
        h("td", { class: "error-cell" }, n.error || ""),
      );
    }),
  );
  renderResults(w, order);
}

/** A long node's progress while it runs (a video's denoising steps, 0-100), as a bar and a percentage. */
function progressOf(n) {
  if (n.status !== "running" || n.progress === undefined || n.progress === null) return "";
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: 100, value: n.progress, "aria-label": "progress" }),
    ` ${n.progress}%`,
  );
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
    if (known) {
      URL.revokeObjectURL(known.url);
      known.element.replaceWith(card);
    } else box.append(card);
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
  if (type.startsWith("video/")) {
    return h("video", { controls: true, src: url, preload: "metadata", class: "output-video" });
  }
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
    if (event.progress !== undefined) node.progress = event.progress;
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

async function action(button, verb) {
  const w = current;
  clearError();
  const body = await act(button, () => api(`${w.base}/${verb}`, { method: "POST" }));
  if (!body || current !== w) return;
  w.view = normalise(w.kind, body);
  render(w); // after `act`, which enables the button again: the new status decides
  if (verb === "retry") {
    w.lastFinal = false;
    follow(w); // the log goes on after the last event seen
  }
}

async function remove(button) {
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
  const w = current;
  clearError();
  await act(button, async () => {
    await api(w.base, { method: "DELETE" });
    stopWatch();
    location.hash = "#/history";
  });
}

export function initWatch() {
  $("#watch-cancel").addEventListener("click", (event) => action(event.currentTarget, "cancel"));
  $("#watch-retry").addEventListener("click", (event) => action(event.currentTarget, "retry"));
  $("#watch-delete").addEventListener("click", (event) => remove(event.currentTarget));
  $("#watch-edit").addEventListener("click", () => {
    const spec = current.spec;
    location.hash = "#/build";
    loadSpec(spec);
  });
}
