import { describe, expect, it } from "vitest";

import {
  SPARK_SECONDS,
  destination,
  filterFailures,
  filterOpen,
  programLabel,
  recentRate,
  sortOpen,
  sparkPoints,
  viaLabel,
} from "../src/activity";
import type { FailedConnection, OpenConnection, TrafficSecond } from "../src/generated";

const conn = (id: number, extra: Partial<OpenConnection> = {}): OpenConnection => ({
  id,
  program: { pid: 100 + id, name: "curl" },
  client: "127.0.0.1:50000",
  via: "socks5",
  shared_port: false,
  asked: "web.shop:80",
  reached: "service shop/web:80",
  pod: "shop/web-1:8080",
  node: null,
  protocol: "tunnel",
  bytes_up: 0,
  bytes_down: 0,
  opened_at_ms: 0,
  age_ms: 1000,
  state: "open",
  ...extra,
});

describe("the connections list", () => {
  it("names a program with its PID, or says it is unknown", () => {
    expect(programLabel({ pid: 7, name: "chromium" })).toBe("chromium (7)");
    expect(programLabel(null)).toBe("unknown");
    expect(viaLabel("http_connect", true)).toBe("HTTP CONNECT (shared port)");
    expect(destination(conn(1, { node: "node-a" }))).toBe("shop/web-1:8080 on node-a");
    expect(destination(conn(1, { pod: null }))).toBe("service shop/web:80");
  });

  it("filters on program, name, pod and state, in any case", () => {
    const list = [
      conn(1),
      conn(2, { program: { pid: 9, name: "psql" }, asked: "db.data:5432", pod: "data/db-0:5432" }),
      conn(3, { program: null, state: "half_closed" }),
    ];
    expect(filterOpen(list, "PSQL").map((c) => c.id)).toEqual([2]);
    expect(filterOpen(list, "db-0").map((c) => c.id)).toEqual([2]);
    expect(filterOpen(list, "half").map((c) => c.id)).toEqual([3]);
    expect(filterOpen(list, "unknown").map((c) => c.id)).toEqual([3]);
    expect(filterOpen(list, "  ").length).toBe(3);
  });

  it("sorts by age, bytes or program without changing the list given", () => {
    const list = [
      conn(1, { age_ms: 10, bytes_down: 5, program: { pid: 1, name: "zsh" } }),
      conn(2, { age_ms: 30, bytes_down: 1, program: { pid: 2, name: "curl" } }),
      conn(3, { age_ms: 20, bytes_up: 9, program: null }),
    ];
    expect(sortOpen(list, "age").map((c) => c.id)).toEqual([2, 3, 1]);
    expect(sortOpen(list, "bytes").map((c) => c.id)).toEqual([3, 1, 2]);
    expect(sortOpen(list, "program").map((c) => c.id)).toEqual([2, 3, 1]);
    expect(list.map((c) => c.id)).toEqual([1, 2, 3]);
  });

  it("filters failures on their reason", () => {
    const failure = (id: number, reason: string): FailedConnection => ({
      at_ms: 0,
      id,
      program: null,
      client: "127.0.0.1:1",
      via: "http",
      shared_port: false,
      asked: "x:80",
      reason,
    });
    const list = [failure(1, "no service x in namespace default"), failure(2, "pods/portforward forbidden")];
    expect(filterFailures(list, "forbidden").map((f) => f.id)).toEqual([2]);
  });
});

describe("the sparkline", () => {
  const second = (at: number, bytes: number): TrafficSecond => ({ at, bytes_up: 0, bytes_down: bytes, opened: 0 });

  it("spans the last two minutes with the busiest second at the top", () => {
    const points = sparkPoints([second(1000, 50), second(1001, 100)], 119, 21).split(" ");
    expect(points.length).toBe(SPARK_SECONDS);
    expect(points[SPARK_SECONDS - 1]).toBe("119.0,1.0");
    expect(points[SPARK_SECONDS - 2]).toBe("118.0,10.5");
    expect(points[0]).toBe("0.0,20.0");
  });

  it("is flat at the bottom without traffic, and empty without samples", () => {
    expect(sparkPoints([second(5, 0)], 119, 21).split(" ").every((p) => p.endsWith(",20.0"))).toBe(true);
    expect(sparkPoints([], 119, 21)).toBe("");
  });

  it("averages the recent rate", () => {
    expect(recentRate([second(1, 100), second(2, 300)], 5)).toBe(200);
    expect(recentRate([], 5)).toBe(0);
  });
});
