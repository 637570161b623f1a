"""The event stream under load: commit-to-subscriber latency at 100 and 1,000 subscribers, beside a
do-nothing grpc.aio fan-out server measured the same way in the same run; and the sustained event
rate one subscriber can follow.

Three kinds of process: the service (`portex-pay serve`), the floor (bench/fanout_floor.py: a
grpc.aio server that only writes each published message to every subscriber), and the clients
(bench/stream_client.py: 1,000 subscribers are 4 processes x 250 streams, each process on its own
loop, so the readers are not one process's bottleneck). This process sends the events at a fixed
rate: into the service's table (an INSERT, its own transaction, `occurred_at` its commit time to
within the statement), or to the floor's Publish (`occurred_at` set as it is sent). Both carry the
same message: a real `order.created` event of a real order, as the service serializes it.
Latency is a client's clock minus `occurred_at` (one machine, one clock). Rounds alternate
between the two servers so that machine noise hits both alike; the figure that matters is the
ratio of their p99s. Beside it, each server's CPU per delivery (its fan-out cost) and the CPU
share of server and clients: when the clients use about a core each, or together with the
server every core, latency measures the machine rather than the fan-out (the output says so).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc

from bench import summary
from bench.fanout_floor import PUBLISH
from bench.serving import DATA_KEY, DATA_KEYS, cpu_seconds
from bench.serving import free_port as _free_port
from bench.serving import percentile as _percentile
from bench.serving import wait_serving as _wait_serving
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.postgres.events import EventLog
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.api.grpc.convert import event_message
from portex_pay.app import application_admin
from portex_pay.domain.events import START
from portex_pay_devtools.fake_bot_api import FakeBotApi

SECONDS = 5
ROUNDS = 2
# (subscribers, client processes, events per second). A thousand subscribers get fewer events a
# second: at 10/s the four clients alone keep both cores of a 2-core machine busy, and latency is
# then queueing for CPU, not fan-out (the report says so when it happens).
LAYOUTS = ((100, 1, 10), (1000, 4, 3))
SUSTAINED_EVENTS = 20_000
OURS, FLOOR = "portex-pay", "floor"


@dataclass
class Figures:
    latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    wall: float = 0.0

    def line(self) -> str:
        values = self.latencies
        return (
            f"{len(values):7d}  p50 {statistics.median(values):6.1f}  "
            f"p99 {_percentile(values, 0.99):6.1f}  max {max(values):6.1f} ms   "
            f"server CPU {self.per_delivery:5.1f} us/delivery   "
            f"CPU: server {self.server_cpu / self.wall:4.0%}, "
            f"clients {self.client_cpu / self.wall:4.0%}"
        )

    @property
    def per_delivery(self) -> float:
        """The server's CPU microseconds per event delivered to one subscriber: its fan-out
        cost, which a busy machine changes less than it changes latency."""
        return self.server_cpu / len(self.latencies) * 1e6


async def run_stream_bench(dsn: str, log_dir: Path) -> None:
    fake = FakeBotApi()
    await fake.start()
    grpc_port, floor_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PORTEX_PAYLOAD_SECRET": "bench-" + "s" * 32,
        "PORTEX_DATA_KEY": DATA_KEY,
        "PORTEX_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "PORTEX_HTTP_ADDR": f"127.0.0.1:{_free_port()}",
        "PORTEX_TELEGRAM_API_URL": fake.base_url,
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
    floor = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-m", "bench.fanout_floor", str(floor_port)], stdout=log, stderr=log
    )
    conn = await asyncpg.connect(dsn)
    session = await new_session()
    pool = None
    try:
        await migrate(conn)
        token = f"{uuid.uuid4().int % 10**9 + 10**9}:{uuid.uuid4().hex}{uuid.uuid4().hex[:4]}"
        fake.add_bot(token)
        admin = application_admin(
            conn, BotApiClient(session, fake.base_url, 5), data_keys=DATA_KEYS
        )
        application, key = await admin.create_app(f"stream-bench-{uuid.uuid4().hex[:8]}", token)
        metadata = (("authorization", f"Bearer {key}"),)
        await _wait_serving(grpc_port)
        target = f"127.0.0.1:{grpc_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            await payment_pb2_grpc.PaymentServiceStub(channel).Pay(
                payment_pb2.PayRequest(tg_use_id=1, amount=5, label="l", title="Gem",
                                       description="A gem of the stream bench"),
                metadata=metadata,
            )  # fmt: skip
        # The event every round sends: the order's `order.created`, as the service sends it.
        pool = await create_pool(dsn, min_size=1, max_size=1)
        [seed, *_] = await EventLog(pool).read_after(START, limit=1, application_id=application.id)
        message = event_message(seed.cursor, seed)

        async def insert() -> None:
            await conn.execute(
                "INSERT INTO events (application_id, tg_payment_id, type, data, occurred_at) "
                "SELECT application_id, tg_payment_id, type, data, clock_timestamp() "
                "FROM events WHERE id = $1",
                seed.event_id,
            )

        floor_channel = grpc.aio.insecure_channel(f"127.0.0.1:{floor_port}")
        await asyncio.wait_for(floor_channel.channel_ready(), 30)
        publish_call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
        publish_call = floor_channel.unary_unary(PUBLISH)

        async def publish() -> None:
            message.occurred_at.GetCurrentTime()
            await publish_call(message.SerializeToString())

        servers = {OURS: (target, key, insert, server.pid), FLOOR: (
            f"127.0.0.1:{floor_port}", None, publish, floor.pid)}  # fmt: skip
        results: dict[tuple[int, str], Figures] = {}
        for _ in range(ROUNDS):
            for layout in LAYOUTS:
                for label, (address, api_key, send, pid) in servers.items():
                    figures = results.setdefault((layout[0], label), Figures())
                    await _round(address, api_key, layout, send, pid, figures)
        await floor_channel.close()
        rate = await _sustained(conn, target, metadata, application.id)
    finally:
        await session.close()
        for process in (server, floor):
            process.terminate()
            await asyncio.to_thread(process.wait, 30)
        log.close()
        if pool is not None:
            await pool.close()
        await conn.close()
        await fake.stop()
    _report(results, len(message.SerializeToString()), rate)


def _report(results: dict[tuple[int, str], Figures], size: int, rate: float) -> None:
    cores = os.cpu_count() or 1
    print(
        f"\nevent stream: {SECONDS} s x {ROUNDS} alternating rounds, send -> subscriber "
        f"({size}-byte event); floor = do-nothing grpc.aio fan-out"
    )
    for subscribers, processes, per_second in LAYOUTS:
        for label in (OURS, FLOOR):
            figures = results[(subscribers, label)]
            name = f"{subscribers} subs / {processes} client processes / {per_second} ev/s, {label}"
            print(f"  {name:52s} {figures.line()}")
            if figures.client_cpu / figures.wall > 0.8 * processes:
                print("    (the clients use about a core each: they are the bottleneck)")
            elif (figures.server_cpu + figures.client_cpu) / figures.wall > 0.85 * cores:
                print(
                    f"    (server and clients keep the {cores} cores busy: latency is mostly "
                    "queueing for CPU; compare the CPU per delivery)"
                )
    for subscribers, _, _ in LAYOUTS:
        ours, floor = results[(subscribers, OURS)], results[(subscribers, FLOOR)]
        ratio = _percentile(ours.latencies, 0.99) / _percentile(floor.latencies, 0.99)
        cost = ours.per_delivery / floor.per_delivery
        print(
            f"  at {subscribers} subscribers, portex-pay / floor: p99 x{ratio:.2f}, "
            f"server CPU per delivery x{cost:.2f}"
        )
        summary.add(
            "stream",
            f"{subscribers} subscribers, portex-pay / fan-out floor",
            f"p99 x{ratio:.2f} ({_percentile(ours.latencies, 0.99):.0f} vs "
            f"{_percentile(floor.latencies, 0.99):.0f} ms), CPU per delivery x{cost:.2f}",
            "p99 <= x1.2" if subscribers == 1000 else "",
        )
    print(f"sustained: one subscriber followed {rate:.0f} events/s ({SUSTAINED_EVENTS} events)")


async def _round(
    target: str,
    key: str | None,
    layout: tuple[int, int, int],
    send: Callable[[], Awaitable[None]],
    server_pid: int,
    figures: Figures,
) -> None:
    subscribers, processes, rate = layout
    total = rate * SECONDS
    env = {**os.environ, **({"BENCH_STREAM_KEY": key} if key else {})}
    command = (sys.executable, "-m", "bench.stream_client", target)
    arguments = (str(subscribers // processes), str(total))
    clients = [
        await asyncio.create_subprocess_exec(
            *command, *arguments, env=env, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(processes)
    ]
    for client in clients:
        assert client.stdout is not None
        ready = await asyncio.wait_for(client.stdout.readline(), 120)
        if ready.strip() != b"ready":
            raise RuntimeError(f"a stream client failed to subscribe to {target}")
    cpu, started = cpu_seconds(server_pid), time.perf_counter()
    for index in range(total):
        await send()
        delay = started + (index + 1) / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    for client in clients:
        output, _ = await asyncio.wait_for(client.communicate(), 120)
        report = json.loads(output)
        figures.latencies.extend(report["latencies"])
        figures.client_cpu += report["cpu"]
    figures.server_cpu += cpu_seconds(server_pid) - cpu
    figures.wall += time.perf_counter() - started


async def _sustained(
    conn: asyncpg.Connection,
    target: str,
    metadata: tuple[tuple[str, str], ...],
    application_id: uuid.UUID,
) -> float:
    channel = grpc.aio.insecure_channel(target)
    call = payment_pb2_grpc.PaymentServiceStub(channel).StreamInvoiceEvents(
        payment_pb2.StreamInvoiceEventsRequest(), metadata=metadata
    )
    await call.initial_metadata()
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
    await channel.close()
    return SUSTAINED_EVENTS / elapsed
