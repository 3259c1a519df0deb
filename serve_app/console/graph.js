// The workflow graph as inline SVG: a layered layout (left to right), nodes coloured by service
// or status, edges with their prompts, and edges drawn by dragging from a node's port.

import { svg as s } from "./ui.js";

const NODE_W = 170;
const NODE_H = 58;
const GAP_X = 70;
const GAP_Y = 28;
const PAD = 32; // room for the curves of backward edges, which swing out beside their nodes
// A wide graph on a narrow screen shrinks down to this scale, then scrolls sideways instead.
const MIN_SCALE = 0.6;

const clip = (text, length) => (text.length > length ? `${text.slice(0, length - 1)}…` : text);

/**
 * Node positions: a node's column is its longest path from a root. Edges that close a cycle (the
 * back edges of a depth-first search) are left out of the layering, so a hand-drawn cycle still
 * draws, and the API names it when the workflow is submitted.
 */
export function layout(ids, edges, room = Infinity) {
  const known = new Set(ids);
  const usable = edges.filter((e) => known.has(e.from) && known.has(e.to) && e.from !== e.to);
  if (!usable.length) return grid(ids, edges.length > 0, room);
  const children = new Map(ids.map((id) => [id, []]));
  usable.forEach((e) => children.get(e.from).push(e));

  const state = new Map(); // 1: on the DFS stack, 2: done
  const back = new Set();
  const visit = (id) => {
    state.set(id, 1);
    for (const edge of children.get(id)) {
      const seen = state.get(edge.to);
      if (seen === 1) back.add(edge);
      else if (!seen) visit(edge.to);
    }
    state.set(id, 2);
  };
  ids.forEach((id) => state.get(id) || visit(id));

  const forward = usable.filter((e) => !back.has(e));
  const indegree = new Map(ids.map((id) => [id, 0]));
  forward.forEach((e) => indegree.set(e.to, indegree.get(e.to) + 1));
  const column = new Map(ids.map((id) => [id, 0]));
  const ready = ids.filter((id) => indegree.get(id) === 0);
  while (ready.length) {
    const id = ready.shift();
    for (const edge of forward.filter((e) => e.from === id)) {
      column.set(edge.to, Math.max(column.get(edge.to), column.get(id) + 1));
      indegree.set(edge.to, indegree.get(edge.to) - 1);
      if (indegree.get(edge.to) === 0) ready.push(edge.to);
    }
  }

  // Rows: submission order, then each node moved towards the mean row of its parents.
  const columns = [];
  ids.forEach((id) => (columns[column.get(id)] ||= []).push(id));
  const row = new Map();
  columns.forEach((members) => {
    const weight = (id) => {
      const parents = forward.filter((e) => e.to === id && row.has(e.from)).map((e) => row.get(e.from));
      return parents.length ? parents.reduce((a, b) => a + b, 0) / parents.length : members.indexOf(id);
    };
    const order = [...members].sort((a, b) => weight(a) - weight(b));
    order.forEach((id, index) => row.set(id, index));
  });

  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const positions = new Map();
  columns.forEach((members, index) => {
    const offset = ((tallest - members.length) * (NODE_H + GAP_Y)) / 2;
    members.forEach((id) => {
      positions.set(id, {
        x: PAD + index * (NODE_W + GAP_X),
        y: PAD + offset + row.get(id) * (NODE_H + GAP_Y),
      });
    });
  });
  const width = PAD * 2 + Math.max(1, columns.length) * (NODE_W + GAP_X) - GAP_X;
  const backwards = edges.some((e) => known.has(e.from) && known.has(e.to) && column.get(e.to) <= column.get(e.from));
  const height = PAD * 2 + tallest * (NODE_H + GAP_Y) - GAP_Y + (backwards ? 50 : 0); // room for the curves below
  return { positions, width, height };
}

