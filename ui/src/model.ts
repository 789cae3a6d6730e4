// Pure formatting for the window, free of the DOM and of Tauri so it
// unit-tests. What the rows say (connected or not, failing or not and why,
// the URL to copy) is computed by the app (src-tauri/src/view.rs); the types
// come generated from the Rust ones (./generated.ts).

import type { ConnectionStatus, Row } from "./generated";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 → "1.5 KiB": binary units, one decimal below 10, none above. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return "–";
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0) return `${value} B`;
  const digits = value < 10 ? 1 : 0;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** Seconds → "45s", "3m 12s", "2h 05m", "3d 4h". */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, "0")}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h}h ${String(m % 60).padStart(2, "0")}m`;
  return `${Math.floor(h / 24)}d ${h % 24}h`;
}

/** How long a connection started at `startedAt` (s since the epoch) has run at `now` (ms since the epoch). */
export function uptime(startedAt: number, now: number): string {
  return Number.isFinite(startedAt) && startedAt > 0 ? formatDuration(now / 1000 - startedAt) : "–";
}

/** The live counters of a connection as the window shows them, by field name. */
export function counterFields(c: ConnectionStatus): Record<string, string> {
  return {
    active: String(c.active_connections),
    total: String(c.total_connections),
    "bytes-up": formatBytes(c.bytes_up),
    "bytes-down": formatBytes(c.bytes_down),
  };
}

/**
 * A key for everything a row shows except its counters: rows whose shape is
 * unchanged get their counters updated in place instead of being redrawn, so
 * a switch is never replaced under the pointer while traffic flows.
 */
export function rowShapeKey(row: Row): string {
  const c = row.connection;
  const stripped = c ? { ...c, active_connections: 0, total_connections: 0, bytes_up: 0, bytes_down: 0 } : null;
  return JSON.stringify({ ...row, connection: stripped });
}
