"""Each hot call beside its framework's ceiling, driven by a C load generator (`python -m bench
calls`), as issue 20 measures them: h2load (bench/h2load.py), 8 connections x 16 streams for gRPC,
against one `portex-pay serve` (webhook mode, pollers off, the default log level `info`, as a user
runs it) and, in the same run with the same client and the same request bytes:

- a plain grpc.aio echo server (bench/ceilings.py) for QueryOrder, ResumePayment and Pay;
- a trivial aiohttp handler for the edge's getTgPayment and createTgPayment (HTTP/1.1, initData
  verified on every call).

Every request of Pay is a new order: PayRequest without `request_id` creates one per call (the
proto says so), so h2load's one repeated body will do. createTgPayment makes a new order only for
a new user or new fields, and the user is a signed header, which h2load cannot vary: it is driven
by bench/h1load.py, a small HTTP/1.1 client sending a distinct user's request each time (its CPU is
reported like h2load's). Each body is checked once with a real client before it is measured, and
a gRPC run whose answers carry no message (errors come back as a 200 with trailers only) is
flagged. The last rows are QueryOrder on servers that serve nothing else: at the default level,
at log level `warning` (the default level's cost), and with metrics on (`PORTEX_METRICS_ADDR`,
what the metrics cost on the hottest call). Rounds alternate ceiling and call, so that machine
noise hits both.

`python -m bench slowtelegram`: Pay when Telegram takes 100 ms per createInvoiceLink (the fake
Bot API's `delay`), at 16, 64 and 256 calls in flight. No database connection is held across the
Telegram call, so the throughput grows with concurrency well past the pool size; a connection held
across it would cap Pay at pool size / 0.1 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import grpc

from bench import summary
from bench.h1load import http_request, write_requests
from bench.h2load import (
    GRPC_PREFIX_BYTES,
    LoadResult,
    grpc_frame,
    grpc_headers,
    h2load,
    run_load,
)
from bench.serving import DATA_KEY, DATA_KEYS, free_port, wait_serving
from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.pool import connect
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import application_admin
from portex_pay.config import Settings
from portex_pay.domain.catalog import CatalogItem
from portex_pay.domain.init_data import init_data_fields, sign_init_data
from portex_pay_devtools.fake_bot_api import FakeBotApi

ROUNDS = 3
SECONDS = 3.0  # measured, per run
WARM_UP = 1.0
GRPC_CONNECTIONS, GRPC_STREAMS = 8, 16  # the setup
HTTP_CONNECTIONS = 32  # HTTP/1.1 with a body: one request in flight a connection
EDGE_REQUESTS_PER_RUN = 20_000  # distinct createTgPayment buyers prepared for each run
SLOW_TELEGRAM = 0.1  # seconds per createInvoiceLink
SLOW_CONCURRENCY = (16, 64, 256)
SERVICE = "/portex.payment.v1.PaymentService"


@dataclass
class Service:
    """A running `portex-pay serve` and the application the bench set up in it."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    settings: Settings


@dataclass
class Shop:
    """The application every call runs as: its id, API key and bot token, one pending order."""

    app_id: UUID
    key: str
    token: str
    order_id: int = 0


@dataclass
class Row:
    """One line of the table: the call's runs and its ceiling's, round by round."""

    name: str
    goal: float | None
    run: Callable[[], Awaitable[LoadResult]]
    ceiling: Callable[[], Awaitable[LoadResult]]
    expected_bytes: int | None = None  # gRPC: bytes of one answer's message, frame included
    calls: list[LoadResult] = field(default_factory=list)
    ceilings: list[LoadResult] = field(default_factory=list)


