"""Payments under load: pre-checkout answer latency at a fixed arrival rate, and how many
successful-payment updates per second are processed durably.

The service runs as its own process (`portex-pay serve`, webhook mode) so that it has a core of
its own; this process plays Telegram with the fake Bot API: it delivers updates to the service's
webhook over loopback HTTP and times the answers. Bots are spread over several applications, as
Telegram delivers different bots' webhooks in parallel.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import grpc

from bench.serving import (
    DATA_KEYS,
    ServiceProcess,
    bench_apps,
    insert_orders,
    percentile,
    wait_serving,
)
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import application_admin
from portex_pay.domain.pay import sign_invoice_payload
from portex_pay_devtools.fake_bot_api import FakeBotApi

SECRET = "bench-payload-secret-" + "x" * 32
APPS = 20
CHECKOUT_RATE = 200  # per second
CHECKOUT_SECONDS = 10
PAYMENT_UPDATES = 3000
PAYMENT_CONCURRENCY = 32


async def run_payments_bench(dsn: str, log_dir: Path) -> None:
    fake = FakeBotApi()
    await fake.start()
    server = ServiceProcess(dsn, fake.base_url, log_dir / "payments-server.log", SECRET)
    server.start()
    grpc_port, http_port = server.grpc_port, server.http_port
    session = await new_session()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
        admin = application_admin(
            conn, BotApiClient(session, fake.base_url, 5), data_keys=DATA_KEYS
        )
        apps = await bench_apps(admin, fake, APPS)
        await wait_serving(grpc_port)
        for application, _, _ in apps:
            await admin.register_webhook(application.id, f"http://127.0.0.1:{http_port}")

        # Orders to pay: Pay through the real gRPC API.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            total = CHECKOUT_RATE * CHECKOUT_SECONDS
            links = []
            for index in range(total):
                application, key, token = apps[index % APPS]
                paid = await stub.Pay(
                    payment_pb2.PayRequest(
                        tg_use_id=1000 + index, amount=5, label="item", title="Gem",
                        description="A gem",
                    ),
                    metadata=(("authorization", f"Bearer {key}"),),
                )  # fmt: skip
                links.append((paid.tg_payment_url, 1000 + index))

        # 1. Pre-checkout latency at a fixed arrival rate (open loop: arrivals do not wait).
        started = time.perf_counter()
        tasks = []
        for index, (link, user) in enumerate(links):
            due = started + index / CHECKOUT_RATE
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fake.pay_invoice(link, user)))
        outcomes = await asyncio.gather(*tasks)
        offered = len(links) / (time.perf_counter() - started)
        latencies = [o.answer_latency * 1000 for o in outcomes if o.answer_latency is not None]
        approved = sum(o.approved for o in outcomes)
        for _, _, token in apps:
            await fake.drain(token, timeout=60)
        paid_count = await conn.fetchval("SELECT count(*) FROM orders WHERE state = 'paid'")

        # 2. successful_payment updates straight to the webhook, as fast as they are taken.
        rate = await _payment_throughput(conn, http_port)
    finally:
        await session.close()
        await server.stop()
        await conn.close()
        await fake.stop()

    print(f"\npre-checkout at {CHECKOUT_RATE}/s offered ({offered:.0f}/s achieved), {APPS} bots:")
    print(
        f"  answered {len(latencies)}/{len(links)}, approved {approved}, paid {paid_count};"
        f" answer latency p50 {statistics.median(latencies):.1f} ms,"
        f" p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
    )
    print(
        f"successful_payment updates processed durably: {rate:.0f}/s "
        f"({PAYMENT_UPDATES} updates, {PAYMENT_CONCURRENCY} concurrent webhook deliveries)"
    )


async def _payment_throughput(conn: asyncpg.Connection, http_port: int) -> float:
    """Pending orders are paid by successful_payment updates POSTed to the webhook; each 200
    means the payment, the order change and its event are committed."""
    rows = await conn.fetch(
        "SELECT o.tg_payment_id, o.tg_use_id, o.amount, a.id AS app_id, a.webhook_secret "
        "FROM orders o JOIN applications a ON a.id = o.application_id "
        "WHERE o.state = 'pending' LIMIT $1",
        PAYMENT_UPDATES,
    )
    if len(rows) < PAYMENT_UPDATES:
        # The newest application with a bot: one of this bench's, made just before.
        application_id = await conn.fetchval(
            "SELECT id FROM applications WHERE bot_id IS NOT NULL ORDER BY created_at DESC LIMIT 1"
        )
        await insert_orders(conn, application_id, 2000, PAYMENT_UPDATES - len(rows))
        return await _payment_throughput(conn, http_port)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(rows)):
        queue.put_nowait(index)

    async def deliver(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            row = rows[index]
            update = {
                "update_id": 50_000_000 + index,
                "message": {
                    "message_id": index,
                    "date": int(time.time()),
                    "chat": {"id": row["tg_use_id"], "type": "private"},
                    "from": {"id": row["tg_use_id"], "is_bot": False, "first_name": "U"},
                    "successful_payment": {
                        "currency": "XTR",
                        "total_amount": row["amount"],
                        "invoice_payload": sign_invoice_payload(
                            SECRET.encode(), row["tg_payment_id"], row["amount"]
                        ),
                        "telegram_payment_charge_id": f"bench-{uuid.uuid4().hex}",
                        "provider_payment_charge_id": "",
                    },
                },
            }
            async with session.post(
                f"http://127.0.0.1:{http_port}/telegram/webhook/{row['app_id']}",
                json=update,
                headers={"X-Telegram-Bot-Api-Secret-Token": row["webhook_secret"]},
            ) as response:
                assert response.status == 200, response.status

    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        await asyncio.gather(*(deliver(session) for _ in range(PAYMENT_CONCURRENCY)))
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed
