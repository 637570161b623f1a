"""The ceilings the `calls` section measures portex-pay against, each run as its own process
(`python -m bench.ceilings grpc|http PORT`) so that it has a core to itself as `serve` does:

- `grpc`: a plain grpc.aio server answering every unary call with the request's own bytes (a
  generic handler: no protobuf decoding, no interceptor, no database), on the loop `serve` runs
  on (`cli.run_loop`, uvloop unless PORTEX_UVLOOP=false);
- `http`: an aiohttp application whose one POST handler reads the body and answers a fixed small
  JSON document, on the same loop.

Each prints `ready` once it listens, then serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
from aiohttp import web

from bench import uvloop_setting
from portex_pay.cli import run_loop


def _echo(request: bytes, _context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


class _EchoHandler(grpc.GenericRpcHandler):
    """Every method is a unary echo of its raw request bytes."""

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_unary_rpc_method_handler(_echo)


async def _until_terminated() -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()


async def serve_grpc_echo(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_EchoHandler(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    try:
        await _until_terminated()
    finally:
        await server.stop(1)


async def _trivial(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"ok": True, "result": {}})


async def serve_trivial_http(port: int) -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", _trivial)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await _until_terminated()
    finally:
        await runner.cleanup()


def main(argv: list[str]) -> None:
    kind, port = argv[0], int(argv[1])
    servers = {"grpc": serve_grpc_echo, "http": serve_trivial_http}
    run_loop(servers[kind](port), uvloop=uvloop_setting())


if __name__ == "__main__":
    main(sys.argv[1:])
