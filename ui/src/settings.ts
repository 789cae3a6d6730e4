// The settings page: what new connections get (ports, cluster domain,
// passthrough, the DNS helper, the shared port and its aliases), start at
// login and reconnecting at start. It reads the settings when it opens and
// saves them through the app, which checks them.

import * as api from "./generated";
import { byId, h } from "./dom";
import { reason, toast } from "./feedback";
import type { Defaults, Row, Settings } from "./generated";

/** What the page needs of the window's state. */
export interface SettingsState {
  /** The settings, their defaults and the listed contexts; null before the first snapshot. */
  current(): { settings: Settings; defaults: Defaults; rows: Row[] } | null;
  /** The settings as the app saved them. */
  saved(settings: Settings): void;
}

/** Wires the page's form and buttons. */
export function settingsPage(state: SettingsState): void {
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
  const reconnectAtStart = byId<HTMLInputElement>("reconnect-at-start");

  function fillSettings(s: Settings, d: Defaults, rows: Row[]): void {
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
    fillAliases(s, rows);
    startAtLogin.checked = s.start_at_login;
    reconnectAtStart.checked = s.reconnect_at_start;
  }

  // One alias field per context the window lists.
  const aliases = byId<HTMLDivElement>("aliases");

  function fillAliases(s: Settings, rows: Row[]): void {
    const fields = rows.map((row) =>
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
    for (const [context, alias] of Object.entries(state.current()?.settings.aliases ?? {})) {
      if (!(context in asked) && !aliases.querySelector(`input[data-alias-for="${CSS.escape(context)}"]`)) {
        asked[context] = alias;
      }
    }
    return asked;
  }

  function showPage(show: boolean): void {
    byId("contexts-view").hidden = show;
    byId("settings-view").hidden = !show;
    const current = state.current();
    if (show && current) fillSettings(current.settings, current.defaults, current.rows);
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
      reconnect_at_start: reconnectAtStart.checked,
    };
    api
      .saveSettings(asked)
      .then((saved) => {
        state.saved(saved);
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
}
