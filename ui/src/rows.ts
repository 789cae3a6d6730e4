// Draws the context rows as the app computed them (src-tauri/src/view.rs).
// A row is redrawn only when its shape changed; counters are updated in
// place, so a switch is never replaced under the pointer.

import * as api from "./generated";
import { h, icon } from "./dom";
import { reason, toast } from "./feedback";
import type { ErrorReport, Row, RowState } from "./generated";
import { counterFields, rowShapeKey, uptime } from "./model";

export interface RowActions {
  toggle(row: Row, on: boolean): void;
  copy(url: string): void;
}

const STATE_LABEL: Record<RowState, string> = {
  off: "Off",
  connecting: "Connecting…",
  on: "Connected",
  failing: "Connected, with errors",
  reconnecting: "Reconnecting to the API server…",
  degraded: "Connected, a watch failing",
  failed: "Could not connect",
};

// Clipped boxes (dd, code) hold their text in an inner span: WebDriver's
// visibility check counts text directly inside an overflow-hidden box as hidden.
function fact(label: string, field: string, value: string): HTMLElement {
  return h("div", { class: "fact" }, h("dt", {}, label), h("dd", {}, h("span", { "data-field": field }, value)));
}

function drawRow(row: Row, actions: RowActions, now: number): HTMLElement {
  const toggle = h("input", {
    type: "checkbox",
    role: "switch",
    class: "switch-input",
    "aria-label": `Connect ${row.name}`,
    "data-action": "toggle",
    checked: row.switched_on,
    disabled: row.state === "connecting",
  });
  toggle.addEventListener("change", () => actions.toggle(row, toggle.checked));

  const title = h(
    "div",
    { class: "row-title" },
    h("span", { class: "name", "data-field": "name" }, row.name),
    row.current && h("span", { class: "badge" }, "current"),
    !row.in_kubeconfig && h("span", { class: "badge muted" }, "other kubeconfig"),
  );
  const sub = h(
    "div",
    { class: "row-sub" },
    h("span", { "data-field": "server" }, row.server || "no server"),
    h("span", { class: "sep" }, "·"),
    h("span", {}, "namespace "),
    h("span", { "data-field": "namespace" }, row.namespace),
  );
  const main = h(
    "div",
    { class: "row-main" },
    h("span", { class: "dot", title: STATE_LABEL[row.state] }),
    h("div", { class: "row-text" }, title, sub),
    h(
      "span",
      { class: "state-label", "data-field": "state" },
      row.state === "connecting" ? h("span", { class: "spinner" }) : null,
      STATE_LABEL[row.state],
    ),
    h("label", { class: "switch" }, toggle, h("span", { class: "slider" })),
  );

  const el = h("div", { class: `row state-${row.state}`, "data-context": row.name }, main);
  const c = row.connection;
  if (c) {
    const url = row.url;
    const counters = counterFields(c);
    const facts = h(
      "dl",
      { class: "facts" },
      fact("ID", "id", c.id),
      fact("SOCKS", "socks", c.socks ?? "—"),
      fact("HTTP", "http", c.http ?? "—"),
      fact("DNS", "dns", c.dns ?? "—"),
      fact("Alias", "alias", c.alias),
      fact("Active", "active", counters.active),
      fact("Total", "total", counters.total),
      fact("Sent", "bytes-up", counters["bytes-up"]),
      fact("Received", "bytes-down", counters["bytes-down"]),
      fact("Up", "uptime", uptime(c.started_at, now)),
    );
    const copy = h("button", { class: "button", "data-action": "copy", disabled: !url }, icon("copy"), "Copy socks5h URL");
    copy.addEventListener("click", () => url && actions.copy(url));
    const urlText = h("span", { "data-field": "url" }, url ?? "no SOCKS listener");
    const urlLine = h("div", { class: "url-line" }, h("code", {}, urlText), copy);
    // For a browser's "automatic proxy configuration URL": cluster names through kubesocks, the rest directly.
    const pac = row.pac_url;
    const copyPac = h("button", { class: "button", "data-action": "copy-pac", disabled: !pac }, icon("copy"), "Copy PAC URL");
    copyPac.addEventListener("click", () => pac && actions.copy(pac));
    const pacText = h("span", { "data-field": "pac-url" }, pac ?? "no listener");
    const pacLine = h("div", { class: "url-line" }, h("code", {}, pacText), copyPac);
    el.append(h("div", { class: "row-detail" }, facts, urlLine, pacLine));
  }
  if (row.error) {
    // Failing: the connection's recent error, with its time; failed: why the connect did not work.
    const report = row.state === "failing" ? c?.last_error : null;
    el.append(
      h(
        "div",
        { class: "row-error", "data-field": "error", role: "alert" },
        icon("warning"),
        h("span", {}, row.error),
        report ? time(report) : null,
      ),
    );
  } else if (c?.last_error) {
    // No longer counted as failing (the app decides when), but still the last thing that went wrong.
    el.append(
      h(
        "div",
        { class: "row-error past", "data-field": "last-error" },
        icon("warning"),
        h("span", {}, `Last error: ${c.last_error.message}`),
        time(c.last_error),
      ),
    );
  }
  if (row.outdated) {
    const button = h("button", { class: "button", "data-action": "reconnect" }, "Reconnect");
    button.addEventListener("click", () => {
      button.disabled = true;
      reconnect(row);
    });
    el.append(
      h("div", { class: "row-error past", "data-field": "outdated" }, icon("warning"), h("span", {}, row.outdated), button),
    );
  }
  el.dataset.startedAt = c ? String(c.started_at) : "";
  return el;
}

