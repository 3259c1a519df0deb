// The console's entry point: signing in with a token, and the views behind `#/build`, `#/watch`,
// `#/history`, `#/usage`, `#/talk` and `#/admin`.

import { initAdmin, showAdmin, stopAdmin } from "./admin.js";
import { api, session, tokenClaims } from "./api.js";
import { initBuilder } from "./builder.js";
import { initHistory, showHistory } from "./history.js";
import { initTalk, showTalk, stopTalk } from "./talk.js";
import { $, clearError, formatTime, showError } from "./ui.js";
import { initUsage, setUsageRole, showUsage } from "./usage.js";
import { initWatch, showWatch, stopWatch } from "./watch.js";

const VIEWS = ["signin", "build", "watch", "history", "usage", "talk", "admin"];
let identity = null; // {tenant, role, sub, expires} once signed in

/**
 * Who the token speaks for. A JWT says it in its claims; an API key does not, so its role is found
 * by asking an admin route. Either way the API checks the token first: a bad one is its 401.
 */
async function identify(token) {
  session.token = token;
  await api("/v1/workflows?limit=1");
  const claims = tokenClaims(token);
  if (claims) {
    const expires = claims.exp ? new Date(claims.exp * 1000) : null;
    return { tenant: claims.tenant, role: claims.role || "user", sub: claims.sub, expires };
  }
  let role = "user";
  try {
    await api("/v1/admin/tenants");
    role = "admin";
  } catch {
    // a 403: a user's key
  }
  return { tenant: "(the key's tenant)", role, sub: "", expires: null };
}

async function signIn(token) {
  clearError();
  try {
    identity = await identify(token);
  } catch (error) {
    session.token = null;
    identity = null;
    showError(error);
    return;
  }
  $("#who-tenant").textContent = identity.tenant;
  $("#who-role").textContent = identity.role;
  $("#who-sub").textContent = identity.sub ? ` · ${identity.sub}` : "";
  $("#who-expires").textContent = identity.expires ? ` · until ${formatTime(identity.expires)}` : "";
  $("#nav-admin").hidden = identity.role !== "admin";
  setUsageRole(identity.role);
  $("#nav").hidden = false;
  $("#whoami").hidden = false;
  if (!location.hash || location.hash === "#/signin") location.hash = "#/build";
  else route();
}

function signOut() {
  session.token = null;
  identity = null;
  $("#nav").hidden = true;
  $("#whoami").hidden = true;
  $("#token-input").value = "";
  route();
}

function show(view) {
  VIEWS.forEach((name) => ($(`#view-${name}`).hidden = name !== view));
  document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  if (view !== "watch") stopWatch();
  if (view !== "admin") stopAdmin();
  if (view !== "talk") stopTalk();
}

function route() {
  if (!identity) return show("signin");
  const [view, kind, id] = location.hash.replace(/^#\/?/, "").split("/");
  if (view === "watch") {
    show("watch");
    showWatch(kind === "tasks" ? "tasks" : "workflows", id ? decodeURIComponent(id) : "");
  } else if (view === "history") {
    show("history");
    showHistory();
  } else if (view === "usage") {
    show("usage");
    showUsage();
  } else if (view === "talk") {
    show("talk");
    showTalk();
  } else if (view === "admin" && identity.role === "admin") {
    show("admin");
    showAdmin();
  } else {
    show("build");
  }
}

function init() {
  initBuilder();
  initHistory();
  initWatch();
  initAdmin();
  initUsage();
  initTalk();
  $("#signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("#token-input")
      .value.trim()
      .replace(/^Bearer\s+/i, "");
    if (token) signIn(token);
  });
  $("#sign-out").addEventListener("click", signOut);
  $("#open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("#open-id").value.trim();
    if (id) location.hash = `#/watch/${$("#open-kind").value}/${encodeURIComponent(id)}`;
  });
  window.addEventListener("hashchange", () => {
    clearError();
    route();
  });
  // An expired or revoked token: back to the sign-in, with the API's message in the banner.
  window.addEventListener("labubu:unauthorized", () => identity && signOut());
  if (session.token) signIn(session.token);
  else route();
}

init();
