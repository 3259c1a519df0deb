// Small DOM helpers shared by the views, and the one error banner.

/** An element: `h("a", {href: "#", class: "x", onclick: f}, "text", child)`. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
  return element;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element, like `h`: attributes that are null or undefined are left out. */
export function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) element.setAttribute(name, value);
  }
  element.append(...children);
  return element;
}

/** The smallest 1, 2 or 5 × 10ⁿ at or above `value`: a chart axis's round top. */
export function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= value);
}

export const FINAL = new Set(["completed", "failed", "cancelled"]);
export const SERVICES = ["llm", "stt", "tts", "pic2text", "text2pic", "embed"];

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, dataset: { status } }, status);
}

/** A time (RFC 3339 or a Date): only the clock time if it is today. */
export function formatTime(time) {
  if (!time) return "";
  const date = new Date(time);
  const today = new Date().toDateString() === date.toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

export function formatDuration(start, end) {
  if (!start || !end) return "";
  return `${((new Date(end) - new Date(start)) / 1000).toFixed(2)} s`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** A detail of an API error, for a person: "node b: part of a cycle". */
export function describeDetail(detail) {
  if (detail.node !== undefined) return `node ${detail.node}: ${detail.reason}`;
  if (detail.edge) return `edge ${detail.edge.from} → ${detail.edge.to}: ${detail.reason}`;
  if (detail.field !== undefined) return `${detail.field}: ${detail.reason}`;
  return JSON.stringify(detail);
}

/** Show an error (an ApiError or any Error) in the banner at the top of the page. */
export function showError(error) {
  const banner = $("#error");
  const title = error.code
    ? `${error.message} (${error.status ? `${error.status} ` : ""}${error.code})`
    : error.message || String(error);
  const retry = error.retryAfter ? h("p", {}, `Try again in ${error.retryAfter} s.`) : null;
  const details = (error.details || []).map((d) => h("li", {}, describeDetail(d)));
  const parts = [
    h("button", { class: "close", type: "button", "aria-label": "Dismiss", onclick: clearError }, "×"),
    h("strong", { class: "error-title" }, title),
    details.length ? h("ul", {}, details) : null,
    retry,
  ];
  banner.replaceChildren(...parts.filter(Boolean));
  banner.hidden = false;
  // A 401 means the token is no good any more: the console signs out (and keeps this message).
  if (error.status === 401) window.dispatchEvent(new Event("labubu:unauthorized"));
}

export function clearError() {
  $("#error").hidden = true;
}

/** Run an async action from a button: the button is disabled meanwhile, errors go to the banner. */
export async function act(button, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (error) {
    showError(error);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}
