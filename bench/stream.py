"""The event stream under load: commit-to-subscriber latency with 100 and 1000 subscribers, and
the sustained event rate one subscriber can follow.

The service runs as its own process; this process writes events straight into the table (each
INSERT its own transaction, so `occurred_at` is its commit time to within the statement) and reads
the streams. Latency is the subscriber's clock minus `occurred_at`: both on this machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench.serving import free_port as _free_port
from bench.serving import percentile as _percentile
from bench.serving import wait_serving as _wait_serving
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import application_admin

EVENTS_PER_SECOND = 10
SECONDS = 5
SUSTAINED_EVENTS = 20_000
STREAMS_PER_CHANNEL = 100


async def run_stream_bench(dsn: str, log_dir: Path) -> None:
    grpc_port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PORTEX_PAYLOAD_SECRET": "bench-" + "s" * 32,
        "PORTEX_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "PORTEX_HTTP_ADDR": f"127.0.0.1:{_free_port()}",
        "PORTEX_TELEGRAM_API_URL": "http://127.0.0.1:9",
        "PORTEX_TELEGRAM_POLLERS": "false",
        "PORTEX_LOG_LEVEL": "warning",
        "PORTEX_LOG_FORMAT": "json",
    }
    log = (log_dir / "stream-server.log").open("wb")
    server = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-m", "portex_pay", "serve", "--workers", "1"],
        env=env,
        stdout=log,
        stderr=log,
    )
    conn = await asyncpg.connect(dsn)
    session = await new_session()
    try:
        await migrate(conn)
        admin = application_admin(conn, BotApiClient(session, "http://127.0.0.1:9", 1))
        application, key = await admin.create_app(f"stream-bench-{uuid.uuid4().hex[:8]}", None)
        metadata = (("authorization", f"Bearer {key}"),)
        await _wait_serving(grpc_port)
        target = f"127.0.0.1:{grpc_port}"
        results = {}
        for subscribers in (100, 1000):
            results[subscribers] = await _latency(
                conn, target, metadata, application.id, subscribers
            )
        rate = await _sustained(conn, target, metadata, application.id)
    finally:
        await session.close()
        server.terminate()
        await asyncio.to_thread(server.wait, 30)
        log.close()
        await conn.close()

    print(f"\nevent stream: {EVENTS_PER_SECOND} events/s for {SECONDS} s, commit -> subscriber")
    for subscribers, latencies in results.items():
        print(
            f"  {subscribers:5d} subscribers: {len(latencies)} deliveries, "
            f"p50 {statistics.median(latencies):6.1f} ms, "
            f"p99 {_percentile(latencies, 0.99):6.1f} ms"
        )
    ratio = _percentile(results[1000], 0.99) / _percentile(results[100], 0.99)
    print(f"  p99 with 1000 subscribers / with 100: x{ratio:.1f}")
    print(f"sustained: one subscriber followed {rate:.0f} events/s ({SUSTAINED_EVENTS} events)")


async def _open(
    target: str, metadata: tuple[tuple[str, str], ...], count: int
) -> tuple[list[grpc.aio.Channel], list[Any]]:
    channels = [
        grpc.aio.insecure_channel(target) for _ in range(max(1, count // STREAMS_PER_CHANNEL))
    ]
    calls = []
    for index in range(count):
        stub = payment_pb2_grpc.PaymentServiceStub(channels[index % len(channels)])
        calls.append(
            stub.StreamInvoiceEvents(payment_pb2.StreamInvoiceEventsRequest(), metadata=metadata)
        )
    await asyncio.gather(*(call.initial_metadata() for call in calls))
    return channels, calls


async def _latency(
    conn: asyncpg.Connection,
    target: str,
    metadata: tuple[tuple[str, str], ...],
    application_id: uuid.UUID,
    subscribers: int,
) -> list[float]:
    channels, calls = await _open(target, metadata, subscribers)
    total = EVENTS_PER_SECOND * SECONDS
    latencies: list[float] = []

    async def read(call: object) -> None:
        received = 0
        async for message in call:  # type: ignore[attr-defined]
            if message.heartbeat:
                continue
            latencies.append((time.time() - message.occurred_at.ToDatetime().timestamp()) * 1000)
            received += 1
            if received == total:
                return

    readers = [asyncio.create_task(read(call)) for call in calls]
    for _ in range(total):
        await conn.execute(
            "INSERT INTO events (application_id, type, data, occurred_at) "
            "VALUES ($1, 'bench.tick', '{}', clock_timestamp())",
            application_id,
        )
        await asyncio.sleep(1 / EVENTS_PER_SECOND)
    await asyncio.wait_for(asyncio.gather(*readers), 60)
    for channel in channels:
        await channel.close()
    return latencies


async def _sustained(
    conn: asyncpg.Connection,
    target: str,
    metadata: tuple[tuple[str, str], ...],
    application_id: uuid.UUID,
) -> float:
    channels, [call] = await _open(target, metadata, 1)
    received = 0
    started = time.perf_counter()

    async def write() -> None:
        for _ in range(SUSTAINED_EVENTS // 100):  # 100 events per transaction
            await conn.execute(
                "INSERT INTO events (application_id, type, data) "
                "SELECT $1, 'bench.load', '{}' FROM generate_series(1, 100)",
                application_id,
            )

    writer = asyncio.create_task(write())
    async for message in call:
        if not message.heartbeat:
            received += 1
            if received == SUSTAINED_EVENTS:
                break
    elapsed = time.perf_counter() - started
    await writer
    for channel in channels:
        await channel.close()
    return SUSTAINED_EVENTS / elapsed
