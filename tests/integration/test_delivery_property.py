"""Property: however Telegram's payment deliveries are repeated and reordered, each charge
counts once and the order ends in the same state."""

from __future__ import annotations

import asyncio
import itertools
from uuid import UUID

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portex_pay.adapters.postgres.applications import ApplicationRepository
from portex_pay.adapters.postgres.dead_letters import DeadLetterRepository
from portex_pay.adapters.postgres.ledger_store import LedgerStore
from portex_pay.adapters.postgres.orders import OrderRepository
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.adapters.telegram import BotApiClient
from portex_pay.domain.application import Application
from portex_pay.domain.pay import PayCommand, sign_invoice_payload
from portex_pay.service.clock import utcnow
from portex_pay.service.updates import UpdateProcessor
from tests.conftest import DATA_KEYS, PAYLOAD_KEYS, PAYLOAD_SECRET, TestApp
from tests.telegram_updates import successful_payment

USER = 777
AMOUNT = 5
_update_ids = itertools.count(10_000_000)

# A delivery plan: which charge (0..2) each delivery carries and whether it re-uses an earlier
# update_id of that charge (a redelivery) or comes under a new one (a re-sent update).
deliveries = st.lists(st.tuples(st.integers(0, 2), st.booleans()), min_size=1, max_size=8).filter(
    lambda plan: any(True for _ in plan)
)


async def _check(dsn: str, application: Application, plan: list[tuple[int, bool]]) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=2)
    session = aiohttp.ClientSession()
    try:
        order = await OrderRepository(pool).create(
            application.id,
            PayCommand(tg_use_id=USER, amount=AMOUNT, label="l", title="t", description="d"),
            ttl_seconds=3600,
            lease_seconds=0,
        )
        payload = sign_invoice_payload(PAYLOAD_SECRET.encode(), order.tg_payment_id, AMOUNT)
        processor = UpdateProcessor(
            LedgerStore(pool, DATA_KEYS),
            DeadLetterRepository(pool),
            BotApiClient(session, "http://127.0.0.1:9", 1.0),  # not called for payments
            PAYLOAD_KEYS,
            decision_timeout=1.0,
            auto_refund=True,
            clock=utcnow,
        )
        charges = [f"stx{order.tg_payment_id}-{n}" for n in range(3)]
        sent: dict[int, list[int]] = {}
        for charge, redeliver in plan:
            if redeliver and sent.get(charge):
                update_id = sent[charge][0]
            else:
                update_id = next(_update_ids)
                sent.setdefault(charge, []).append(update_id)
            await processor.handle(
                application,
                successful_payment(
                    payer=USER,
                    payload=payload,
                    charge_id=charges[charge],
                    total_amount=AMOUNT,
                    update_id=update_id,
                ),
            )

        distinct = {charges[charge] for charge, _ in plan}
        first = charges[plan[0][0]]
        row = await pool.fetchrow(
            "SELECT state, telegram_payment_charge_id FROM orders WHERE tg_payment_id = $1",
            order.tg_payment_id,
        )
        assert row is not None
        assert (row["state"], row["telegram_payment_charge_id"]) == ("paid", first)
        payments = await pool.fetch(
            "SELECT telegram_payment_charge_id, disposition FROM payments WHERE tg_payment_id = $1",
            order.tg_payment_id,
        )
        assert {(p["telegram_payment_charge_id"], p["disposition"]) for p in payments} == {
            (charge, "accepted" if charge == first else "duplicate") for charge in distinct
        }
        refunds = await pool.fetch(
            "SELECT telegram_payment_charge_id FROM refunds WHERE tg_payment_id = $1",
            order.tg_payment_id,
        )
        assert {r["telegram_payment_charge_id"] for r in refunds} == distinct - {first}
        paid_events = await pool.fetchval(
            "SELECT count(*) FROM events WHERE tg_payment_id = $1 AND type = 'order.paid'",
            order.tg_payment_id,
        )
        assert paid_events == 1
    finally:
        await session.close()
        await pool.close()


async def test_any_delivery_sequence_counts_each_charge_once(
    database_url: str, make_app, service
) -> None:
    app: TestApp = await make_app()
    application = await ApplicationRepository(service.pool, DATA_KEYS).get(UUID(app.id))
    assert application is not None

    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(plan=deliveries)
    def property_holds(plan: list[tuple[int, bool]]) -> None:
        asyncio.run(_check(database_url, application, plan))

    # Hypothesis drives a synchronous function; each example gets its own event loop in a
    # worker thread, so the session loop (serving the in-process service) keeps running.
    await asyncio.to_thread(property_holds)
