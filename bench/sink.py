"""A minimal, fast SMTP sink for benchmarks: accepts everything, parses nothing.

It offers PIPELINING (RFC 2920), as Postfix and the big providers' relays do; commands are
answered strictly in order, so pipelined and one-at-a-time clients both work.

aiosmtpd is the right server for tests (it checks the protocol); for a benchmark the sink must
not be the bottleneck, so this one only frames commands and message data. It runs in its own
process, prints "PORT n" when ready and "COUNT n" on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

COUNT = 0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global COUNT
    writer.write(b"220 sink ESMTP\r\n")
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                writer.write(b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                             b"250 SIZE 52428800\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                COUNT += 1
                writer.write(b"250 2.0.0 Ok: queued as %d\r\n" % COUNT)
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:
                writer.write(b"250 2.1.0 Ok\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
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
