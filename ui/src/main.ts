// The window: the contexts with their switches, as the app computes them
// and pushes them (a View on every change), the Connections view of each
// (pushed as `activity`), and the settings page.

import logo from "../../icons/app.svg";
import * as api from "./generated";
import { byId } from "./dom";
import type { Defaults, Row, Settings, View } from "./generated";
import { toast, reason } from "./feedback";
import { renderRows, tickUptimes } from "./rows";
import { settingsPage } from "./settings";
import { connectionsView, decorateRows, setActivity } from "./connections";

const list = byId<HTMLDivElement>("contexts");
let view: View | null = null;
let settings: Settings | null = null;
let defaults: Defaults | null = null;

function render(): void {
  if (!view) return;
  renderRows(list, view.rows, { toggle, copy }, Date.now());
  byId("headline").textContent = view.headline;
  document.body.dataset.connected = String(view.rows.some((r) => r.connection !== null));
  if (view.rows.length === 0) {
    list.replaceChildren();
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = "The kubeconfig has no contexts.";
    list.append(empty);
  } else {
    list.querySelector(".empty")?.remove();
  }
  // A redrawn row gets its sparkline and Connections button back.
  decorateRows(list);
  const banner = byId("banner");
  banner.hidden = !view.kubeconfig_error;
  banner.textContent = view.kubeconfig_error ?? "";
  byId("kubeconfig-path").textContent = view.kubeconfig.length > 0 ? `From ${view.kubeconfig.join(", ")}` : "";
  const shared = view.shared_port;
  byId("shared-port").hidden = !shared;
  const sharedText = byId("shared-port").querySelector<HTMLElement>('[data-field="shared-url"]');
  if (sharedText) {
    const fallback = shared?.default_context ? `, default ${shared.default_context}` : "";
    sharedText.textContent = shared ? `Shared port ${shared.socks_url} (NAME.ALIAS${fallback})` : "";
  }
}

byId("copy-shared-url").addEventListener("click", () => view?.shared_port && copy(view.shared_port.socks_url));
byId("copy-shared-pac").addEventListener("click", () => view?.shared_port && copy(view.shared_port.pac_url));

function toggle(row: Row, on: boolean): void {
  // The app pushes the attempt and then the connection (or the failure).
  const done = on ? api.connect(row.name) : api.disconnect(row.name);
  done.catch((e) => {
    toast(`${row.name}: ${reason(e)}`, "error");
    // Nothing changed, so no push comes: put the switch back as the view has it.
    const el = list.querySelector<HTMLElement>(`.row[data-context="${CSS.escape(row.name)}"]`);
    if (el) el.dataset.key = "";
    render();
  });
}

function copy(url: string): void {
  api
    .copyText(url)
    .then(() => toast(`Copied ${url}`))
    .catch((e) => toast(`Cannot copy: ${reason(e)}`, "error"));
}

settingsPage({
  current: () => (settings && defaults ? { settings, defaults, rows: view?.rows ?? [] } : null),
  saved: (saved) => (settings = saved),
});

connectionsView((visible) => {
  byId("contexts-view").hidden = visible;
  byId("connections-view").hidden = !visible;
});
// The settings page replaces whichever view is shown.
byId("open-settings").addEventListener("click", () => (byId("connections-view").hidden = true));

byId("refresh").addEventListener("click", () => {
  api.reloadContexts().catch((e) => toast(reason(e), "error"));
});
byId("open-logs").addEventListener("click", (event) => {
  event.preventDefault();
  api.openLogs().catch((e) => toast(`Cannot open the log folder: ${reason(e)}`, "error"));
});

async function start(): Promise<void> {
  byId<HTMLImageElement>("logo").src = logo;
  // Listen first so no push between the snapshot and the subscription is lost.
  await api.onView((pushed) => {
    view = pushed;
    render();
  });
  await api.onAnnounce((text) => toast(text));
  await api.onActivity((pushed) => setActivity(pushed, list));
  const snap = await api.snapshot();
  settings = snap.settings;
  defaults = snap.defaults;
  view = snap.view;
  byId("version").textContent = `v${snap.version}`;
  byId("open-logs").title = snap.log_dir;
  render();
  setActivity(await api.activity(), list);
  document.body.dataset.ready = "true";
  window.setInterval(() => tickUptimes(list, Date.now()), 1000);
}

start().catch((e) => {
  const banner = byId("banner");
  banner.hidden = false;
  banner.textContent = `The window could not load: ${reason(e)}`;
});
