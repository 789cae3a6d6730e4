// The window's logic, free of the DOM and of Tauri so it unit-tests: the
// shapes the app sends, formatting, and the rows the window shows.

/** One context of the kubeconfig, as `kubesocks contexts -o json` prints it. */
export interface ContextInfo {
  name: string;
  cluster: string;
  server: string;
  namespace: string;
  current: boolean;
}

export interface LastError {
  message: string;
  /** Seconds since the Unix epoch. */
  at: number;
}

/** One managed connection, as the daemon reports it (`kubesocks status -o json`). */
export interface ConnectionStatus {
  id: string;
  context: string;
  server: string;
  namespace: string;
  /** Listener addresses such as `127.0.0.1:1080` or `[::1]:1080`; null when not served. */
  socks: string | null;
  http: string | null;
  socks_url: string | null;
  http_url: string | null;
  /** The process hosting it. */
  pid: number;
  /** Seconds since the Unix epoch. */
  started_at: number;
  log: string;
  kubeconfig: string;
  active_connections: number;
  total_connections: number;
  /** Bytes from clients to the cluster. */
  bytes_up: number;
  /** Bytes from the cluster to clients. */
  bytes_down: number;
  last_error: LastError | null;
}

/** A connect the app started that has not produced a connection yet, or that failed. */
export interface Attempt {
  context: string;
  /** Null while it is under way; the reason once it failed. */
  error: string | null;
}

/** What the app pushes on every change: the daemon's connections plus its own attempts. */
export interface Live {
  connections: ConnectionStatus[];
  attempts: Attempt[];
}

export interface Settings {
  /** First SOCKS port to try; the next free one is taken when it is busy. */
  socks_port: number;
  /** Serve an HTTP proxy too, from this port on; null for SOCKS only. */
  http_port: number | null;
  cluster_domain: string;
  start_at_login: boolean;
}

/** The whole picture the window starts from. */
export interface Snapshot {
  contexts: ContextInfo[];
  /** Why the kubeconfig could not be read, if it could not. */
  kubeconfig_error: string | null;
  /** The kubeconfig file(s) the contexts come from, for the header. */
  kubeconfig: string[];
  live: Live;
  settings: Settings;
  log_dir: string;
  version: string;
}

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

/** The port of a listener address (`127.0.0.1:1080`, `[::1]:1080`). */
export function portOf(addr: string): number | null {
  const match = /:(\d{1,5})$/.exec(addr);
  if (!match) return null;
  const port = Number(match[1]);
  return port > 0 && port < 65536 ? port : null;
}

/**
 * The URL to give clients. `socks5h` makes the client send names, not
 * addresses: kubesocks resolves cluster names itself. A wildcard listener is
 * reached through loopback.
 */
export function socksUrl(addr: string): string {
  const port = portOf(addr);
  let host = addr.slice(0, addr.lastIndexOf(":"));
  if (host === "0.0.0.0") host = "127.0.0.1";
  if (host === "[::]") host = "[::1]";
  if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
  return `socks5h://${host}:${port ?? 1080}`;
}

/** The URL of a connection: the daemon's own when it gives one. */
export function connectionUrl(c: ConnectionStatus): string | null {
  if (c.socks_url) return c.socks_url;
  return c.socks ? socksUrl(c.socks) : null;
}

export type RowState = "off" | "connecting" | "on" | "failing" | "failed";

/** One line of the window: a context and, when connected, its connection. */
export interface Row {
  name: string;
  server: string;
  namespace: string;
  current: boolean;
  /** False for a connection whose context is not in this kubeconfig (started elsewhere). */
  inKubeconfig: boolean;
  state: RowState;
  connection: ConnectionStatus | null;
  /** The error to show: the connection's last error, or why connecting failed. */
  error: string | null;
}

/**
 * The rows for the kubeconfig's contexts, in its order, then any connection
 * whose context the kubeconfig does not have (started from a terminal with
 * another kubeconfig), so nothing running is hidden.
 */
export function buildRows(contexts: ContextInfo[], live: Live): Row[] {
  const byContext = new Map<string, ConnectionStatus>();
  for (const c of live.connections) {
    if (!byContext.has(c.context)) byContext.set(c.context, c);
  }
  const attempts = new Map(live.attempts.map((a) => [a.context, a]));
  const row = (name: string, server: string, namespace: string, current: boolean, inKubeconfig: boolean): Row => {
    const connection = byContext.get(name) ?? null;
    const attempt = attempts.get(name);
    let state: RowState = "off";
    let error: string | null = null;
    if (connection) {
      state = connection.last_error ? "failing" : "on";
      error = connection.last_error?.message ?? null;
    } else if (attempt) {
      state = attempt.error === null ? "connecting" : "failed";
      error = attempt.error;
    }
    return { name, server, namespace, current, inKubeconfig, state, connection, error };
  };
  const rows = contexts.map((c) => row(c.name, c.server, c.namespace, c.current, true));
  const known = new Set(contexts.map((c) => c.name));
  for (const c of live.connections) {
    if (!known.has(c.context)) {
      known.add(c.context);
      rows.push(row(c.context, c.server, c.namespace, false, false));
    }
  }
  return rows;
}

/** Whether a row's switch shows "on": connected, connecting, or connected with errors. */
export function switchedOn(state: RowState): boolean {
  return state === "on" || state === "connecting" || state === "failing";
}

export interface Summary {
  connected: number;
  failing: number;
}

export function summarize(rows: Row[]): Summary {
  return {
    connected: rows.filter((r) => r.connection !== null).length,
    failing: rows.filter((r) => r.state === "failing" || r.state === "failed").length,
  };
}

/** What changed between two pushes of the connection list. */
export interface ConnectionDiff {
  added: ConnectionStatus[];
  removed: ConnectionStatus[];
  /** Connections present in both whose counters, listeners or error changed. */
  changed: ConnectionStatus[];
  /** Connections whose last error is new (appeared or changed message or time). */
  newErrors: ConnectionStatus[];
}

export function diffConnections(before: ConnectionStatus[], after: ConnectionStatus[]): ConnectionDiff {
  const old = new Map(before.map((c) => [c.id, c]));
  const now = new Set(after.map((c) => c.id));
  const diff: ConnectionDiff = { added: [], removed: [], changed: [], newErrors: [] };
  for (const c of after) {
    const prev = old.get(c.id);
    if (!prev) {
      diff.added.push(c);
      if (c.last_error) diff.newErrors.push(c);
      continue;
    }
    if (JSON.stringify(prev) !== JSON.stringify(c)) diff.changed.push(c);
    const e1 = prev.last_error;
    const e2 = c.last_error;
    if (e2 && (!e1 || e1.message !== e2.message || e1.at !== e2.at)) diff.newErrors.push(c);
  }
  for (const c of before) {
    if (!now.has(c.id)) diff.removed.push(c);
  }
  return diff;
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

/** The one-line summary under the window title. */
export function headline(rows: Row[]): string {
  const { connected, failing } = summarize(rows);
  if (rows.length === 0) return "No kube contexts";
  if (connected === 0) return failing ? "Not connected · a connect failed" : "Not connected";
  const base = connected === 1 ? "1 context connected" : `${connected} contexts connected`;
  return failing ? `${base} · ${failing} with errors` : base;
}
