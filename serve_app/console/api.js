// The API client: the token, JSON calls, error bodies, and the SSE reader with reconnection.

const TOKEN_KEY = "labubu.token";

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  },
};

/** An error of the API, from its body `{"error": {"code", "message", "details"}}`. */
export class ApiError extends Error {
  constructor(status, code, message, details = [], retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
    this.retryAfter = retryAfter;
  }
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say; the status line is all there is
  }
  const error = body && body.error;
  const retryAfter = response.headers.get("Retry-After");
  if (error && error.code) {
    return new ApiError(response.status, error.code, error.message, error.details || [], retryAfter);
  }
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`, [], retryAfter);
}

function headers(extra = {}) {
  const all = { ...extra };
  if (session.token) all.Authorization = `Bearer ${session.token}`;
  return all;
}

/** A call to the API: the parsed JSON body (null for 204), or an ApiError. */
export async function api(path, { method = "GET", json, body, contentType, signal } = {}) {
  const extra = {};
  if (json !== undefined) {
    extra["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (contentType) {
    extra["Content-Type"] = contentType;
  }
  let response;
  try {
    response = await fetch(path, { method, body, headers: headers(extra), signal });
  } catch (exc) {
    if (exc.name === "AbortError") throw exc;
    throw new ApiError(0, "network_error", `the platform did not answer (${exc.message})`);
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return null;
  return response.json();
}

/** A resource (a node's output, say) as a Blob, with the caller's token. */
export async function apiBlob(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await errorOf(response);
  return response.blob();
}

/** The claims of a JWT, unverified (the API verifies it); null for anything else (an API key). */
export function tokenClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(text);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** The events of a `text/event-stream` body, as `{id, data}`, until the body ends. */
export async function* readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let id = null;
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop(); // an incomplete line waits for the next chunk
      for (const raw of lines) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
        if (line === "") {
          if (data.length) yield { id, data: data.join("\n") };
          id = null;
          data = [];
        } else if (!line.startsWith(":")) {
          // `: ping` comments keep the connection alive and carry nothing
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") id = value;
          else if (field === "data") data.push(value);
        }
      }
    }
  } finally {
    reader.releaseLock();
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/**
 * Follow an event stream until `isFinished()` says the last event was final and the stream ended.
 *
 * EventSource cannot send an Authorization header, so this reads the stream with fetch(). A dropped
 * connection is opened again with `Last-Event-ID`: the API then sends exactly the events after it.
 * `onState` hears "live", "reconnecting" (with the delay in ms), "finished" or "failed" (with the error).
 */
export async function followEvents(path, { onEvent, isFinished, onState, signal, lastId = 0 }) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const extra = lastId ? { "Last-Event-ID": String(lastId) } : {};
      const response = await fetch(path, { headers: headers(extra), signal, cache: "no-store" });
      if (!response.ok) throw await errorOf(response);
      onState("live");
      for await (const event of readEvents(response.body)) {
        if (event.id !== null) lastId = Number(event.id);
        delay = 1000;
        onEvent(JSON.parse(event.data), lastId);
      }
      if (isFinished()) {
        onState("finished");
        return lastId;
      }
    } catch (exc) {
      if (signal.aborted) return lastId;
      // A 4xx will not heal by itself (the workflow was deleted, the token expired): stop there.
      if (exc instanceof ApiError && exc.status >= 400 && exc.status < 500) {
        onState("failed", exc);
        return lastId;
      }
    }
    onState("reconnecting", delay);
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10000);
  }
  return lastId;
}
