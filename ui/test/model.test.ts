import { describe, expect, it } from "vitest";

import type { ConnectionStatus, Row } from "../src/generated";
import { counterFields, formatBytes, formatDuration, rowShapeKey, uptime } from "../src/model";

// Which rows there are and what state each is in is the app's to compute
// (src-tauri/src/view.rs, tested there); here only how the window formats them.

const START = Date.parse("2026-11-01T10:00:00Z") / 1000;

const conn = (extra: Partial<ConnectionStatus> = {}): ConnectionStatus => ({
  id: "c1",
  context: "prod",
  server: "https://prod.example:6443",
  namespace: "default",
  kubeconfig: "/state/kubeconfig/c1.yaml",
  source_kubeconfigs: [],
  socks: "127.0.0.1:1081",
  http: null,
  dns: null,
  socks_url: "socks5h://127.0.0.1:1081",
  http_url: null,
  pac_url: "http://127.0.0.1:1081/proxy.pac",
  cluster_domain: "example.internal",
  passthrough: false,
  alias: "prod",
  pid: 42,
  log: "/state/logs/c1.log",
  started_at: START,
  active_connections: 0,
  total_connections: 0,
  bytes_up: 0,
  bytes_down: 0,
  last_error: null,
  portforward_protocol: null,
  health: { state: "connected" },
  ...extra,
});

const row = (connection: ConnectionStatus): Row => ({
  name: "prod",
  server: connection.server,
  namespace: connection.namespace,
  current: false,
  in_kubeconfig: true,
  state: "on",
  switched_on: true,
  connection,
  error: null,
  outdated: null,
  url: connection.socks_url,
  pac_url: connection.pac_url,
  default_alias: "prod",
});

describe("formatBytes", () => {
  it("keeps bytes whole and switches to binary units at 1024", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1024)).toBe("1.0 KiB");
    expect(formatBytes(1536)).toBe("1.5 KiB");
  });
  it("drops the decimal from 10 up and climbs to the largest unit", () => {
    expect(formatBytes(10 * 1024)).toBe("10 KiB");
    expect(formatBytes(5 * 1024 ** 2 + 300 * 1024)).toBe("5.3 MiB");
    expect(formatBytes(3 * 1024 ** 3)).toBe("3.0 GiB");
    expect(formatBytes(2048 * 1024 ** 4)).toBe("2048 TiB");
  });
  it("shows a dash for nonsense", () => {
    expect(formatBytes(-1)).toBe("–");
    expect(formatBytes(Number.NaN)).toBe("–");
  });
});

describe("durations", () => {
  it("formats seconds, minutes, hours and days", () => {
    expect(formatDuration(0)).toBe("0s");
    expect(formatDuration(59.9)).toBe("59s");
    expect(formatDuration(192)).toBe("3m 12s");
    expect(formatDuration(2 * 3600 + 5 * 60 + 7)).toBe("2h 05m");
    expect(formatDuration(3 * 86400 + 4 * 3600)).toBe("3d 4h");
  });
  it("counts uptime from a Unix start time and never goes negative", () => {
    expect(uptime(START, START * 1000 + 75_000)).toBe("1m 15s");
    expect(uptime(START, START * 1000 - 5_000)).toBe("0s");
    expect(uptime(Number.NaN, 0)).toBe("–");
  });
});

describe("rows as drawn", () => {
  it("keeps a row's shape when only its counters move, and formats those counters", () => {
    const quiet = row(conn());
    const busy = row(conn({ active_connections: 2, total_connections: 9, bytes_up: 300, bytes_down: 4096 }));
    expect(rowShapeKey(busy)).toBe(rowShapeKey(quiet));
    expect(counterFields(busy.connection!)).toEqual({
      active: "2",
      total: "9",
      "bytes-up": "300 B",
      "bytes-down": "4.0 KiB",
    });
    const moved = row(conn({ socks: "127.0.0.1:1082", socks_url: "socks5h://127.0.0.1:1082" }));
    expect(rowShapeKey(moved)).not.toBe(rowShapeKey(quiet));
    const failing = { ...quiet, state: "failing" as const, error: "refused" };
    expect(rowShapeKey(failing)).not.toBe(rowShapeKey(quiet));
    const outdated = { ...quiet, outdated: "The kubeconfig entry changed since it was connected" };
    expect(rowShapeKey(outdated)).not.toBe(rowShapeKey(quiet));
  });
});
