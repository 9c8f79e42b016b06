"""A minimal, fast SMTP sink for benchmarks: accepts everything, parses nothing.

It offers PIPELINING (RFC 2920), as Postfix and the big providers' relays do; commands are
answered strictly in order, so pipelined and one-at-a-time clients both work.

aiosmtpd is the right server for tests (it checks the protocol); for a benchmark the sink must
not be the bottleneck, so this one only frames commands and message data. It runs in its own
process, prints "PORT n" when ready and "COUNT n" on SIGTERM.

    python bench/sink.py [LATENCY_MS]

LATENCY_MS (default 0) models a relay that far away: each reply leaves LATENCY_MS after the
bytes it answers arrived, so a round trip costs it once, however many pipelined commands (or a
message and the next envelope behind it) came together, and the number of connections matters
as it does against a remote relay.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sys

COUNT = 0
LATENCY = float(sys.argv[1]) / 1000 if len(sys.argv) > 1 else 0.0


class TimedReader(asyncio.StreamReader):
    """A StreamReader that knows when the bytes it hands out arrived (for LATENCY)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.arrivals: collections.deque[tuple[int, float]] = collections.deque()
        self.fed = self.used = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += len(data)
        self.arrivals.append((self.fed, asyncio.get_running_loop().time()))
        super().feed_data(data)

    def arrived(self, chunk: bytes) -> float:
        """When the last byte of `chunk`, just read, arrived."""
        self.used += len(chunk)
        while len(self.arrivals) > 1 and self.arrivals[0][0] < self.used:
            self.arrivals.popleft()
        return self.arrivals[0][1] if self.arrivals else asyncio.get_running_loop().time()


async def reply(writer: asyncio.StreamWriter, data: bytes, since: float = 0.0) -> None:
    if LATENCY:
        delay = since + LATENCY - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
    writer.write(data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global COUNT
    timed = reader if isinstance(reader, TimedReader) else None
    await reply(writer, b"220 sink ESMTP\r\n", asyncio.get_running_loop().time())
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            since = timed.arrived(line) if timed else 0.0
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                await reply(writer, b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                    b"250 SIZE 52428800\r\n", since)
            elif verb == b"DATA":
                await reply(writer, b"354 go ahead\r\n", since)
                message = await reader.readuntil(b"\r\n.\r\n")
                since = timed.arrived(message) if timed else 0.0
                COUNT += 1
                await reply(writer, b"250 2.0.0 Ok: queued as %d\r\n" % COUNT, since)
            elif verb == b"QUIT":
                await reply(writer, b"221 bye\r\n", since)
                await writer.drain()
                break
            else:
                await reply(writer, b"250 2.1.0 Ok\r\n", since)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass  # (cancelled: the sink is shutting down with a reply still waiting)
    finally:
        writer.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    if LATENCY:
        def protocol() -> asyncio.StreamReaderProtocol:
            return asyncio.StreamReaderProtocol(TimedReader(limit=2**20), handle)

        server = await loop.create_server(protocol, "127.0.0.1", 0)
    else:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=2**20)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    print(f"COUNT {COUNT}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
