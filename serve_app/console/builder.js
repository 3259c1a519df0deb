// The workflow builder: nodes, edges with prompts, inputs (text, files, the microphone), templates,
// and the request body as JSON, editable both ways.

import { api, ApiError } from "./api.js";
import { drawGraph } from "./graph.js";
import { canRecord, startRecording } from "./recorder.js";
import { $, SERVICES, act, clearError, formatBytes, h, showError } from "./ui.js";

const NODE_ID = /^[A-Za-z0-9_.-]{1,64}$/;
const UPLOAD_TYPES = { wav: "audio/wav", png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg" };
const SPECS_KEY = "labubu.specs";
const REMEMBERED_SPECS = 50;

const llm = (prompt, maxTokens = 64) => ({ service: "llm", prompt, params: { max_tokens: maxTokens } });

export const TEMPLATES = {
  "story-speech-picture": {
    title: "Story → speech + picture → caption",
    spec: {
      name: "story-speech-picture",
      priority: "default",
      nodes: {
        story: llm("Write a two-line poem about a forest at dawn."),
        speak: { service: "tts", prompt: "", params: {} },
        paint: { service: "text2pic", prompt: "An illustration of: ", params: {} },
        caption: { service: "pic2text", prompt: "Describe the picture.", params: {} },
      },
      edges: [
        { from: "story", to: "speak", prompt: "" },
        { from: "story", to: "paint", prompt: "" },
        { from: "paint", to: "caption", prompt: "" },
      ],
      inputs: { story: { text: "Use simple words." } },
    },
  },
  "voice-assistant": {
    title: "Speech → text → answer → speech",
    hint: "Attach audio to the node “listen”: upload a WAV file or record one.",
    spec: {
      name: "voice-assistant",
      priority: "default",
      nodes: {
        listen: { service: "stt", prompt: "", params: {} },
        answer: llm("Answer the question in one or two sentences."),
        reply: { service: "tts", prompt: "", params: {} },
      },
      edges: [
        { from: "listen", to: "answer", prompt: "Question: " },
        { from: "answer", to: "reply", prompt: "" },
      ],
      inputs: {},
    },
  },
  "tts-stt": {
    title: "Text → speech → text (round trip)",
    spec: {
      name: "tts-stt",
      priority: "default",
      nodes: {
        speak: { service: "tts", prompt: "", params: {} },
        transcribe: { service: "stt", prompt: "", params: {} },
      },
      edges: [{ from: "speak", to: "transcribe", prompt: "" }],
      inputs: { speak: { text: "The quick brown fox jumps over the lazy dog." } },
    },
  },
  ask: {
    title: "Ask the LLM",
    spec: {
      name: "ask",
      priority: "default",
      nodes: { answer: llm("Answer briefly.") },
      edges: [],
      inputs: { answer: { text: "What is the capital of France?" } },
    },
  },
};

const blank = () => ({ name: "", priority: "default", nodes: {}, edges: [], inputs: {} });

const state = {
  spec: blank(),
  selected: {}, // {node: id} or {edge: index}
  bad: { nodes: new Set(), edges: new Set() }, // what the API's last error named
  attachments: {}, // node id → {label, url, type, bytes, source}: uploaded inputs, for a preview
  inputMode: {}, // node id → "file" or "microphone", chosen before anything is uploaded
  jsonValid: true,
  recording: null,
};

// ---------------------------------------------------------------- remembered specs

/** Keep a submitted workflow: the API does not return its edges, which the watch view draws. */
function rememberSpec(workflowId, spec) {
  const specs = JSON.parse(sessionStorage.getItem(SPECS_KEY) || "{}");
  // Inline media is left out: session storage is small, and uploads are kept by reference.
  const inputs = Object.fromEntries(Object.entries(spec.inputs || {}).filter(([, input]) => !input.data_b64));
  specs[workflowId] = { ...spec, edges: spec.edges || [], inputs };
  const ids = Object.keys(specs);
  ids.slice(0, Math.max(0, ids.length - REMEMBERED_SPECS)).forEach((id) => delete specs[id]);
  try {
    sessionStorage.setItem(SPECS_KEY, JSON.stringify(specs));
  } catch {
    // storage full: the watch view then draws the nodes without their edges
  }
}

export function recallSpec(workflowId) {
  return JSON.parse(sessionStorage.getItem(SPECS_KEY) || "{}")[workflowId] || null;
}

// ---------------------------------------------------------------- the model

const nodes = () => state.spec.nodes || {};
const edges = () => (state.spec.edges ||= []);
const inputs = () => (state.spec.inputs ||= {});

function freshId(base) {
  let id = base;
  for (let n = 2; id in nodes(); n += 1) id = `${base}${n}`;
  return id;
}

/** The spec changed: redraw the graph and the JSON (not the inspector, which may have the focus). */
function changed({ fromJson = false } = {}) {
  state.bad = { nodes: new Set(), edges: new Set() };
  drawBuildGraph();
  fillEdgeSelects();
  $("#wf-name").value = state.spec.name || "";
  $("#wf-priority").value = state.spec.priority || "default";
  if (!fromJson) {
    $("#wf-json").value = JSON.stringify(state.spec, null, 2);
    setJsonError(null);
  }
}

function select(selection) {
  state.selected = selection;
  drawBuildGraph();
  renderInspector();
}

export function loadSpec(spec, hint = "") {
  Object.values(state.attachments).forEach((a) => URL.revokeObjectURL(a.url));
  state.spec = structuredClone(spec);
  state.attachments = {};
  state.inputMode = {};
  $("#template-hint").textContent = hint;
  changed();
  select({});
}

function addNode(service) {
  const id = freshId(service);
  state.spec.nodes = { ...nodes(), [id]: service === "llm" ? llm("") : { service, prompt: "", params: {} } };
  changed();
  select({ node: id });
}

function renameNode(from, to) {
  if (to === from) return true;
  if (!NODE_ID.test(to) || to in nodes()) return false;
  // Rebuilt, not patched, to keep the node's place in the order (the layout follows it).
  state.spec.nodes = Object.fromEntries(Object.entries(nodes()).map(([id, n]) => [id === from ? to : id, n]));
  edges().forEach((e) => {
    if (e.from === from) e.from = to;
    if (e.to === from) e.to = to;
  });
  for (const map of [inputs(), state.attachments, state.inputMode]) {
    if (from in map) {
      map[to] = map[from];
      delete map[from];
    }
  }
  state.selected = { node: to };
  changed();
  return true;
}

function removeNode(id) {
  delete nodes()[id];
  delete inputs()[id];
  state.spec.edges = edges().filter((e) => e.from !== id && e.to !== id);
  changed();
  select({});
}

function connect(from, to, prompt = "") {
  const existing = edges().findIndex((e) => e.from === from && e.to === to);
  if (existing >= 0) return select({ edge: existing });
  edges().push({ from, to, prompt });
  changed();
  select({ edge: edges().length - 1 });
}

// ---------------------------------------------------------------- drawing

function drawBuildGraph() {
  const graph = {
    nodes: Object.entries(nodes()).map(([id, n]) => ({ id, service: String(n?.service || "?").toLowerCase() })),
    edges: edges(),
  };
  drawGraph($("#build-graph"), graph, {
    selected: state.selected,
    bad: state.bad,
    onSelectNode: (id) => select({ node: id }),
    onSelectEdge: (index) => select({ edge: index }),
    onConnect: connect,
  });
}

function fillEdgeSelects() {
  for (const select of [$("#edge-from"), $("#edge-to")]) {
    const current = select.value;
    select.replaceChildren(...Object.keys(nodes()).map((id) => h("option", { value: id }, id)));
    if (current in nodes()) select.value = current;
  }
}

function field(label, control, note = null) {
  return h("label", { class: "field" }, h("span", {}, label), control, note);
}

function renderInspector() {
  const panel = $("#inspector");
  const { node, edge } = state.selected;
  if (node !== undefined && node in nodes()) panel.replaceChildren(...nodeInspector(node));
  else if (edge !== undefined && edges()[edge]) panel.replaceChildren(...edgeInspector(edge));
  else {
    panel.replaceChildren(
      h("h2", {}, "Inspector"),
      h("p", { class: "muted" }, "Select a node or an edge in the graph to edit it, or add a node."),
    );
  }
}

function nodeInspector(id) {
  const node = nodes()[id];
  const idError = h("small", { class: "field-error" });
  const idInput = h("input", {
    value: id,
    name: "node-id",
    autocomplete: "off",
    onchange: () => {
      const ok = renameNode(id, idInput.value.trim());
      idError.textContent = ok ? "" : "Use 1 to 64 letters, digits, _ . or -, not taken by another node.";
      if (ok) renderInspector();
    },
  });
  const service = h(
    "select",
    { name: "node-service", onchange: () => ((node.service = service.value), changed()) },
    SERVICES.map((s) => h("option", { value: s, selected: s === String(node.service).toLowerCase() }, s)),
  );
  const prompt = h("textarea", {
    name: "node-prompt",
    rows: 3,
    oninput: () => ((node.prompt = prompt.value), changed()),
  });
  prompt.value = node.prompt || "";
  const paramsError = h("small", { class: "field-error" });
  const params = h("textarea", {
    name: "node-params",
    rows: 2,
    spellcheck: "false",
    oninput: () => {
      try {
        const value = JSON.parse(params.value || "{}");
        if (typeof value !== "object" || Array.isArray(value) || value === null) throw new Error("not an object");
        node.params = value;
        paramsError.textContent = "";
        changed();
      } catch (exc) {
        paramsError.textContent = `Params must be a JSON object (${exc.message}).`;
      }
    },
  });
  params.value = JSON.stringify(node.params || {});
  return [
    h("h2", {}, "Node ", h("code", {}, id)),
    field("Id", idInput, idError),
    field("Service", service),
    field("Prompt", prompt),
    field("Params (JSON)", params, paramsError),
    inputEditor(id),
    h(
      "div",
      { class: "buttons" },
      h("button", { type: "button", class: "danger", onclick: () => removeNode(id) }, "Delete node"),
    ),
  ];
}

function inputMode(id) {
  const input = inputs()[id];
  if (!input) return state.inputMode[id] || "none";
  if (input.text !== undefined) return "text";
  const chosen = state.inputMode[id];
  return chosen === "file" || chosen === "microphone" ? chosen : state.attachments[id]?.source || "file";
}

function inputEditor(id) {
  const mode = inputMode(id);
  const modes = [
    ["none", "None"],
    ["text", "Text"],
    ["file", "File"],
  ];
  if (canRecord()) modes.push(["microphone", "Microphone"]);
  const choose = (value) => {
    state.inputMode[id] = value;
    if (value === "none") delete inputs()[id];
    else if (value === "text") inputs()[id] = { text: inputs()[id]?.text ?? "" };
    changed();
    renderInspector();
  };
  const radios = modes.map(([value, label]) =>
    h(
      "label",
      { class: "radio" },
      h("input", { type: "radio", name: `input-${id}`, value, checked: mode === value, onchange: () => choose(value) }),
      label,
    ),
  );
  const body = [];
  if (mode === "text") {
    const text = h("textarea", {
      name: "input-text",
      rows: 3,
      oninput: () => ((inputs()[id] = { text: text.value }), changed()),
    });
    text.value = inputs()[id]?.text || "";
    body.push(text);
  } else if (mode === "file") {
    body.push(
      h("input", {
        type: "file",
        name: "input-file",
        accept: "audio/wav,audio/x-wav,.wav,image/png,image/jpeg",
        onchange: (event) =>
          event.target.files[0] && uploadInput(id, event.target.files[0], event.target.files[0].name, "file"),
      }),
    );
  } else if (mode === "microphone") {
    body.push(recordButton(id));
  }
  const input = inputs()[id];
  if (input && input.text === undefined) body.push(attachmentView(id, input));
  return h(
    "fieldset",
    { class: "input-editor" },
    h("legend", {}, "Input"),
    h("div", { class: "radios" }, radios),
    body,
  );
}

function attachmentView(id, input) {
  const attachment = state.attachments[id];
  const what = input.upload_id ? `upload ${input.upload_id}` : `inline ${input.content_type || "data"}`;
  const parts = [h("span", { class: "attachment-id" }, what)];
  if (attachment) {
    parts.push(` · ${attachment.label} · ${attachment.type} · ${formatBytes(attachment.bytes)}`);
    if (attachment.type.startsWith("audio/")) parts.push(h("audio", { controls: true, src: attachment.url }));
    else parts.push(h("img", { src: attachment.url, alt: attachment.label, class: "thumb" }));
  }
  return h("div", { class: "attachment" }, parts);
}

function recordButton(id) {
  const status = h("span", { class: "muted" }, "");
  const button = h(
    "button",
    {
      type: "button",
      class: "record",
      onclick: async () => {
        if (!state.recording) {
          try {
            state.recording = await startRecording();
          } catch (exc) {
            showError(new Error(`The microphone is not available: ${exc.message}`));
            return;
          }
          button.textContent = "■ Stop";
          button.classList.add("on");
          status.textContent = "recording…";
          return;
        }
        const recording = state.recording;
        state.recording = null;
        button.disabled = true;
        status.textContent = "encoding…";
        await act(null, async () => {
          const blob = await recording.stop();
          await uploadInput(id, blob, `recording-${new Date().toLocaleTimeString()}.wav`, "microphone");
        });
        button.disabled = false;
      },
    },
    "● Record",
  );
  return h("div", { class: "recorder" }, button, status);
}

async function uploadInput(id, blob, label, source) {
  const extension = label.split(".").pop().toLowerCase();
  let type = blob.type === "audio/x-wav" ? "audio/wav" : blob.type;
  if (!Object.values(UPLOAD_TYPES).includes(type)) type = UPLOAD_TYPES[extension] || type || "application/octet-stream";
  await act(null, async () => {
    const upload = await api("/v1/uploads", { method: "PUT", body: blob, contentType: type });
    if (state.attachments[id]) URL.revokeObjectURL(state.attachments[id].url);
    state.attachments[id] = { label, url: URL.createObjectURL(blob), type, bytes: upload.bytes, source };
    inputs()[id] = { upload_id: upload.upload_id };
    changed();
  });
  if (state.selected.node === id) renderInspector();
}

function edgeInspector(index) {
  const edge = edges()[index];
  const prompt = h("textarea", {
    name: "edge-prompt",
    rows: 3,
    oninput: () => ((edge.prompt = prompt.value), changed()),
  });
  prompt.value = edge.prompt || "";
  const remove = () => {
    edges().splice(index, 1);
    changed();
    select({});
  };
  return [
    h("h2", {}, "Edge ", h("code", {}, `${edge.from} → ${edge.to}`)),
    field("Prompt (before the upstream output)", prompt),
    h("div", { class: "buttons" }, h("button", { type: "button", class: "danger", onclick: remove }, "Delete edge")),
  ];
}

// ---------------------------------------------------------------- JSON and submission

function setJsonError(message) {
  state.jsonValid = !message;
  $("#json-error").textContent = message || "";
  $("#wf-submit").disabled = Boolean(message);
}

function onJsonInput() {
  let spec;
  try {
    spec = JSON.parse($("#wf-json").value);
  } catch (exc) {
    return setJsonError(`Not valid JSON: ${exc.message}`);
  }
  if (!spec || typeof spec !== "object" || Array.isArray(spec) || typeof (spec.nodes ?? {}) !== "object") {
    return setJsonError("The body must be an object with `nodes` (an object).");
  }
  if (spec.edges !== undefined && !Array.isArray(spec.edges)) return setJsonError("`edges` must be a list.");
  setJsonError(null);
  state.spec = spec;
  if (state.selected.node !== undefined && !(state.selected.node in nodes())) state.selected = {};
  changed({ fromJson: true });
  if (document.activeElement === $("#wf-json")) renderInspector();
}

/** Mark what an API error names: nodes, edges, and fields such as `nodes.a.service` or `inputs.a`. */
function markBad(error) {
  const bad = { nodes: new Set(), edges: new Set() };
  for (const detail of error.details || []) {
    if (detail.node !== undefined) bad.nodes.add(detail.node);
    if (detail.edge) bad.edges.add(`${detail.edge.from}→${detail.edge.to}`);
    const [section, key] = String(detail.field || "").split(".");
    if ((section === "nodes" || section === "inputs") && key) bad.nodes.add(key);
    if (section === "edges" && edges()[Number(key)]) bad.edges.add(`${edges()[key].from}→${edges()[key].to}`);
  }
  state.bad = bad;
  drawBuildGraph();
}

async function submit(button) {
  clearError();
  const spec = structuredClone(state.spec);
  if (!spec.name) delete spec.name;
  try {
    button.disabled = true;
    const created = await api("/v1/workflows", { method: "POST", json: spec });
    rememberSpec(created.workflow_id, spec);
    location.hash = `#/watch/workflows/${encodeURIComponent(created.workflow_id)}`;
  } catch (error) {
    showError(error);
    if (error instanceof ApiError) markBad(error);
  } finally {
    button.disabled = !state.jsonValid;
  }
}

export function initBuilder() {
  $("#template").append(...Object.entries(TEMPLATES).map(([key, t]) => h("option", { value: key }, t.title)));
  $("#template").addEventListener("change", (event) => {
    const template = TEMPLATES[event.target.value];
    if (template) loadSpec(template.spec, template.hint || "");
    event.target.value = "";
  });
  $("#add-service").append(...SERVICES.map((s) => h("option", { value: s }, s)));
  $("#add-node").addEventListener("click", () => addNode($("#add-service").value));
  $("#connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("#edge-from").value && $("#edge-to").value)
      connect($("#edge-from").value, $("#edge-to").value, $("#edge-prompt").value);
  });
  $("#wf-name").addEventListener("input", (event) => {
    state.spec.name = event.target.value;
    changed();
  });
  $("#wf-priority").addEventListener("change", (event) => {
    state.spec.priority = event.target.value;
    changed();
  });
  $("#wf-json").addEventListener("input", onJsonInput);
  $("#wf-clear").addEventListener("click", () => loadSpec(blank()));
  $("#wf-submit").addEventListener("click", (event) => submit(event.currentTarget));
  loadSpec(blank());
}
