"""ListOrders on a large table: p50/p99 of one page over real gRPC, for a user with 10 000 orders
in a table of 1 000 000, the all-orders list, a deep page, a user and state filter and the stuck
list (paid, unacknowledged, older than ten minutes).

The orders are seeded in one `INSERT ... SELECT generate_series` statement
(portex_pay_devtools.order_seed: three applications, 100 000 users, a live shop's mix of states,
already swept), then ANALYZEd. The service runs as its own process, as in the other server
benches; this process calls it one request at a time, so the figures are latencies, not
throughput.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import grpc

from bench.serving import DATA_KEY, DATA_KEYS, free_port, percentile, wait_serving
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import application_admin
from portex_pay_devtools.order_seed import seed_orders

ORDERS = 1_000_000
USERS = 100_000
HEAVY_USER = USERS + 1  # not one of the others
HEAVY_ORDERS = 10_000
CALLS = 300
DEEP_PAGE = 50  # the page read for "deep page": 5 000 orders into the user's list


async def run_orders_bench(dsn: str, log_dir: Path) -> None:
    grpc_port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "PORTEX_PAYLOAD_SECRET": "bench-" + "s" * 32,
        "PORTEX_DATA_KEY": DATA_KEY,
        "PORTEX_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "PORTEX_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "PORTEX_TELEGRAM_API_URL": "http://127.0.0.1:9",
        "PORTEX_TELEGRAM_POLLERS": "false",
        "PORTEX_LOG_LEVEL": "warning",
        "PORTEX_LOG_FORMAT": "json",
    }
    conn = await asyncpg.connect(dsn)
    session = await new_session()
    log = (log_dir / "orders-server.log").open("wb")
    server = None
    try:
        await migrate(conn)
        admin = application_admin(
            conn, BotApiClient(session, "http://127.0.0.1:9", 1), data_keys=DATA_KEYS
        )
        keys: list[str] = []
        apps = []
        for n in range(3):
            application, key = await admin.create_app(
                f"orders-bench-{n}-{uuid.uuid4().hex[:6]}", None
            )
            apps.append(application.id)
            keys.append(key)
        started = time.perf_counter()
        now = datetime.now(UTC)
        await seed_orders(
            conn,
            apps,
            count=ORDERS,
            users=USERS,
            now=now,
            heavy_user=HEAVY_USER,
            heavy_orders=HEAVY_ORDERS,
            swept=True,
        )
        seeded = time.perf_counter() - started
        server = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "portex_pay", "serve", "--workers", "1"],
            env=env,
            stdout=log,
            stderr=log,
        )
        await wait_serving(grpc_port)
        metadata = (("authorization", f"Bearer {keys[0]}"),)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            results = await _measure_all(stub, metadata, now)
    finally:
        await session.close()
        if server is not None:
            server.terminate()
            await asyncio.to_thread(server.wait, 30)
        log.close()
        await conn.close()

    print(
        f"\nListOrders: {ORDERS:,} orders (seeded in {seeded:.1f} s), a user with "
        f"{HEAVY_ORDERS:,} of them; {CALLS} sequential calls each, page_size 100 unless given"
    )
    for name, (latencies, rows) in results.items():
        print(
            f"  {name:46s} p50 {statistics.median(latencies):6.2f} ms   "
            f"p99 {percentile(latencies, 0.99):6.2f} ms   ({rows} orders a page)"
        )


async def _measure_all(
    stub: payment_pb2_grpc.PaymentServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    now: datetime,
) -> dict[str, tuple[list[float], int]]:
    user = f"tg_use_id = {HEAVY_USER}"
    ten_minutes_ago = (now - timedelta(minutes=10)).isoformat()
    stuck = f'state = PAID AND fulfilled = false AND paid_time < "{ten_minutes_ago}"'
    deep_token = await _token_of_page(stub, metadata, user, DEEP_PAGE)
    cases = {
        "all orders, first page": payment_pb2.ListOrdersRequest(),
        "the user's first page": payment_pb2.ListOrdersRequest(filter=user),
        "the user's first page, page_size 10": payment_pb2.ListOrdersRequest(
            filter=user, page_size=10
        ),
        f"the user's page {DEEP_PAGE + 1} (keyset token)": payment_pb2.ListOrdersRequest(
            filter=user, page_token=deep_token
        ),
        "the user's paid orders (user + state)": payment_pb2.ListOrdersRequest(
            filter=f"{user} AND state = PAID"
        ),
        "the stuck list (paid, unfulfilled, > 10 min)": payment_pb2.ListOrdersRequest(filter=stuck),
        'one item (label = "item-7")': payment_pb2.ListOrdersRequest(filter='label = "item-7"'),
    }
    results: dict[str, tuple[list[float], int]] = {}
    for name, request in cases.items():
        latencies: list[float] = []
        rows = 0
        for _ in range(CALLS):
            started = time.perf_counter()
            response = await stub.ListOrders(request, metadata=metadata)
            latencies.append((time.perf_counter() - started) * 1000)
            rows = len(response.orders)
        results[name] = (latencies, rows)
    return results


async def _token_of_page(
    stub: payment_pb2_grpc.PaymentServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    text: str,
    pages: int,
) -> str:
    """The page token after `pages` pages of the filter."""
    token = ""
    for _ in range(pages):
        response = await stub.ListOrders(
            payment_pb2.ListOrdersRequest(filter=text, page_token=token), metadata=metadata
        )
        token = response.next_page_token
    return token