def serve_env(dsn: str, fake_url: str, grpc_port: int, http_port: int) -> dict[str, str]:
    """`serve` as a user runs it (defaults, the log level too), in webhook mode without pollers,
    the edge's per-user and per-application rate limits out of the way of the measurement."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PORTEX_") or k == "PORTEX_UVLOOP"
    }
    return {
        **env,
        "DATABASE_URL": dsn,
        "PORTEX_PAYLOAD_SECRET": "bench-" + "c" * 32,
        "PORTEX_DATA_KEY": DATA_KEY,
        "PORTEX_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "PORTEX_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "PORTEX_TELEGRAM_API_URL": fake_url,
        "PORTEX_TELEGRAM_UPDATES": "webhook",
        "PORTEX_TELEGRAM_POLLERS": "false",
        "PORTEX_LOG_FORMAT": "json",
        "PORTEX_EDGE_USER_RATE": "1e9",
        "PORTEX_EDGE_USER_BURST": str(10**9),
        "PORTEX_EDGE_APP_RATE": "1e9",
        "PORTEX_EDGE_APP_BURST": str(10**9),
    }


async def start_serve(
    dsn: str, fake_url: str, log: Path, *, workers: int = 1, **extra: str
) -> Service:
    grpc_port, http_port = free_port(), free_port()
    env = {**serve_env(dsn, fake_url, grpc_port, http_port), **extra}
    with log.open("wb") as output:
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "portex_pay", "serve", "--workers", str(workers)],
            env=env,
            stdout=output,
            stderr=output,
        )
    await wait_serving(grpc_port)
    settings = Settings.from_env(env, serving=False)
    return Service(process, grpc_port, http_port, settings)


async def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    await asyncio.to_thread(process.wait, 30)


async def start_ceiling(kind: str) -> tuple[subprocess.Popen[bytes], int]:
    """bench/ceilings.py's `kind` server in its own process, once it listens."""
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
        [sys.executable, "-m", "bench.ceilings", kind, str(port)], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    if line.strip() != b"ready":
        raise RuntimeError(f"the {kind} ceiling did not start")
    return process, port


async def open_shop(dsn: str, fake: FakeBotApi, session: aiohttp.ClientSession) -> Shop:
    """An application with a bot and the catalog item the calls buy."""
    conn = await connect(dsn)  # with the JSON codecs the catalog needs
    try:
        await migrate(conn)
        token = f"{uuid.uuid4().int % 10**9 + 10**9}:{uuid.uuid4().hex}{uuid.uuid4().hex[:3]}"
        fake.add_bot(token)
        admin = application_admin(
            conn,
            BotApiClient(session, fake.base_url, 5),
            max_amount=Settings().payments.max_amount,
            data_keys=DATA_KEYS,
        )
        application, key = await admin.create_app(f"calls-{uuid.uuid4().hex[:8]}", token)
        await admin.set_item(application.id, CatalogItem(key="item", amount=5, title="Book"))
        return Shop(application.id, key, token)
    finally:
        await conn.close()


def pay_request(user: int) -> payment_pb2.PayRequest:
    # No request_id: every call creates a new order.
    return payment_pb2.PayRequest(
        tg_use_id=user, amount=5, label="item", title="Book", description="Magic"
    )


