// The window: the contexts with their switches, live counters pushed by the
// app, and the settings page.

import logo from "../../icons/app.svg";
import * as api from "./api";
import { byId } from "./dom";
import {
  buildRows,
  connectionUrl,
  diffConnections,
  headline,
  type ContextInfo,
  type Live,
  type Row,
  type Settings,
} from "./model";
import { renderRows, tickUptimes } from "./rows";

interface View {
  contexts: ContextInfo[];
  live: Live;
  settings: Settings | null;
}

const view: View = { contexts: [], live: { connections: [], attempts: [] }, settings: null };
const list = byId<HTMLDivElement>("contexts");

function render(): void {
  const rows = buildRows(view.contexts, view.live);
  renderRows(list, rows, { toggle, copy }, Date.now());
  byId("headline").textContent = headline(rows);
  document.body.dataset.connected = String(rows.some((r) => r.connection));
  if (rows.length === 0) {
    list.replaceChildren();
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = "The kubeconfig has no contexts.";
    list.append(empty);
  } else {
    list.querySelector(".empty")?.remove();
  }
}

/** Says what started or stopped, wherever it came from (switch, tray menu or a terminal). */
function announce(before: Live, after: Live): void {
  const diff = diffConnections(before.connections, after.connections);
  const started = diff.added.map((c) => `${c.context} on ${connectionUrl(c) ?? c.http ?? c.id}`);
  const stopped = diff.removed.map((c) => c.context);
  if (started.length > 0) toast(`Connected ${started.join(", ")}`);
  else if (stopped.length > 0) toast(`Disconnected ${stopped.join(", ")}`);
}

let toastTimer: number | undefined;
function toast(message: string, kind: "info" | "error" = "info"): void {
  const el = byId("toast");
  el.textContent = message;
  el.className = `toast visible ${kind}`;
  window.clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => (el.className = "toast"), kind === "error" ? 6000 : 2200);
}

const reason = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function toggle(row: Row, on: boolean): void {
  if (on) {
    // The app pushes the attempt and then the connection; nothing to track here.
    api.connect(row.name).catch((e) => toast(`${row.name}: ${reason(e)}`, "error"));
  } else if (row.connection) {
    api.disconnect(row.connection.id).catch((e) => toast(`${row.name}: ${reason(e)}`, "error"));
  } else {
    render();
  }
}

function copy(url: string): void {
  api
    .copyText(url)
    .then(() => toast(`Copied ${url}`))
    .catch((e) => toast(`Cannot copy: ${reason(e)}`, "error"));
}

function showContexts(changed: api.ContextsChanged): void {
  view.contexts = changed.contexts;
  const banner = byId("banner");
  banner.hidden = !changed.kubeconfig_error;
  banner.textContent = changed.kubeconfig_error ?? "";
  byId("kubeconfig-path").textContent =
    changed.kubeconfig.length > 0 ? `From ${changed.kubeconfig.join(", ")}` : "";
  render();
}

// Settings page.
const form = byId<HTMLFormElement>("settings-form");
const socksPort = byId<HTMLInputElement>("socks-port");
const httpEnabled = byId<HTMLInputElement>("http-enabled");
const httpPort = byId<HTMLInputElement>("http-port");
const clusterDomain = byId<HTMLInputElement>("cluster-domain");
const startAtLogin = byId<HTMLInputElement>("start-at-login");

function fillSettings(s: Settings): void {
  socksPort.value = String(s.socks_port);
  httpEnabled.checked = s.http_port !== null;
  httpPort.value = String(s.http_port ?? 3128);
  httpPort.disabled = !httpEnabled.checked;
  clusterDomain.value = s.cluster_domain;
  startAtLogin.checked = s.start_at_login;
}

function showPage(settings: boolean): void {
  byId("contexts-view").hidden = settings;
  byId("settings-view").hidden = !settings;
  if (settings && view.settings) fillSettings(view.settings);
  byId("settings-error").hidden = true;
}

httpEnabled.addEventListener("change", () => (httpPort.disabled = !httpEnabled.checked));
form.addEventListener("submit", (event) => {
  event.preventDefault();
  const settings: Settings = {
    socks_port: Number(socksPort.value),
    http_port: httpEnabled.checked ? Number(httpPort.value) : null,
    cluster_domain: clusterDomain.value.trim(),
    start_at_login: startAtLogin.checked,
  };
  api
    .saveSettings(settings)
    .then((saved) => {
      view.settings = saved;
      showPage(false);
      toast("Settings saved; they apply to new connections");
    })
    .catch((e) => {
      const error = byId("settings-error");
      error.textContent = reason(e);
      error.hidden = false;
    });
});
byId("open-settings").addEventListener("click", () => showPage(true));
byId("close-settings").addEventListener("click", () => showPage(false));

byId("refresh").addEventListener("click", () => {
  api
    .reloadContexts()
    .then(showContexts)
    .catch((e) => toast(reason(e), "error"));
});
byId("open-logs").addEventListener("click", (event) => {
  event.preventDefault();
  api.openLogs().catch((e) => toast(`Cannot open the log folder: ${reason(e)}`, "error"));
});

async function start(): Promise<void> {
  byId<HTMLImageElement>("logo").src = logo;
  // Listen first so no push between the snapshot and the subscription is lost.
  await api.onLive((live) => {
    announce(view.live, live);
    view.live = live;
    render();
  });
  await api.onContexts(showContexts);
  const snap = await api.snapshot();
  view.settings = snap.settings;
  view.live = snap.live;
  byId("version").textContent = `v${snap.version}`;
  byId("open-logs").title = snap.log_dir;
  showContexts({ contexts: snap.contexts, kubeconfig_error: snap.kubeconfig_error, kubeconfig: snap.kubeconfig });
  document.body.dataset.ready = "true";
  window.setInterval(() => tickUptimes(list, Date.now()), 1000);
}

start().catch((e) => {
  const banner = byId("banner");
  banner.hidden = false;
  banner.textContent = `The window could not load: ${reason(e)}`;
});
