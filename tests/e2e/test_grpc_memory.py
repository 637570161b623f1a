"""Oversized gRPC requests cost the server no lasting memory: many streams of a 16 MiB request
on one connection, all refused, against a real server process whose RSS is read from /proc."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from tests.e2e.conftest import ServerFactory

STREAMS = 48
REQUEST_BYTES = 16 << 20


def peak_and_current_mib(pid: int) -> tuple[int, int]:
    """VmHWM (the peak resident set) and VmRSS, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmHWM", "VmRSS"):
            values[name] = int(value.split()[0]) // 1024
    return values["VmHWM"], values["VmRSS"]


async def test_oversized_requests_on_one_connection_are_refused_within_bounded_memory(
    start_server: ServerFactory,
) -> None:
    server = await start_server()
    assert server.process is not None
    before, _ = peak_and_current_mib(server.process.pid)
    oversized = b"\x0a" + b"x" * REQUEST_BYTES  # a Pay whose first field never ends
    async with grpc.aio.insecure_channel(
        server.target, options=[("grpc.max_send_message_length", 2 * REQUEST_BYTES)]
    ) as channel:
        pay: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/portex.payment.v1.PaymentService/Pay"
        )

        async def one() -> grpc.StatusCode:
            try:
                await pay(oversized, timeout=60)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(one() for _ in range(STREAMS)))
    assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    peak, now = peak_and_current_mib(server.process.pid)
    # 48 streams x 16 MiB went out; the server's buffers held at most a window of each (with
    # bandwidth-delay probing on, the peak rose by 270 MiB and RSS stayed 226 MiB higher).
    assert peak - before < 32, (before, peak, now)
    assert await server.health() is not None  # still serving
