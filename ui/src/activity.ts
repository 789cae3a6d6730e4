// Pure helpers for the Connections view and the rows' sparklines, free of
// the DOM and of Tauri so they unit-test: how connections are labelled,
// filtered and sorted, and the sparkline's points. The data comes from the
// engine (ActivitySnapshot), pushed by the app as `activity` events.

import type { ConnState, FailedConnection, OpenConnection, Program, TrafficSecond, Via } from "./generated";

/** How the list can be sorted. */
export type SortKey = "age" | "bytes" | "program";

const STATE: Record<ConnState, string> = {
  resolving: "resolving",
  opening: "opening",
  open: "open",
  half_closed: "half-closed",
  closing: "closing",
};

const VIA: Record<Via, string> = {
  socks5: "SOCKS5",
  http_connect: "HTTP CONNECT",
  http: "HTTP",
};

export function stateLabel(state: ConnState): string {
  return STATE[state];
}

export function viaLabel(via: Via, sharedPort: boolean): string {
  return sharedPort ? `${VIA[via]} (shared port)` : VIA[via];
}

/** "curl (4242)", or "unknown" when the program could not be found. */
export function programLabel(program: Program | null): string {
  return program ? `${program.name} (${program.pid})` : "unknown";
}

/** Where a connection went: its pod port (and node) once open, else what it resolved to, else nothing yet. */
export function destination(c: OpenConnection): string {
  if (c.pod) return c.node ? `${c.pod} on ${c.node}` : c.pod;
  return c.reached ?? "…";
}

/** Connections whose program, name, destination or state contain `text` (any case). */
export function filterOpen(list: OpenConnection[], text: string): OpenConnection[] {
  const needle = text.trim().toLowerCase();
  if (!needle) return list;
  return list.filter((c) =>
    [programLabel(c.program), c.asked, c.reached ?? "", c.pod ?? "", stateLabel(c.state), String(c.id)].some((field) =>
      field.toLowerCase().includes(needle),
    ),
  );
}

/** Failures whose program, name or reason contain `text` (any case). */
export function filterFailures(list: FailedConnection[], text: string): FailedConnection[] {
  const needle = text.trim().toLowerCase();
  if (!needle) return list;
  return list.filter((f) =>
    [programLabel(f.program), f.asked, f.reason].some((field) => field.toLowerCase().includes(needle)),
  );
}

/** Sorted copy: oldest first by age, most bytes first, or by program name (then newest first). */
export function sortOpen(list: OpenConnection[], key: SortKey): OpenConnection[] {
  const sorted = [...list];
  const byNewest = (a: OpenConnection, b: OpenConnection) => b.id - a.id;
  switch (key) {
    case "age":
      return sorted.sort((a, b) => b.age_ms - a.age_ms || byNewest(a, b));
    case "bytes":
      return sorted.sort((a, b) => b.bytes_up + b.bytes_down - (a.bytes_up + a.bytes_down) || byNewest(a, b));
    case "program":
      return sorted.sort(
        (a, b) => programLabel(a.program).localeCompare(programLabel(b.program)) || byNewest(a, b),
      );
  }
}

/** How many seconds a sparkline spans. */
export const SPARK_SECONDS = 120;

/**
 * The points of a sparkline of bytes per second (both ways) over the last
 * SPARK_SECONDS seconds ending at the newest sample, for an SVG polyline of
 * `width` × `height`: the busiest second touches the top, seconds without a
 * sample are 0. Empty when there is no sample.
 */
export function sparkPoints(traffic: TrafficSecond[], width: number, height: number): string {
  if (traffic.length === 0) return "";
  const end = traffic[traffic.length - 1].at;
  const start = end - SPARK_SECONDS + 1;
  const values = new Array<number>(SPARK_SECONDS).fill(0);
  for (const s of traffic) {
    if (s.at >= start) values[s.at - start] = s.bytes_up + s.bytes_down;
  }
  const max = Math.max(...values, 1);
  const step = width / (SPARK_SECONDS - 1);
  return values
    .map((v, i) => `${(i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`)
    .join(" ");
}

/** The bytes per second over the last `seconds` seconds of `traffic`, both ways. */
export function recentRate(traffic: TrafficSecond[], seconds: number): number {
  const recent = traffic.slice(-seconds);
  if (recent.length === 0) return 0;
  return recent.reduce((sum, s) => sum + s.bytes_up + s.bytes_down, 0) / recent.length;
}
