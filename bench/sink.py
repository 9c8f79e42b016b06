"""A minimal, fast SMTP sink for benchmarks: accepts everything, parses nothing.

It offers PIPELINING (RFC 2920), as Postfix and the big providers' relays do; commands are
answered strictly in order, so pipelined and one-at-a-time clients both work.

aiosmtpd is the right server for tests (it checks the protocol); for a benchmark the sink must
not be the bottleneck, so this one only frames commands and message data. It runs in its own
process, prints "PORT n" when ready and "COUNT n" on SIGTERM.

    python bench/sink.py [LATENCY_MS]

LATENCY_MS (default 0) is waited before every reply, so that the number of connections matters
as it does against a remote relay. (Every reply: a pipelined group of three replies waits three
times, where a real relay's round trip would cost once.)
"""

from __future__ import annotations

import asyncio
import signal
import sys

COUNT = 0
LATENCY = float(sys.argv[1]) / 1000 if len(sys.argv) > 1 else 0.0


async def reply(writer: asyncio.StreamWriter, data: bytes) -> None:
    if LATENCY:
        await asyncio.sleep(LATENCY)
    writer.write(data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global COUNT
    await reply(writer, b"220 sink ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                await reply(writer, b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                                    b"250 SIZE 52428800\r\n")
            elif verb == b"DATA":
                await reply(writer, b"354 go ahead\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                COUNT += 1
                await reply(writer, b"250 2.0.0 Ok: queued as %d\r\n" % COUNT)
            elif verb == b"QUIT":
                await reply(writer, b"221 bye\r\n")
                await writer.drain()
                break
            else:
                await reply(writer, b"250 2.1.0 Ok\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass  # (cancelled: the sink is shutting down with a reply still waiting)
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=2**20)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()
    print(f"COUNT {COUNT}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
