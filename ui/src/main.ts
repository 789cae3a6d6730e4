// The window: the contexts with their switches, as the app computes them
// and pushes them (a View on every change), and the settings page.

import logo from "../../icons/app.svg";
import * as api from "./api";
import { byId, h } from "./dom";
import type { Defaults, Row, Settings, View } from "./generated";
import { renderRows, tickUptimes } from "./rows";

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

// Settings page.
const form = byId<HTMLFormElement>("settings-form");
const socksPort = byId<HTMLInputElement>("socks-port");
const httpEnabled = byId<HTMLInputElement>("http-enabled");
const httpPort = byId<HTMLInputElement>("http-port");
const clusterDomain = byId<HTMLInputElement>("cluster-domain");
const passthrough = byId<HTMLInputElement>("passthrough");
const dnsEnabled = byId<HTMLInputElement>("dns-enabled");
const dnsPort = byId<HTMLInputElement>("dns-port");
const sharedEnabled = byId<HTMLInputElement>("shared-enabled");
const sharedPort = byId<HTMLInputElement>("shared-port-number");
const defaultContext = byId<HTMLInputElement>("default-context");
const startAtLogin = byId<HTMLInputElement>("start-at-login");

function fillSettings(s: Settings, d: Defaults): void {
  socksPort.value = String(s.socks_port);
  socksPort.placeholder = String(d.socks_port);
  httpEnabled.checked = s.http_port !== null;
  // Off, HTTP still offers the port it would start from.
  httpPort.value = String(s.http_port ?? d.http_port);
  httpPort.placeholder = String(d.http_port);
  httpPort.disabled = !httpEnabled.checked;
  clusterDomain.value = s.cluster_domain;
  clusterDomain.placeholder = d.cluster_domain;
  passthrough.checked = s.passthrough;
  dnsEnabled.checked = s.dns_port !== null;
  dnsPort.value = String(s.dns_port ?? d.dns_port);
  dnsPort.placeholder = String(d.dns_port);
  dnsPort.disabled = !dnsEnabled.checked;
  sharedEnabled.checked = s.shared_port !== null;
  sharedPort.value = String(s.shared_port ?? d.shared_port);
  sharedPort.placeholder = String(d.shared_port);
  sharedPort.disabled = !sharedEnabled.checked;
  defaultContext.value = s.default_context ?? "";
  fillAliases(s);
  startAtLogin.checked = s.start_at_login;
}

// One alias field per context the window lists.
const aliases = byId<HTMLDivElement>("aliases");

function fillAliases(s: Settings): void {
  const fields = (view?.rows ?? []).map((row) =>
    h(
      "label",
      { class: "field alias-field" },
      h("span", { class: "field-text" }, h("span", { class: "field-label" }, row.name)),
      h("input", {
        type: "text",
        spellcheck: "false",
        autocomplete: "off",
        "data-alias-for": row.name,
        placeholder: row.default_alias,
        value: s.aliases[row.name] ?? "",
      }),
    ),
  );
  aliases.replaceChildren(...fields);
}

function askedAliases(): Record<string, string> {
  const asked: Record<string, string> = {};
  for (const input of aliases.querySelectorAll<HTMLInputElement>("input[data-alias-for]")) {
    const alias = input.value.trim();
    if (alias) asked[input.dataset.aliasFor ?? ""] = alias;
  }
  // Contexts the window no longer lists keep theirs.
  for (const [context, alias] of Object.entries(settings?.aliases ?? {})) {
    if (!(context in asked) && !aliases.querySelector(`input[data-alias-for="${CSS.escape(context)}"]`)) {
      asked[context] = alias;
    }
  }
  return asked;
}

function showPage(show: boolean): void {
  byId("contexts-view").hidden = show;
  byId("settings-view").hidden = !show;
  if (show && settings && defaults) fillSettings(settings, defaults);
  byId("settings-error").hidden = true;
}

httpEnabled.addEventListener("change", () => (httpPort.disabled = !httpEnabled.checked));
sharedEnabled.addEventListener("change", () => (sharedPort.disabled = !sharedEnabled.checked));
dnsEnabled.addEventListener("change", () => (dnsPort.disabled = !dnsEnabled.checked));
form.addEventListener("submit", (event) => {
  event.preventDefault();
  const asked: Settings = {
    socks_port: Number(socksPort.value),
    http_port: httpEnabled.checked ? Number(httpPort.value) : null,
    cluster_domain: clusterDomain.value.trim(),
    passthrough: passthrough.checked,
    dns_port: dnsEnabled.checked ? Number(dnsPort.value) : null,
    shared_port: sharedEnabled.checked ? Number(sharedPort.value) : null,
    default_context: defaultContext.value.trim() || null,
    aliases: askedAliases(),
    start_at_login: startAtLogin.checked,
  };
  api
    .saveSettings(asked)
    .then((saved) => {
      settings = saved;
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
  const snap = await api.snapshot();
  settings = snap.settings;
  defaults = snap.defaults;
  view = snap.view;
  byId("version").textContent = `v${snap.version}`;
  byId("open-logs").title = snap.log_dir;
  render();
  document.body.dataset.ready = "true";
  window.setInterval(() => tickUptimes(list, Date.now()), 1000);
}

start().catch((e) => {
  const banner = byId("banner");
  banner.hidden = false;
  banner.textContent = `The window could not load: ${reason(e)}`;
});
