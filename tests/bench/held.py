#!/usr/bin/env python3
"""Many connections held open at once through one proxy (SOCKS5, or a plain
forwarder such as kubectl port-forward), for tests/bench/bench.py's held
workload.

    held.py --connect 127.0.0.1:1080 --socks bench.ns.svc.cluster.local:80 --count 1000

Every connection is opened through the proxy (socks5h with --socks), and its request is
started and left hanging, in one of two ways, alternating:

* streaming: `GET --path` is sent and the answer is read as it comes;
  bench.py's nginx sends that path at a trickle (`limit_rate`), so the
  download is still running, a few KiB a second, while all are held, and
  ends by itself some seconds later;
* idle: the request line and a header are sent but not the blank line that
  ends the head, so the server waits and nothing moves.

Once every connection is open (or has failed), it prints
`{"held": N, ...}` as one line on stdout and waits for a line on stdin
(bench.py samples the proxy meanwhile; `--hold` seconds if stdin is not a
pipe); then it completes them all (the idle ones send the end of their
head and read their answer, the streaming ones read on to their end) and
checks every answer (status 200, body length = Content-Length). Prints the
result as a second JSON line. Raises its own soft RLIMIT_NOFILE to the hard
limit. Standard library only.
"""

import argparse
import asyncio
import json
import resource
import statistics
import sys
import time


