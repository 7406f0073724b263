#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A TCP forwarder that holds every piece of data for --delay seconds in
each direction: a local server as if it were a round trip of 2 x delay
away (tools/bench reads SMB through it).

    tcpdelay.py --target 127.0.0.1:PORT --delay 0.002

Prints "PORT <port>" (flushed) and serves on 127.0.0.1 until SIGTERM.
At most QUEUE_MAX pieces wait in each direction (then the reading side
waits too, as a full link would). Standard library only.
"""

import argparse
import asyncio
import signal
import sys

QUEUE_MAX = 256
PIECE = 1 << 20


async def pump(reader, writer, delay):
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue(QUEUE_MAX)

    async def send():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(PIECE)
            if not data:
                break
            await queue.put((loop.time() + delay, data))
    except ConnectionError:
        pass
    finally:
        await queue.put((0, None))
        try:
            await sender
        except ConnectionError:
            pass
        writer.close()


async def serve(target, delay):
    host, _, port = target.rpartition(":")

    async def client(c_reader, c_writer):
        try:
            s_reader, s_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(pump(c_reader, s_writer, delay),
                             pump(s_reader, c_writer, delay))

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="host:port")
    ap.add_argument("--delay", type=float, default=0.002,
                    help="seconds each way (0.002)")
    args = ap.parse_args()
    asyncio.run(serve(args.target, args.delay))
    return 0


if __name__ == "__main__":
    sys.exit(main())
