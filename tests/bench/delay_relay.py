#!/usr/bin/env python3
"""A loopback TCP relay that delays each direction by a fixed time: puts the
API server "far away" for tests/bench/bench.py's remote modes.

    delay_relay.py --listen 127.0.0.1:0 --upstream 127.0.0.1:16443 --delay-ms 10

Every accepted connection gets its own upstream connection; each chunk read
from one side is written to the other `--delay-ms` after it was read, in
order, so a round trip through the relay costs 2 × delay on top of the
path's own (a 10 ms delay: an API server 20 ms away). Bandwidth is not
limited, only latency is added; at most `--buffer` bytes per direction wait
in the relay before it stops reading that side. TLS passes through
untouched, so a client verifies the API server's own certificate (its SAN
127.0.0.1 holds for any port on 127.0.0.1).

Prints `listening HOST:PORT` on stdout once it accepts, then runs until
SIGTERM or SIGINT. Standard library only.
"""

import argparse
import asyncio
import collections
import signal
import socket
import sys


def parse_addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


class Pipe:
    """One direction of one connection: read, hold for `delay`, write."""

    def __init__(self, reader, writer, delay, limit):
        self.reader, self.writer = reader, writer
        self.delay, self.limit = delay, limit
        self.queue = collections.deque()  # (due, bytes); None as data: EOF
        self.queued = 0
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    async def read_side(self):
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.room.wait()
                data = await self.reader.read(256 * 1024)
                self.queue.append((loop.time() + self.delay, data or None))
                self.wake.set()
                if not data:
                    return
                self.queued += len(data)
                if self.queued >= self.limit:
                    self.room.clear()
        except (ConnectionError, OSError):
            self.queue.append((loop.time(), None))
            self.wake.set()

    async def write_side(self):
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            due, data = self.queue.popleft()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                # The peer's FIN, delayed like its data.
                try:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                except (ConnectionError, OSError):
                    pass
                return
            self.writer.write(data)
            await self.writer.drain()
            self.queued -= len(data)
            if self.queued < self.limit:
                self.room.set()


async def serve(args, client_reader, client_writer):
    up_host, up_port = args.upstream
    try:
        up_reader, up_writer = await asyncio.open_connection(up_host, up_port)
    except OSError as e:
        print(f"delay_relay: upstream {up_host}:{up_port}: {e}", file=sys.stderr, flush=True)
        client_writer.close()
        return
    for w in (client_writer, up_writer):
        sock = w.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    delay = args.delay_ms / 1000
    pipes = [Pipe(client_reader, up_writer, delay, args.buffer), Pipe(up_reader, client_writer, delay, args.buffer)]
    tasks = [asyncio.create_task(t) for p in pipes for t in (p.read_side(), p.write_side())]
    try:
        # Both directions done (each side's FIN passed on), or one side broke.
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None:
                raise t.exception()
    except (ConnectionError, OSError):
        pass
    finally:
        for t in tasks:
            t.cancel()
        for w in (client_writer, up_writer):
            w.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=parse_addr, default=("127.0.0.1", 0))
    p.add_argument("--upstream", type=parse_addr, required=True)
    p.add_argument("--delay-ms", type=float, default=10.0, help="added to each direction")
    p.add_argument("--buffer", type=int, default=4 << 20, help="bytes held per direction at most")
    args = p.parse_args()
    server = await asyncio.start_server(lambda r, w: serve(args, r, w), *args.listen, backlog=1024)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"listening {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
