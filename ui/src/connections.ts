// The Connections view of one context: its open client connections (which
// program, what it asked for, the pod it reached, bytes, age, state; each
// with a Close button), its recent failures with a count per reason, a
// filter and a sort. Also the sparkline and the "Connections" button in
// each connected context's row. Both redraw from the `activity` pushes.

import * as api from "./generated";
import { byId, h } from "./dom";
import { reason, toast } from "./feedback";
import type { ConnectionActivity, FailedConnection, OpenConnection } from "./generated";
import { formatBytes, formatDuration } from "./model";
import {
  type SortKey,
  destination,
  filterFailures,
  filterOpen,
  programLabel,
  recentRate,
  sortOpen,
  sparkPoints,
  stateLabel,
  viaLabel,
} from "./activity";

const SVG = "http://www.w3.org/2000/svg";
const SPARK_WIDTH = 120;
const SPARK_HEIGHT = 22;

type Tab = "open" | "failures";

/** The view's state: which context it shows, and how. */
interface Shown {
  context: string;
  tab: Tab;
}

let activity: ConnectionActivity[] = [];
let shown: Shown | null = null;
/** Called when the view opens or closes, so the window can hide the others. */
let onVisible: (visible: boolean) => void = () => {};

/** Wires the view's controls; `visible` hears when it opens and closes. */
export function connectionsView(visible: (visible: boolean) => void): void {
  onVisible = visible;
  byId("close-connections").addEventListener("click", () => close());
  for (const tab of Array.from(document.querySelectorAll<HTMLButtonElement>("#connections-view [data-tab]"))) {
    tab.addEventListener("click", () => {
      if (shown) shown.tab = tab.dataset.tab as Tab;
      draw();
    });
  }
  byId("connections-filter").addEventListener("input", () => draw());
  byId("connections-sort").addEventListener("change", () => draw());
}

/** Takes the latest activity: redraws the view (if open) and the rows' sparklines. */
export function setActivity(latest: ConnectionActivity[], rows: HTMLElement): void {
  activity = latest;
  decorateRows(rows);
  draw();
}

/** Opens the view for `context`. */
export function open(context: string, tab: Tab = "open"): void {
  shown = { context, tab };
  byId<HTMLInputElement>("connections-filter").value = "";
  onVisible(true);
  draw();
}

function close(): void {
  shown = null;
  onVisible(false);
}

function ofContext(context: string): ConnectionActivity | undefined {
  return activity.find((a) => a.context === context);
}

/** Puts a sparkline and a Connections button in each connected row (again after a row is redrawn). */
export function decorateRows(rows: HTMLElement): void {
  for (const row of Array.from(rows.querySelectorAll<HTMLElement>(".row[data-context]"))) {
    const detail = row.querySelector<HTMLElement>(".row-detail");
    const context = row.dataset.context ?? "";
    const a = ofContext(context);
    let line = row.querySelector<HTMLElement>(".activity-line");
    if (!detail || !a) {
      line?.remove();
      continue;
    }
    if (!line) {
      line = drawActivityLine(context);
      detail.append(line);
    }
    const rate = recentRate(a.traffic, 5);
    line.querySelector("polyline")?.setAttribute("points", sparkPoints(a.traffic, SPARK_WIDTH, SPARK_HEIGHT));
    setText(line, "rate", `${formatBytes(Math.round(rate))}/s`);
    setText(line, "open-count", `${a.open_count} open`);
    setText(line, "failure-count", a.failures.length > 0 ? `${a.failures.length} failed` : "");
  }
}

function drawActivityLine(context: string): HTMLElement {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "sparkline");
  svg.setAttribute("viewBox", `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
  svg.setAttribute("width", String(SPARK_WIDTH));
  svg.setAttribute("height", String(SPARK_HEIGHT));
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Traffic over the last two minutes");
  svg.append(document.createElementNS(SVG, "polyline"));
  const button = h("button", { class: "button", "data-action": "connections" }, "Connections");
  button.addEventListener("click", () => open(context));
  const failures = h("a", { href: "#", class: "failure-count", "data-field": "failure-count" });
  failures.addEventListener("click", (event) => {
    event.preventDefault();
    open(context, "failures");
  });
  return h(
    "div",
    { class: "activity-line" },
    svg,
    h("span", { class: "rate", "data-field": "rate" }),
    h("span", { class: "open-count", "data-field": "open-count" }),
    failures,
    button,
  );
}

function setText(parent: HTMLElement, field: string, text: string): void {
  const el = parent.querySelector<HTMLElement>(`[data-field="${field}"]`);
  if (el && el.textContent !== text) el.textContent = text;
}

/** Redraws the open view from the latest activity. */
function draw(): void {
  if (!shown) return;
  const a = ofContext(shown.context);
  byId("connections-title").textContent = `Connections of ${shown.context}`;
  for (const tab of Array.from(document.querySelectorAll<HTMLElement>("#connections-view [data-tab]"))) {
    tab.classList.toggle("selected", tab.dataset.tab === shown.tab);
    tab.setAttribute("aria-selected", String(tab.dataset.tab === shown.tab));
  }
  setText(byId("connections-view"), "tab-open-count", a ? String(a.open_count) : "0");
  setText(byId("connections-view"), "tab-failure-count", a ? String(a.failures.length) : "0");
  byId("open-panel").hidden = shown.tab !== "open";
  byId("failures-panel").hidden = shown.tab !== "failures";
  byId("connections-sort").hidden = shown.tab !== "open";
  const filter = byId<HTMLInputElement>("connections-filter").value;
  if (shown.tab === "open") {
    const sort = byId<HTMLSelectElement>("connections-sort").value as SortKey;
    const list = a ? sortOpen(filterOpen(a.open, filter), sort) : [];
    drawOpen(a, list);
  } else {
    drawFailures(a, a ? filterFailures(a.failures, filter) : []);
  }
}

function drawOpen(a: ConnectionActivity | undefined, list: OpenConnection[]): void {
  const body = byId("open-connections");
  const empty = byId("open-empty");
  empty.hidden = list.length > 0;
  empty.textContent = !a
    ? "This context is not connected."
    : a.open_count === 0
      ? "No client connection is open. Connections show here while they last."
      : "No open connection matches the filter.";
  // Rows are kept by connection ID and updated in place, so a Close button
  // is never replaced under the pointer while figures change.
  const existing = new Map<string, HTMLElement>();
  for (const tr of Array.from(body.children) as HTMLElement[]) existing.set(tr.dataset.conn ?? "", tr);
  let previous: Element | null = null;
  for (const c of list) {
    const key = String(c.id);
    let tr = existing.get(key);
    existing.delete(key);
    if (!tr) tr = drawOpenRow(a?.id ?? "", c);
    setText(tr, "program", programLabel(c.program));
    setText(tr, "asked", c.asked);
    setText(tr, "destination", destination(c));
    setText(tr, "via", viaLabel(c.via, c.shared_port) + (c.protocol ? ` · ${c.protocol}` : ""));
    setText(tr, "state", stateLabel(c.state));
    setText(tr, "up", formatBytes(c.bytes_up));
    setText(tr, "down", formatBytes(c.bytes_down));
    setText(tr, "age", formatDuration(c.age_ms / 1000));
    const expected: ChildNode | null = previous ? previous.nextSibling : body.firstChild;
    if (expected !== tr) body.insertBefore(tr, expected);
    previous = tr;
  }
  for (const stale of existing.values()) stale.remove();
  const unlisted = a ? a.open_count - a.open.length : 0;
  byId("open-unlisted").hidden = unlisted <= 0;
  byId("open-unlisted").textContent = `${unlisted} more open; the newest 500 are listed.`;
}

function drawOpenRow(id: string, c: OpenConnection): HTMLElement {
  const cell = (field: string, cls = "") => h("td", { class: cls }, h("span", { "data-field": field }));
  const close = h("button", { class: "button small", "data-action": "close", title: "Reset both sides" }, "Close");
  close.addEventListener("click", () => {
    close.disabled = true;
    api
      .closeClient(id, c.id)
      .then(() => toast(`Closed connection ${c.id} (${c.asked})`))
      .catch((e) => {
        close.disabled = false;
        toast(`Cannot close connection ${c.id}: ${reason(e)}`, "error");
      });
  });
  return h(
    "tr",
    { "data-conn": String(c.id) },
    cell("program", "program"),
    h(
      "td",
      { class: "target" },
      h("div", {}, h("span", { "data-field": "asked" })),
      h("div", { class: "reached" }, h("span", { class: "arrow" }, "→ "), h("span", { "data-field": "destination" })),
    ),
    cell("via", "muted"),
    cell("state"),
    cell("up", "num"),
    cell("down", "num"),
    cell("age", "num"),
    h("td", {}, close),
  );
}

function drawFailures(a: ConnectionActivity | undefined, list: FailedConnection[]): void {
  const reasons = byId("failure-reasons");
  reasons.replaceChildren(
    ...(a?.reasons ?? []).map((r) =>
      h("li", {}, h("span", { class: "count" }, `${r.count}×`), h("span", { "data-field": "reason" }, r.reason)),
    ),
  );
  const body = byId("failed-connections");
  body.replaceChildren(
    ...list.map((f) =>
      h(
        "tr",
        { "data-conn": String(f.id) },
        h("td", { class: "num" }, new Date(f.at_ms).toLocaleTimeString()),
        h("td", { class: "program" }, h("span", { "data-field": "program" }, programLabel(f.program))),
        h("td", { class: "target" }, h("span", { "data-field": "asked" }, f.asked)),
        h("td", { class: "reason" }, h("span", { "data-field": "reason" }, f.reason)),
      ),
    ),
  );
  const empty = byId("failures-empty");
  empty.hidden = list.length > 0;
  empty.textContent = a && a.failures.length > 0 ? "No failure matches the filter." : "No connection has failed.";
}
