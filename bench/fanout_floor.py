"""The floor of grpc.aio fan-out, for the stream bench: a server that does nothing but fan out.

`python -m bench.fanout_floor PORT` serves PaymentService's StreamInvoiceEvents (any request,
no key: each call is one subscriber with a queue) and `/bench.FanoutFloor/Publish`, whose request
bytes it puts, as they are, on every subscriber's queue; each subscriber's handler writes them
unchanged (no serializer: they are already an InvoiceEvent). No database, no filter, no cursor:
what is left is grpc.aio's own cost of writing one message to many streams, on the loop `serve`
uses (PORTEX_UVLOOP, `cli.run_loop`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from bench import uvloop_setting
from portex.payment.v1 import payment_pb2
from portex_pay.cli import run_loop

STREAM_METHOD = "StreamInvoiceEvents"
PUBLISH = "/bench.FanoutFloor/Publish"


async def serve(port: int) -> None:
    subscribers: set[asyncio.Queue[bytes]] = set()

    async def subscribe(_request: Any, context: Any) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        subscribers.add(queue)
        try:
            await context.send_initial_metadata(())
            while True:
                yield await queue.get()
        finally:
            subscribers.discard(queue)

    async def publish(raw: bytes, _context: Any) -> bytes:
        for queue in subscribers:
            queue.put_nowait(raw)
        return b""

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "portex.payment.v1.PaymentService",
                {
                    STREAM_METHOD: grpc.unary_stream_rpc_method_handler(
                        subscribe,
                        request_deserializer=payment_pb2.StreamInvoiceEventsRequest.FromString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "bench.FanoutFloor", {"Publish": grpc.unary_unary_rpc_method_handler(publish)}
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("serving", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    run_loop(serve(int(sys.argv[1])), uvloop=uvloop_setting())
