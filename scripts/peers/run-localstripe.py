"""Starts localstripe (PyPI 1.15.10, GPL-3.0, run as a separate process only) bound to
127.0.0.1, with fresh in-memory state, for bastion-payments' PSP interop tests.

Usage: .peers/localstripe-venv/bin/python scripts/peers/run-localstripe.py --port PORT
  PORT 0 picks a free port. Once listening, prints one line `listening 127.0.0.1:<port>` on
  stdout (the tests wait for it) and serves until killed.

Why not `localstripe --port N --from-scratch`: its CLI binds every interface (`::`) and has
no host option, and it pickles its whole state to the fixed path /tmp/localstripe.pickle
after every write (TMPDIR is not consulted), so parallel instances would share one file.
Here the aiohttp app is started on a loopback socket and the store's disk dump is a no-op,
so every process starts from scratch and keeps its state to itself.
"""

import argparse
import asyncio
import socket
import sys

from aiohttp import web

from localstripe import resources, server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    # State stays in this process: never read or write /tmp/localstripe.pickle.
    resources.Store.dump_to_disk = lambda self: None

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]

    async def run():
        runner = web.AppRunner(server.app, access_log=None)
        await runner.setup()
        site = web.SockSite(runner, sock)
        await site.start()
        print(f"listening 127.0.0.1:{port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
