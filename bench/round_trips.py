"""Round trips to PostgreSQL per call (`python -m bench roundtrips`): the statements PostgreSQL
executed for one QueryOrder, one ResumePayment, one Pay (a new order, the fake Telegram answering
at once) and one payment (pre-checkout + successful_payment through the webhook), counted by
PostgreSQL itself (pg_stat_statements, in a throwaway cluster of its own that loads it) while the
service runs in this process against the fake Bot API.

Each call is repeated CALLS times, one at a time, and the counts are divided by CALLS; after each
batch the bench waits SETTLE seconds so that what the call sets off (the event hub's reaction to
NOTIFY) is counted too. Background jobs (sweepers, outboxes) may add a fraction now and then.
asyncpg's default pool reset is four statements in one message: the round-trip column counts it
once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import grpc

from bench import summary
from bench.serving import DATA_KEY, DATA_KEYS
from bench.statements import statement_counts, with_statement_counts
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.config import Settings
from portex_pay.domain.catalog import CatalogItem
from portex_pay.logging import configure_logging
from portex_pay_devtools.fake_bot_api import FakeBotApi

CALLS = 20
SETTLE = 0.5  # seconds for the hub and other follow-ups of a call to run
# The rest of asyncpg's default reset message travels with this statement.
_RESET_HEAD = "SELECT pg_advisory_unlock_all()"
_RESET_REST = ("CLOSE ALL", "UNLISTEN *", "RESET ALL")


async def _count(
    conn: asyncpg.Connection, title: str, goal: str, call: Callable[[int], Awaitable[object]]
) -> None:
    """Runs `call` CALLS times, one after another, and prints the statements per call."""
    await conn.execute("SELECT pg_stat_statements_reset()")
    for index in range(CALLS):
        await call(index)
    await asyncio.sleep(SETTLE)
    statements = await statement_counts(conn)
    total = sum(statements.values()) / CALLS
    bundled = sum(statements.get(query, 0) for query in _RESET_REST) / CALLS
    print(f"  {title}: {total:.2f} statements, {total - bundled:.2f} round trips")
    summary.add("roundtrips", title, f"{total - bundled:.2f} round trips", goal)
    for query, count in sorted(statements.items(), key=lambda item: -item[1]):
        print(f"      {count / CALLS:5.2f}  {query}")


async def run_round_trips_bench(dsn: str) -> None:
    async with FakeBotApi() as fake:
        settings = Settings().replace(
            db_url=dsn,
            payload_secret="bench-" + "r" * 32,
            data_key=DATA_KEY,
            grpc_addr="127.0.0.1:0",
            http_addr="127.0.0.1:0",
            telegram_api_url=fake.base_url,
            telegram_updates="webhook",
            telegram_pollers=False,
            log_format="json",
            log_level="warning",
        )
        app = PortexApp(settings)
        await app.start()
        session = await new_session()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            token = f"{uuid.uuid4().int % 10**9 + 10**9}:{uuid.uuid4().hex}{uuid.uuid4().hex[:3]}"
            fake.add_bot(token)
            admin = application_admin(
                app.pool,
                BotApiClient(session, fake.base_url, 5),
                max_amount=app.settings.payments.max_amount,
                data_keys=DATA_KEYS,
            )
            application, key = await admin.create_app(f"trips-{uuid.uuid4().hex[:6]}", token)
            await admin.set_item(application.id, CatalogItem(key="item", amount=5, title="Gem"))
            await admin.register_webhook(application.id, f"http://127.0.0.1:{app.http_port}")
            metadata = (("authorization", f"Bearer {key}"),)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = payment_pb2_grpc.PaymentServiceStub(channel)

                async def pay(index: int, user: int = 1) -> payment_pb2.PayResponse:
                    request = payment_pb2.PayRequest(
                        tg_use_id=user + index, amount=5, label="item", title="Gem",
                        description="A gem",
                    )  # fmt: skip
                    return await stub.Pay(request, metadata=metadata)

                order = await pay(0)  # also warms the API-key cache
                query = payment_pb2.QueryOrderRequest(tg_payment_id=order.tg_payment_id)
                resume = payment_pb2.ResumePaymentRequest(tg_use_id=1)
                links = [(await pay(index, user=10_000)).tg_payment_url for index in range(CALLS)]

                async def pay_link(index: int) -> None:
                    await fake.pay_invoice(links[index], 10_000 + index)
                    await fake.drain(token, timeout=10)

                print(f"\nround trips to PostgreSQL per call (mean of {CALLS}, one at a time):")
                await _count(
                    conn, "QueryOrder", "1", lambda _: stub.QueryOrder(query, metadata=metadata)
                )
                await _count(
                    conn,
                    "ResumePayment",
                    "1",
                    lambda _: stub.ResumePayment(resume, metadata=metadata),
                )
                await _count(
                    conn, "Pay (new order, instant fake Telegram)", "<= 3", lambda i: pay(i, 100)
                )
                await _count(conn, "payment (pre-checkout + successful_payment)", "<= 6", pay_link)
                paid = await conn.fetchval(
                    "SELECT count(*) FROM orders WHERE application_id = $1 AND state = 'paid'",
                    application.id,
                )
                print(f"  ({paid} of {CALLS} payments recorded)")
                print("  (a fraction above the whole: the background jobs' statements meanwhile)")
        finally:
            await conn.close()
            await session.close()
            await app.stop()


async def main() -> None:
    configure_logging("json", "warning")
    await with_statement_counts("portex-trips-bench-", run_round_trips_bench)


if __name__ == "__main__":
    asyncio.run(main())