/** Nodes that nothing connects (yet, or whose edges are unknown): rows of up to four, as many as fit in `room`. */
function grid(ids, selfLoops, room) {
  const fit = Math.floor((room / MIN_SCALE - 2 * PAD + GAP_X) / (NODE_W + GAP_X));
  const across = Math.max(1, Math.min(ids.length, 4, fit));
  const positions = new Map();
  ids.forEach((id, i) => {
    positions.set(id, { x: PAD + (i % across) * (NODE_W + GAP_X), y: PAD + Math.floor(i / across) * (NODE_H + GAP_Y) });
  });
  const width = PAD * 2 + across * (NODE_W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.ceil(ids.length / across) * (NODE_H + GAP_Y) - GAP_Y + (selfLoops ? 50 : 0);
  return { positions, width, height };
}

/** The edge's path, and where its prompt goes. */
function edgePath(from, to) {
  const sx = from.x + NODE_W;
  const sy = from.y + NODE_H / 2;
  const tx = to.x;
  const ty = to.y + NODE_H / 2;
  if (tx > sx) {
    const bend = Math.max(30, (tx - sx) / 2);
    return {
      d: `M ${sx} ${sy} C ${sx + bend} ${sy} ${tx - bend} ${ty} ${tx} ${ty}`,
      x: (sx + tx) / 2,
      y: (sy + ty) / 2 - 8,
    };
  }
  // Backwards (a cycle or a self-loop): out to the right, round below both nodes, and in from the
  // left, so that the arrow still points into the node.
  const below = Math.max(from.y, to.y) + NODE_H + 36;
  const mid = (sx + tx) / 2;
  const d = `M ${sx} ${sy} C ${sx + 36} ${sy} ${sx + 36} ${below} ${mid} ${below} S ${tx - 36} ${ty} ${tx} ${ty}`;
  return { d, x: mid, y: below - 6 };
}

function pointIn(svg, event) {
  const point = svg.createSVGPoint();
  point.x = event.clientX;
  point.y = event.clientY;
  return point.matrixTransform(svg.getScreenCTM().inverse());
}

/**
 * Draw `graph` ({nodes: [{id, service, status?, attempt?}], edges: [{from, to, prompt}]}) into `svg`.
 *
 * `options`: `selected` ({node} or {edge: index}), `bad` ({nodes: Set, edges: Set of "from→to"}),
 * and the callbacks `onSelectNode(id)`, `onSelectEdge(index)`, `onConnect(from, to)`; with
 * `onConnect`, each node has a port to drag an edge from.
 */
export function drawGraph(svg, graph, options = {}) {
  const { selected = {}, bad = { nodes: new Set(), edges: new Set() } } = options;
  const ids = graph.nodes.map((n) => n.id);
  const { positions, width, height } = layout(ids, graph.edges, svg.parentElement?.clientWidth || Infinity);
  const marker = `arrow-${svg.id}`;
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.style.minWidth = `${Math.round(width * MIN_SCALE)}px`;
  // One arrowhead per look of an edge: a marker does not take the colour of its line.
  const arrow = (id, look) =>
    s(
      "marker",
      { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: `arrow ${look}` }),
    );
  svg.append(s("defs", {}, arrow(marker, ""), arrow(`${marker}-selected`, "selected"), arrow(`${marker}-bad`, "bad")));
  if (!ids.length) {
    svg.setAttribute("viewBox", "0 0 360 80");
    svg.setAttribute("width", 360);
    svg.append(s("text", { x: PAD, y: 46, class: "empty" }, "No nodes yet: pick a template or add one."));
    return;
  }

  graph.edges.forEach((edge, index) => {
    const from = positions.get(edge.from);
    const to = positions.get(edge.to);
    if (!from || !to) return; // an edge to an unknown node: the API will say so
    const { d, x, y } = edgePath(from, to);
    let look = "";
    if (selected.edge === index) look = "selected";
    if (bad.edges.has(`${edge.from}→${edge.to}`)) look = "bad";
    const group = s(
      "g",
      { class: `edge ${look}`.trim(), "data-from": edge.from, "data-to": edge.to },
      s("title", {}, `${edge.from} → ${edge.to}${edge.prompt ? `: ${edge.prompt}` : ""}`),
      s("path", { d, class: "hit" }),
      s("path", { d, class: "line", "marker-end": `url(#${marker}${look && `-${look}`})` }),
    );
    if (edge.prompt) {
      group.append(s("text", { x, y, class: "edge-label", "text-anchor": "middle" }, clip(edge.prompt, 22)));
    }
    if (options.onSelectEdge) group.addEventListener("click", () => options.onSelectEdge(index));
    svg.append(group);
  });

  for (const node of graph.nodes) {
    const { x, y } = positions.get(node.id);
    const classes = ["node", `service-${node.service}`];
    if (node.status) classes.push(`status-${node.status}`);
    if (selected.node === node.id) classes.push("selected");
    if (bad.nodes.has(node.id)) classes.push("bad");
    const subtitle = [node.service, node.status, node.attempt > 1 ? `attempt ${node.attempt}` : null];
    const group = s(
      "g",
      {
        class: classes.join(" "),
        transform: `translate(${x} ${y})`,
        "data-node": node.id,
        "data-status": node.status || null,
      },
      s("title", {}, node.error ? `${node.id}: ${node.error}` : node.id),
      s("rect", { class: "body", width: NODE_W, height: NODE_H, rx: 10 }),
      s("rect", { class: "stripe", width: 7, height: NODE_H, rx: 3 }),
      s("text", { x: 18, y: 24, class: "title" }, clip(node.id, 18)),
      s("text", { x: 18, y: 44, class: "subtitle" }, subtitle.filter(Boolean).join(" · ")),
    );
    if (options.onSelectNode) group.addEventListener("click", () => options.onSelectNode(node.id));
    if (options.onConnect) {
      const port = s("circle", { class: "port", cx: NODE_W, cy: NODE_H / 2, r: 8 });
      port.append(s("title", {}, "Drag to another node to connect"));
      port.addEventListener("pointerdown", (event) => startConnect(svg, node.id, event, options.onConnect));
      group.append(port);
    }
    svg.append(group);
  }
}

/** Drag from a port: a line follows the pointer; released over another node, it becomes an edge. */
function startConnect(svg, from, event, onConnect) {
  event.preventDefault();
  event.stopPropagation();
  const start = pointIn(svg, event);
  const line = s("line", { class: "dragging", x1: start.x, y1: start.y, x2: start.x, y2: start.y });
  svg.append(line);
  svg.setPointerCapture(event.pointerId);
  const move = (e) => {
    const point = pointIn(svg, e);
    line.setAttribute("x2", point.x);
    line.setAttribute("y2", point.y);
  };
  const end = (e) => {
    svg.removeEventListener("pointermove", move);
    svg.removeEventListener("pointerup", end);
    svg.removeEventListener("pointercancel", end);
    line.remove();
    // The pointer is captured by the SVG, so the node under it is found by position.
    const target = document.elementFromPoint(e.clientX, e.clientY)?.closest("g.node");
    const to = target?.dataset.node;
    if (to && to !== from) onConnect(from, to);
  };
  svg.addEventListener("pointermove", move);
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);
}