def parse_host_port(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


class Failed(Exception):
    pass


async def socks_connect(reader, writer, host, port):
    writer.write(b"\x05\x01\x00")
    await writer.drain()
    if await reader.readexactly(2) != b"\x05\x00":
        raise Failed("SOCKS5 method refused")
    name = host.encode()
    writer.write(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
    await writer.drain()
    reply = await reader.readexactly(4)
    if reply[1] != 0:
        raise Failed(f"SOCKS5 reply {reply[1]:#04x}")
    if reply[3] == 1:
        await reader.readexactly(6)
    elif reply[3] == 4:
        await reader.readexactly(18)
    elif reply[3] == 3:
        await reader.readexactly((await reader.readexactly(1))[0] + 2)
    else:
        raise Failed(f"SOCKS5 reply with address type {reply[3]}")


async def read_head(reader, buffered=b""):
    """The response head's Content-Length and the body bytes read with it."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = await reader.read(64 * 1024)
        if not chunk:
            raise Failed(f"connection closed after {len(data)} bytes, before a response head")
        data += chunk
        if len(data) > 64 * 1024:
            raise Failed("no end of the response head in 64 KiB")
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    if len(lines[0].split()) < 2 or lines[0].split()[1] != "200":
        raise Failed(f"answer {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value.strip()), len(body)
    raise Failed("no Content-Length in the answer")


class Conn:
    def __init__(self, i, streaming):
        self.i, self.streaming = i, streaming
        self.reader = self.writer = None
        self.error = None
        self.open_ms = None
        self.length = None
        self.body = 0
        self.reading = None  # a streaming connection's reader task
        self.ended = False  # the answer was read to its end

    def fail(self, phase, e):
        if self.error is None:
            text = str(e) or type(e).__name__
            self.error = f"{phase}: {text}"
        if self.writer:
            self.writer.close()


async def open_one(conn, args, host, request_line, gate):
    async with gate:
        started = time.monotonic()
        try:
            async def opening():
                conn.reader, conn.writer = await asyncio.open_connection(*args.connect)
                if args.socks:
                    await socks_connect(conn.reader, conn.writer, *args.socks)
                conn.open_ms = (time.monotonic() - started) * 1000
                if conn.streaming:
                    conn.writer.write(request_line + b"\r\n")
                    await conn.writer.drain()
                    conn.length, conn.body = await read_head(conn.reader)
                    conn.reading = asyncio.create_task(read_body(conn, args))
                else:
                    conn.writer.write(request_line)  # the head's end comes later
                    await conn.writer.drain()
            await asyncio.wait_for(opening(), args.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, Failed, ValueError) as e:
            if isinstance(e, asyncio.TimeoutError):
                e = f"not open within {args.timeout:g} s"
            conn.fail("opening", e)


async def read_to_end(conn):
    while True:
        chunk = await conn.reader.read(64 * 1024)
        if not chunk:
            break
        conn.body += len(chunk)
    if conn.body != conn.length:
        raise Failed(f"body of {conn.body} bytes, Content-Length {conn.length}")
    conn.ended = True


async def read_body(conn, args):
    """A streaming connection's download, read as it trickles in."""
    try:
        await read_to_end(conn)
    except (OSError, asyncio.IncompleteReadError, Failed, ValueError) as e:
        conn.fail("streaming", e)


async def complete_one(conn, args):
    if conn.error:
        return
    try:
        async def completing():
            if conn.streaming:
                await conn.reading
            else:
                conn.writer.write(b"\r\n")
                await conn.writer.drain()
                conn.length, conn.body = await read_head(conn.reader)
                await read_to_end(conn)
        await asyncio.wait_for(completing(), args.timeout)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, Failed, ValueError) as e:
        if isinstance(e, asyncio.TimeoutError):
            e = f"not complete within {args.timeout:g} s"
        conn.fail("completing", e)
    finally:
        if conn.writer:
            conn.writer.close()


def alive(conns):
    """Open, not failed, and not over yet: the idle ones whose server has not
    given up, the streaming ones whose download is still running."""
    return sum(1 for c in conns if c.error is None and c.writer is not None and not c.ended
               and not c.reader.at_eof())


def quantiles(values):
    if len(values) >= 2:
        q = statistics.quantiles(sorted(values), n=100, method="inclusive")
        return {"p50_ms": q[49], "p99_ms": q[98], "max_ms": max(values)}
    return {"p50_ms": values[0], "p99_ms": values[0], "max_ms": values[0]} if values else {}


def errors_of(conns):
    errs = [c.error for c in conns if c.error]
    kinds = {}
    for e in errs:
        kinds[e] = kinds.get(e, 0) + 1
    return {"errors": len(errs), "first_error": errs[0] if errs else None,
            "error_kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:5])}


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connect", type=parse_host_port, required=True, help="the proxy")
    p.add_argument("--socks", type=parse_host_port, help="HOST:PORT asked of the SOCKS5 proxy at --connect "
                                                         "(none: --connect forwards as it is, like kubectl)")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--path", default="/hold", help="what the streaming connections GET (served at a trickle)")
    p.add_argument("--open-concurrency", type=int, default=64, help="connections being opened at once")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds each phase of a connection may take")
    p.add_argument("--hold", type=float, default=5.0, help="seconds to hold when stdin is a terminal")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    host = args.socks[0] if args.socks else f"{args.connect[0]}:{args.connect[1]}"
    request = f"GET {args.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kubesocks-bench-held\r\n".encode()
    conns = [Conn(i, streaming=i % 2 == 0) for i in range(args.count)]
    gate = asyncio.Semaphore(args.open_concurrency)
    t0 = time.monotonic()
    await asyncio.gather(*(open_one(c, args, host, request, gate) for c in conns))
    opened_s = time.monotonic() - t0
    # Let a stream that is about to break do so before it is counted as held.
    await asyncio.sleep(0.5)
    held = alive(conns)
    opened = [c.open_ms for c in conns if c.open_ms is not None]
    first = {"held": held, "count": args.count, "open_wall_s": opened_s, "open": quantiles(opened),
             **errors_of(conns)}
    print(json.dumps(first), flush=True)
    if sys.stdin.isatty():
        await asyncio.sleep(args.hold)
    else:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    still = alive(conns)
    t1 = time.monotonic()
    await asyncio.gather(*(complete_one(c, args) for c in conns))
    result = {"held": held, "alive_after_hold": still, "count": args.count, "open_wall_s": opened_s,
              "complete_wall_s": time.monotonic() - t1, "open": quantiles(opened),
              "streaming": sum(c.streaming for c in conns), "idle": sum(not c.streaming for c in conns),
              "bytes": sum(c.body for c in conns if not c.error), **errors_of(conns)}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
