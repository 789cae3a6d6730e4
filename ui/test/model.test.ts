import { describe, expect, it } from "vitest";

import {
  buildRows,
  connectionUrl,
  counterFields,
  diffConnections,
  formatBytes,
  formatDuration,
  headline,
  portOf,
  rowShapeKey,
  socksUrl,
  summarize,
  switchedOn,
  uptime,
  type ConnectionStatus,
  type ContextInfo,
} from "../src/model";

const ctx = (name: string, extra: Partial<ContextInfo> = {}): ContextInfo => ({
  name,
  cluster: `${name}-cluster`,
  server: `https://${name}.example:6443`,
  namespace: "default",
  current: false,
  ...extra,
});

const START = Date.parse("2026-11-01T10:00:00Z") / 1000;

const conn = (id: string, context: string, extra: Partial<ConnectionStatus> = {}): ConnectionStatus => ({
  id,
  context,
  server: `https://${context}.example:6443`,
  namespace: "default",
  socks: "127.0.0.1:1080",
  http: null,
  socks_url: null,
  pid: 42,
  http_url: null,
  started_at: START,
  log: `/state/logs/${id}.log`,
  kubeconfig: `/state/kubeconfig/${id}.yaml`,
  active_connections: 0,
  total_connections: 0,
  bytes_up: 0,
  bytes_down: 0,
  last_error: null,
  ...extra,
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

describe("socks5h URLs", () => {
  it("takes the port of IPv4 and IPv6 listener addresses", () => {
    expect(portOf("127.0.0.1:1080")).toBe(1080);
    expect(portOf("[::1]:1081")).toBe(1081);
    expect(portOf("127.0.0.1")).toBeNull();
    expect(portOf("127.0.0.1:70000")).toBeNull();
  });
  it("builds socks5h URLs, reaching wildcard listeners through loopback", () => {
    expect(socksUrl("127.0.0.1:1080")).toBe("socks5h://127.0.0.1:1080");
    expect(socksUrl("[::1]:1081")).toBe("socks5h://[::1]:1081");
    expect(socksUrl("0.0.0.0:1082")).toBe("socks5h://127.0.0.1:1082");
    expect(socksUrl("[::]:1083")).toBe("socks5h://[::1]:1083");
  });
  it("prefers the daemon's URL and has none without a SOCKS listener", () => {
    expect(connectionUrl(conn("a", "x", { socks_url: "socks5h://u@127.0.0.1:9" }))).toBe("socks5h://u@127.0.0.1:9");
    expect(connectionUrl(conn("a", "x", { socks: "127.0.0.1:1090" }))).toBe("socks5h://127.0.0.1:1090");
    expect(connectionUrl(conn("a", "x", { socks: null }))).toBeNull();
  });
});

describe("rows from contexts and the live status", () => {
  const contexts = [ctx("dev", { current: true }), ctx("prod"), ctx("staging")];

  it("lists every context in kubeconfig order, off when nothing runs", () => {
    const rows = buildRows(contexts, { connections: [], attempts: [] });
    expect(rows.map((r) => [r.name, r.state, r.current])).toEqual([
      ["dev", "off", true],
      ["prod", "off", false],
      ["staging", "off", false],
    ]);
    expect(headline(rows)).toBe("Not connected");
  });

  it("marks connected, connecting, failing and failed contexts", () => {
    const live = {
      connections: [
        conn("c1", "prod"),
        conn("c2", "staging", { last_error: { message: "pods/portforward is forbidden", at: START + 60 } }),
      ],
      attempts: [
        { context: "dev", error: null },
        { context: "prod", error: null },
      ],
    };
    const rows = buildRows(contexts, live);
    expect(rows.map((r) => r.state)).toEqual(["connecting", "on", "failing"]);
    expect(rows[1].connection?.id).toBe("c1");
    expect(rows[2].error).toBe("pods/portforward is forbidden");
    expect(rows.map((r) => switchedOn(r.state))).toEqual([true, true, true]);

    const failed = buildRows(contexts, { connections: [], attempts: [{ context: "dev", error: "unreachable" }] });
    expect(failed[0].state).toBe("failed");
    expect(failed[0].error).toBe("unreachable");
    expect(switchedOn(failed[0].state)).toBe(false);
  });

  it("adds connections of contexts the kubeconfig lacks, once", () => {
    const live = { connections: [conn("c9", "elsewhere"), conn("c10", "elsewhere")], attempts: [] };
    const rows = buildRows(contexts, live);
    expect(rows).toHaveLength(4);
    expect(rows[3]).toMatchObject({ name: "elsewhere", inKubeconfig: false, state: "on" });
    expect(rows[3].connection?.id).toBe("c9");
  });

  it("summarises for the headline", () => {
    const live = {
      connections: [conn("c1", "prod"), conn("c2", "dev", { last_error: { message: "x", at: START } })],
      attempts: [{ context: "staging", error: "refused" }],
    };
    const rows = buildRows(contexts, live);
    expect(summarize(rows)).toEqual({ connected: 2, failing: 2 });
    expect(headline(rows)).toBe("2 contexts connected · 2 with errors");
    expect(headline(buildRows(contexts, { connections: [conn("c1", "prod")], attempts: [] }))).toBe(
      "1 context connected",
    );
    expect(headline([])).toBe("No kube contexts");
  });

  it("keeps a row's shape when only its counters move, and formats those counters", () => {
    const quiet = buildRows(contexts, { connections: [conn("c1", "prod")], attempts: [] })[1];
    const busy = buildRows(contexts, {
      connections: [conn("c1", "prod", { active_connections: 2, total_connections: 9, bytes_up: 300, bytes_down: 4096 })],
      attempts: [],
    })[1];
    expect(rowShapeKey(busy)).toBe(rowShapeKey(quiet));
    expect(counterFields(busy.connection!)).toEqual({
      active: "2",
      total: "9",
      "bytes-up": "300 B",
      "bytes-down": "4.0 KiB",
    });
    const moved = buildRows(contexts, {
      connections: [conn("c1", "prod", { socks: "127.0.0.1:1081" })],
      attempts: [],
    })[1];
    expect(rowShapeKey(moved)).not.toBe(rowShapeKey(quiet));
  });
});

describe("diffConnections", () => {
  it("reports added, removed and changed connections", () => {
    const a = conn("a", "dev");
    const b = conn("b", "prod");
    const b2 = { ...b, bytes_down: 10 };
    const c = conn("c", "staging");
    const diff = diffConnections([a, b], [b2, c]);
    expect(diff.added.map((x) => x.id)).toEqual(["c"]);
    expect(diff.removed.map((x) => x.id)).toEqual(["a"]);
    expect(diff.changed.map((x) => x.id)).toEqual(["b"]);
    expect(diff.newErrors).toEqual([]);
  });

  it("reports an error once, again only when it is a new one", () => {
    const err = { message: "kubelet refused", at: START + 5 };
    const before = conn("a", "dev");
    const failing = conn("a", "dev", { last_error: err, bytes_up: 5 });
    expect(diffConnections([before], [failing]).newErrors.map((x) => x.id)).toEqual(["a"]);
    expect(diffConnections([failing], [{ ...failing, bytes_up: 99 }]).newErrors).toEqual([]);
    const again = { ...failing, last_error: { ...err, at: START + 9 } };
    expect(diffConnections([failing], [again]).newErrors.map((x) => x.id)).toEqual(["a"]);
    expect(diffConnections([], [failing]).newErrors.map((x) => x.id)).toEqual(["a"]);
  });
});
