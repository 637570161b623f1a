"""One client process of the stream bench: many subscribers on one loop of its own.

`python -m bench.stream_client TARGET STREAMS EVENTS` (the API key, if any, in
BENCH_STREAM_KEY) opens STREAMS StreamInvoiceEvents calls (100 per channel), prints `ready` once
every one has its headers (from then on it misses nothing), reads until each has EVENTS events
(heartbeats skipped), and prints one JSON line: each delivery's latency in ms (this machine's
clock minus the event's `occurred_at`, its commit or publish time) and the CPU seconds it used.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import grpc

from bench import uvloop_setting
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.cli import run_loop

STREAMS_PER_CHANNEL = 100


async def run(target: str, streams: int, events: int) -> None:
    key = os.environ.get("BENCH_STREAM_KEY")
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    channels = [
        grpc.aio.insecure_channel(target) for _ in range(-(-streams // STREAMS_PER_CHANNEL))
    ]
    calls: list[Any] = []
    for index in range(streams):
        stub = payment_pb2_grpc.PaymentServiceStub(channels[index % len(channels)])
        request = payment_pb2.StreamInvoiceEventsRequest()
        calls.append(stub.StreamInvoiceEvents(request, metadata=metadata))
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    print("ready", flush=True)
    latencies: list[float] = []

    async def read(call: Any) -> None:
        received = 0
        async for message in call:
            if message.heartbeat:
                continue
            sent = message.occurred_at.seconds + message.occurred_at.nanos / 1e9
            latencies.append((time.time() - sent) * 1000)
            received += 1
            if received == events:
                call.cancel()
                return

    await asyncio.gather(*(read(call) for call in calls))
    for channel in channels:
        await channel.close()
    print(json.dumps({"latencies": latencies, "cpu": time.process_time()}), flush=True)


if __name__ == "__main__":
    run_loop(run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])), uvloop=uvloop_setting())