async def grpc_check(port: int, key: str, method: str, request: bytes, answer: type[Any]) -> Any:
    """The request h2load will repeat, sent once through grpc.aio: it must succeed."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            f"{SERVICE}/{method}"
        )
        raw = await call(request, metadata=(("authorization", f"Bearer {key}"),))
    return answer.FromString(raw)


def grpc_run(
    port: int, key: str, method: str, request: bytes, *, streams: int = GRPC_STREAMS
) -> Callable[[], Awaitable[LoadResult]]:
    async def run() -> LoadResult:
        return await h2load(
            f"http://127.0.0.1:{port}{SERVICE}/{method}",
            body=grpc_frame(request),
            headers=grpc_headers(key),
            connections=GRPC_CONNECTIONS,
            streams=streams,
            seconds=SECONDS,
            warm_up=WARM_UP,
        )

    return run


def init_data(token: str, user: int) -> str:
    user_fields = {"id": user, "first_name": "Bench"}
    return sign_init_data(
        init_data_fields(user_fields, auth_date=datetime.now(UTC)), bot_token=token
    )


def edge_headers(shop: Shop, user: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-App-Id": str(shop.app_id),
        "X-Tg-InitData": init_data(shop.token, user),
    }


async def edge_check(http_port: int, route: str, headers: dict[str, str], body: bytes) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{http_port}/v1/{route}", data=body, headers=headers
        ) as response,
    ):
        answer = await response.json()
        if response.status != 200:
            raise RuntimeError(f"{route}: {response.status} {answer}")
        return answer["result"]


def http_run(
    port: int, route: str, headers: dict[str, str], body: bytes
) -> Callable[[], Awaitable[LoadResult]]:
    async def run() -> LoadResult:
        return await h2load(
            f"http://127.0.0.1:{port}/v1/{route}",
            body=body,
            headers=[f"{name}: {value}" for name, value in headers.items()],
            connections=HTTP_CONNECTIONS,
            seconds=SECONDS,
            warm_up=WARM_UP,
            http1=True,
        )

    return run


def distinct_buyers_run(
    port: int, shop: Shop, body: bytes, first_user: list[int]
) -> Callable[[], Awaitable[LoadResult]]:
    """createTgPayment, a new buyer (a new order) on every request, through bench/h1load.py."""

    async def run() -> LoadResult:
        users = range(first_user[0], first_user[0] + EDGE_REQUESTS_PER_RUN)
        first_user[0] += EDGE_REQUESTS_PER_RUN
        requests = [
            http_request("127.0.0.1", "/v1/createTgPayment", edge_headers(shop, user), body)
            for user in users
        ]
        with tempfile.TemporaryDirectory(prefix="portex-h1load-") as tmp:
            requests_file, log_file = Path(tmp) / "requests", Path(tmp) / "requests.tsv"
            await asyncio.to_thread(write_requests, requests_file, requests)
            command = [sys.executable, "-m", "bench.h1load", "127.0.0.1", str(port)]
            command += [str(requests_file), str(HTTP_CONNECTIONS), str(SECONDS), str(WARM_UP)]
            return await run_load([*command, str(log_file)], log_file, SECONDS)

    return run


async def grpc_rows(
    service: Service, twins: tuple[Service, Service, Service], echo_port: int, shop: Shop
) -> list[Row]:
    """QueryOrder, ResumePayment, Pay, each checked once; and QueryOrder on three more servers
    that serve nothing else, at `info`, at `warning` and with metrics on (the default level's and
    the metrics' cost: the main server's history of every other call would weigh on the
    comparison)."""
    at_info, at_warning, with_metrics = twins
    pay = pay_request(1).SerializeToString()
    first = await grpc_check(service.grpc_port, shop.key, "Pay", pay, payment_pb2.PayResponse)
    shop.order_id = first.tg_payment_id
    query = payment_pb2.QueryOrderRequest(tg_payment_id=first.tg_payment_id).SerializeToString()
    resume = payment_pb2.ResumePaymentRequest(tg_use_id=1).SerializeToString()
    buy = pay_request(2).SerializeToString()
    rows = []
    for name, server, method, request, answer, goal in (
        ("QueryOrder", service, "QueryOrder", query, payment_pb2.Order, 0.6),
        ("ResumePayment", service, "ResumePayment", resume, payment_pb2.ResumePaymentResponse, 0.6),
        # Another user's: user 1's pending orders would pile up under ResumePayment's lookup.
        ("Pay (new order each)", service, "Pay", buy, payment_pb2.PayResponse, 0.25),
        ("QueryOrder only, log level info", at_info, "QueryOrder", query, payment_pb2.Order, None),
        (
            "QueryOrder only, log level warning",
            at_warning,
            "QueryOrder",
            query,
            payment_pb2.Order,
            None,
        ),
        (
            "QueryOrder only, metrics on",
            with_metrics,
            "QueryOrder",
            query,
            payment_pb2.Order,
            None,
        ),
    ):
        checked = await grpc_check(server.grpc_port, shop.key, method, request, answer)
        if answer is payment_pb2.ResumePaymentResponse and not checked.has_pending_payment:
            raise RuntimeError("ResumePayment found no pending order to resume")
        rows.append(
            Row(
                name,
                goal,
                grpc_run(server.grpc_port, shop.key, method, request),
                grpc_run(echo_port, shop.key, method, request),
                expected_bytes=GRPC_PREFIX_BYTES + len(checked.SerializeToString()),
            )
        )
    return rows


async def edge_rows(service: Service, trivial_port: int, shop: Shop) -> list[Row]:
    """getTgPayment (the owner reading one order) and createTgPayment (a new buyer each)."""
    reader = edge_headers(shop, 1)  # user 1 placed the order grpc_rows made
    query = json.dumps({"tg_payment_id": shop.order_id}).encode()
    await edge_check(service.http_port, "getTgPayment", reader, query)
    item = json.dumps({"label": "item", "amount": 5, "title": "Book", "description": "M"}).encode()
    first_user = [1_000_000]
    await edge_check(service.http_port, "createTgPayment", edge_headers(shop, 2), item)
    return [
        Row(
            "getTgPayment (HTTP/1.1)",
            0.5,
            http_run(service.http_port, "getTgPayment", reader, query),
            http_run(trivial_port, "getTgPayment", reader, query),
        ),
        Row(
            "createTgPayment (HTTP/1.1, new order each)",
            0.15,
            distinct_buyers_run(service.http_port, shop, item, first_user),
            http_run(trivial_port, "createTgPayment", edge_headers(shop, 2), item),
        ),
    ]


async def run_calls_bench(dsn: str, log_dir: Path) -> None:
    fake = FakeBotApi()
    await fake.start()
    session = await new_session()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        shop = await open_shop(dsn, fake, session)
        service = await start_serve(dsn, fake.base_url, log_dir / "calls-server.log")
        processes.append(service.process)
        at_info = await start_serve(dsn, fake.base_url, log_dir / "calls-server-info.log")
        processes.append(at_info.process)
        at_warning = await start_serve(
            dsn, fake.base_url, log_dir / "calls-server-warning.log", PORTEX_LOG_LEVEL="warning"
        )
        processes.append(at_warning.process)
        with_metrics = await start_serve(
            dsn,
            fake.base_url,
            log_dir / "calls-server-metrics.log",
            PORTEX_METRICS_ADDR=f"127.0.0.1:{free_port()}",
        )
        processes.append(with_metrics.process)
        echo, echo_port = await start_ceiling("grpc")
        trivial, trivial_port = await start_ceiling("http")
        processes += [echo, trivial]
        rows = await grpc_rows(service, (at_info, at_warning, with_metrics), echo_port, shop)
        rows += await edge_rows(service, trivial_port, shop)
        for _ in range(ROUNDS):
            for row in rows:
                row.ceilings.append(await row.ceiling())
                row.calls.append(await row.run())
    finally:
        for process in processes:
            await stop(process)
        await session.close()
        await fake.stop()
    print_table(rows)


def print_table(rows: list[Row]) -> None:
    print(
        f"\ncalls beside their ceilings: {ROUNDS} alternating rounds of {SECONDS:g} s "
        f"(+{WARM_UP:g} s warm-up); gRPC: h2load {GRPC_CONNECTIONS} connections x "
        f"{GRPC_STREAMS} streams vs a grpc.aio echo; HTTP/1.1: {HTTP_CONNECTIONS} connections vs "
        "a trivial aiohttp handler"
    )
    print(
        f"  {'call':44s} {'req/s':>7s} {'ceiling':>8s} {'ratio':>6s} {'p50 ms':>7s} "
        f"{'p99 ms':>7s} {'goal':>6s}"
    )
    for row in rows:
        rate = statistics.median(r.rate for r in row.calls)
        ceiling = statistics.median(r.rate for r in row.ceilings)
        ratio = statistics.median(
            c.rate / e.rate for c, e in zip(row.calls, row.ceilings, strict=True)
        )
        goal = f">={row.goal:.2f}" if row.goal is not None else ""
        summary.add(
            "calls",
            row.name,
            f"{rate:.0f}/s, x{ratio:.2f} of its ceiling, p99 "
            f"{statistics.median(r.p99_ms for r in row.calls):.1f} ms",
            f"x{goal}" if goal else "",
        )
        print(
            f"  {row.name:44s} {rate:7.0f} {ceiling:8.0f} {ratio:6.2f} "
            f"{statistics.median(r.p50_ms for r in row.calls):7.2f} "
            f"{statistics.median(r.p99_ms for r in row.calls):7.2f} {goal:>6s}  {notes(row)}"
        )
    twins = {row.name: row for row in rows if row.name.startswith("QueryOrder only")}
    info, warning = (
        twins["QueryOrder only, log level info"],
        twins["QueryOrder only, log level warning"],
    )
    level = statistics.median(
        i.rate / w.rate for i, w in zip(info.calls, warning.calls, strict=True)
    )
    print(f"  the default log level's cost: QueryOrder at info / at warning x{level:.2f}")
    summary.add("calls", "QueryOrder at info / at warning", f"x{level:.2f}", ">= x0.95")
    metrics = statistics.median(
        m.rate / i.rate
        for m, i in zip(twins["QueryOrder only, metrics on"].calls, info.calls, strict=True)
    )
    print(f"  the metrics' cost: QueryOrder with metrics on / off x{metrics:.2f}")
    summary.add("calls", "QueryOrder with metrics on / off", f"x{metrics:.2f}", "")


def notes(row: Row) -> str:
    """What makes a figure suspect: a busy client, failed answers, gRPC errors behind 200s."""
    found = []
    for label, results in (("call", row.calls), ("ceiling", row.ceilings)):
        share = max(r.client_share for r in results)
        if any(r.client_bound for r in results):
            found.append(f"client-bound ({label}: client CPU {share:.0%} of its wall time)")
        failed = sum(r.failed for r in results)
        if failed:
            found.append(f"{failed} failed ({label})")
    for result in row.calls:
        per_answer = result.bytes_per_answer()
        if row.expected_bytes and per_answer is not None and per_answer < 0.9 * row.expected_bytes:
            found.append(
                f"gRPC errors: {per_answer:.0f} bytes an answer, {row.expected_bytes} expected"
            )
            break
    return "; ".join(found)


async def run_slow_telegram_bench(dsn: str, log_dir: Path) -> None:
    fake = FakeBotApi()
    await fake.start()
    session = await new_session()
    service = None
    try:
        shop = await open_shop(dsn, fake, session)
        service = await start_serve(dsn, fake.base_url, log_dir / "slow-telegram-server.log")
        fake.delay("createInvoiceLink", SLOW_TELEGRAM)  # every call, until cleared
        pay = pay_request(1).SerializeToString()
        first = await grpc_check(service.grpc_port, shop.key, "Pay", pay, payment_pb2.PayResponse)
        expected = GRPC_PREFIX_BYTES + len(first.SerializeToString())
        results = {}
        for concurrency in SLOW_CONCURRENCY:
            run = grpc_run(
                service.grpc_port,
                shop.key,
                "Pay",
                pay,
                streams=max(1, concurrency // GRPC_CONNECTIONS),
            )
            results[concurrency] = await run()
    finally:
        if service is not None:
            await stop(service.process)
        await session.close()
        await fake.stop()
    pool = service.settings.db.pool_max
    print(
        f"\nPay with Telegram answering createInvoiceLink in {SLOW_TELEGRAM * 1000:.0f} ms "
        f"(h2load, {GRPC_CONNECTIONS} connections, {SECONDS:g} s each); database pool: "
        f"{pool} connections (PORTEX_DB_POOL_MAX)"
    )
    for concurrency, result in results.items():
        note = f"; {result.failed} failed" if result.failed else ""
        per_answer = result.bytes_per_answer()
        if per_answer is not None and per_answer < 0.9 * expected:
            note += f"; gRPC errors: {per_answer:.0f} bytes an answer, {expected} expected"
        summary.add(
            "slowtelegram",
            f"Pay, {concurrency} in flight",
            f"{result.rate:.0f}/s",
            f"> {pool}/0.1 s",
        )
        print(
            f"  {concurrency:4d} in flight: {result.rate:7.0f}/s   p50 {result.p50_ms:7.1f} ms   "
            f"p99 {result.p99_ms:7.1f} ms{note}{'; client-bound' if result.client_bound else ''}"
        )
    print(
        f"  a connection held across the Telegram call would cap Pay at "
        f"{pool / SLOW_TELEGRAM:.0f}/s (pool / {SLOW_TELEGRAM * 1000:.0f} ms)"
    )