// Switching off and on again: the new connection is made from the kubeconfig
// as it is now. The app pushes each step as a new view.
function reconnect(row: Row): void {
  api
    .disconnect(row.name)
    .then(() => api.connect(row.name))
    .catch((e) => toast(`${row.name}: ${reason(e)}`, "error"));
}

function time(report: ErrorReport): HTMLElement | null {
  const when = new Date(report.at * 1000);
  return Number.isNaN(when.getTime()) ? null : h("time", {}, when.toLocaleTimeString());
}

/** Keeps `container`'s children in step with `rows`, redrawing only changed rows. */
export function renderRows(container: HTMLElement, rows: Row[], actions: RowActions, now: number): void {
  const existing = new Map<string, HTMLElement>();
  for (const child of Array.from(container.children)) {
    if (child instanceof HTMLElement && child.dataset.context) existing.set(child.dataset.context, child);
  }
  let previous: Element | null = null;
  for (const row of rows) {
    const key = rowShapeKey(row);
    let el = existing.get(row.name);
    existing.delete(row.name);
    if (!el || el.dataset.key !== key) {
      const fresh = drawRow(row, actions, now);
      fresh.dataset.key = key;
      if (el) el.replaceWith(fresh);
      el = fresh;
    } else if (row.connection) {
      for (const [field, text] of Object.entries(counterFields(row.connection))) {
        const target = el.querySelector<HTMLElement>(`[data-field="${field}"]`);
        if (target && target.textContent !== text) target.textContent = text;
      }
    }
    const expectedPosition: ChildNode | null = previous ? previous.nextSibling : container.firstChild;
    if (expectedPosition !== el) container.insertBefore(el, expectedPosition);
    previous = el;
  }
  for (const stale of existing.values()) stale.remove();
}

/** Advances the uptime shown in connected rows (local clock; the counters come pushed). */
export function tickUptimes(container: HTMLElement, now: number): void {
  for (const el of Array.from(container.querySelectorAll<HTMLElement>(".row[data-started-at]"))) {
    const started = el.dataset.startedAt;
    const field = el.querySelector<HTMLElement>('[data-field="uptime"]');
    if (started && field) field.textContent = uptime(Number(started), now);
  }
}
