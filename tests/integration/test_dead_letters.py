"""Updates that cannot be processed are dead-lettered and never block the bot's later updates,
through a real webhook and a real poller; only transient failures (PostgreSQL down, a statement
timeout) are retried, and an update that keeps failing is dead-lettered after
`update_max_attempts` tries (the outage tests run on a PostgreSQL cluster of their own). Every
update is applied only within the application whose bot received it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc
import structlog

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.service.applications import ApplicationAdmin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from portex_pay_devtools.pgcluster import PgCluster
from tests.conftest import DATA_KEYS, TestApp, create_test_app, make_settings
from tests.integration.helpers import pay_request
from tests.telegram_updates import successful_payment

USER, OTHER_USER = 7101, 7102


async def _state(stub, app, tg_payment_id: int) -> int:
    request = payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id)
    return int((await stub.QueryOrder(request, metadata=app.metadata)).state)


async def test_a_poison_pre_checkout_is_dead_lettered_and_another_users_payment_completes(
    stub, service, make_app, fake_telegram: FakeBotApi
):
    shop = await make_app(updates="webhook")
    bot_id = int(shop.bot_token.split(":")[0])
    poisoned = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    # Payloads and money of the kinds that used to raise or be coerced.
    bad: list[dict[str, Any]] = [
        {"invoice_payload": f"v1.{poisoned.tg_payment_id}.4.é"},
        {"total_amount": "5"},
        {"total_amount": 5.9},
        {"total_amount": 2**64},
    ]
    for tamper in bad:
        outcome = await fake_telegram.pay_invoice(
            poisoned.tg_payment_url, USER, answer_timeout=5.0, **tamper
        )
        assert outcome.answered and not outcome.approved
    await fake_telegram.drain(shop.bot_token)
    assert await _state(stub, shop, poisoned.tg_payment_id) == payment_pb2.Order.PENDING

    fine = await stub.Pay(pay_request(tg_use_id=OTHER_USER), metadata=shop.metadata)
    assert (await fake_telegram.pay_invoice(fine.tg_payment_url, OTHER_USER)).approved
    await fake_telegram.drain(shop.bot_token)
    assert await _state(stub, shop, fine.tg_payment_id) == payment_pb2.Order.PAID

    letters = await service.pool.fetch(
        "SELECT kind, error FROM dead_letters WHERE bot_id = $1 ORDER BY id", bot_id
    )
    assert len(letters) == 3  # the non-ASCII payload is simply declined as not ours
    assert {letter["kind"] for letter in letters} == {"pre_checkout_query"}
    events = await service.pool.fetchval(
        "SELECT count(*) FROM events WHERE application_id = $1::uuid "
        "AND type = 'update.dead_lettered'",
        shop.id,
    )
    assert events == 3


async def test_a_malformed_successful_payment_is_kept_and_announced(
    stub, service, make_app, fake_telegram: FakeBotApi
):
    shop = await make_app(updates="webhook")
    bot_id = int(shop.bot_token.split(":")[0])
    update_id = await fake_telegram.deliver_update(
        shop.bot_token,
        {
            "message": {
                "message_id": 1,
                "date": 0,
                "chat": {"id": USER, "type": "private"},
                "from": {"id": USER, "first_name": "a\u0000b"},
                "successful_payment": {
                    "currency": "XTR",
                    "total_amount": "5",
                    "invoice_payload": "x",
                    "telegram_payment_charge_id": "stx-malformed",
                },
            }
        },
    )
    await fake_telegram.drain(shop.bot_token)
    assert update_id is not None
    await fake_telegram.redeliver(update_id, token=shop.bot_token)  # a second delivery
    await fake_telegram.drain(shop.bot_token)
    rows = await service.pool.fetch("SELECT kind, raw FROM dead_letters WHERE bot_id = $1", bot_id)
    assert [row["kind"] for row in rows] == ["successful_payment"]
    types = await service.pool.fetch(
        "SELECT type, data FROM events WHERE application_id = $1::uuid ORDER BY id", shop.id
    )
    assert [t["type"] for t in types] == ["update.dead_lettered", "payment.anomaly"]
    assert {t["data"]["reason"] for t in types} == {"MALFORMED_UPDATE"}
    assert (
        await service.pool.fetchval(
            "SELECT count(*) FROM payments WHERE application_id = $1::uuid", shop.id
        )
        == 0
    )


async def test_a_refunded_payment_on_another_bot_never_touches_this_applications_order(
    stub, service, make_app, fake_telegram: FakeBotApi
):
    a = await make_app(updates="webhook")
    b = await make_app(updates="webhook")
    paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=a.metadata)
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    await fake_telegram.drain(a.bot_token)
    assert await _state(stub, a, paid.tg_payment_id) == payment_pb2.Order.PAID

    await fake_telegram.deliver_update(
        b.bot_token,
        {
            "message": {
                "message_id": 2,
                "date": 0,
                "chat": {"id": USER, "type": "private"},
                "from": {"id": USER, "first_name": "x"},
                "refunded_payment": {
                    "currency": "XTR",
                    "total_amount": 5,
                    "invoice_payload": "x",
                    "telegram_payment_charge_id": outcome.charge_id,
                },
            }
        },
    )
    await fake_telegram.drain(b.bot_token)
    assert await _state(stub, a, paid.tg_payment_id) == payment_pb2.Order.PAID
    refunded_at = await service.pool.fetchval(
        "SELECT refunded_at FROM payments WHERE telegram_payment_charge_id = $1", outcome.charge_id
    )
    assert refunded_at is None
    anomaly = await service.pool.fetchrow(
        "SELECT data FROM events WHERE application_id = $1::uuid AND type = 'payment.anomaly'",
        b.id,
    )
    assert anomaly is not None and anomaly["data"]["reason"] == "REFUND_OF_UNKNOWN_CHARGE"


# --- The poison update through a real poller ----------------------------------------------------


def _payload_of(fake: FakeBotApi, link: str) -> str:
    """The signed invoice_payload of the invoice behind `link` (what Telegram echoes back)."""
    return next(invoice.payload for invoice in fake.invoices if invoice.link == link)


def _successful_payment(
    user: int, payload: str, charge_id: str, total_amount: object = 5
) -> dict[str, Any]:
    """A successful_payment update as Telegram sends it after a charge."""
    return successful_payment(
        payer=user, payload=payload, charge_id=charge_id, total_amount=total_amount
    )


def _text_message(user: int) -> dict[str, Any]:
    return {
        "message": {
            "message_id": 2,
            "date": int(time.time()),
            "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "Chatty"},
            "text": "hello",
        }
    }


async def test_poison_updates_never_block_a_real_poller_and_another_users_payment_completes(
    stub, service, make_app, database_url: str, fake_telegram: FakeBotApi
):
    shop = await make_app(updates="polling")
    token = shop.bot_token
    bot_id = int(token.split(":")[0])
    poisoned = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    fine = await stub.Pay(pay_request(tg_use_id=OTHER_USER), metadata=shop.metadata)
    payload = _payload_of(fake_telegram, poisoned.tg_payment_url)
    replica = PortexApp(
        make_settings(
            database_url,
            fake_telegram.base_url,
            telegram_pollers=True,
            poll_timeout=1,
            poll_lease_seconds=2.0,
        )
    )
    await replica.start()
    try:
        await fake_telegram.wait_for_call("getUpdates", token=token, timeout=10)
        mark = len(fake_telegram.calls)
        with structlog.testing.capture_logs() as logs:
            # Queued in one go, ahead of the other user's payment. Before the fix the two
            # non-ASCII payloads raised (hmac.compare_digest on non-ASCII text) and the poller
            # fetched the same batch forever; total_amount "5" was coerced into a payment.
            bad_payment = _successful_payment(USER, payload, f"stx-poison-{uuid.uuid4().hex}", "5")
            bad_payment_id = await fake_telegram.deliver_update(token, bad_payment)
            pay = fake_telegram.pay_invoice
            link = poisoned.tg_payment_url
            poison = [
                asyncio.create_task(
                    pay(link, USER, invoice_payload=f"v1.{poisoned.tg_payment_id}.4.é")
                ),
                asyncio.create_task(
                    pay(link, USER, invoice_payload="v1.٣.4.xxxxxxxxxxxxxxxxxxxxxx")
                ),
                asyncio.create_task(pay(link, 2**64)),  # from.id beyond bigint
                asyncio.create_task(pay(link, USER, invoice_payload=payload + "\x00")),
            ]
            # Tasks start in creation order, so this pre-checkout is queued behind the poison.
            good = asyncio.create_task(pay(fine.tg_payment_url, OTHER_USER))
            outcomes = await asyncio.gather(*poison)
            assert (await good).approved
            await fake_telegram.drain(token)  # the successful_payment too, confirmed by offset
        assert all(o.answered and not o.approved for o in outcomes), outcomes
        assert await _state(stub, shop, fine.tg_payment_id) == payment_pb2.Order.PAID
        assert await _state(stub, shop, poisoned.tg_payment_id) == payment_pb2.Order.PENDING
        calls = fake_telegram.calls[mark:]
    finally:
        await replica.stop()

    # Every pre-checkout answered, in queue order: the four poisoned ones declined.
    answers = [c.params for c in calls if c.method == "answerPreCheckoutQuery" and c.token == token]
    assert [a["ok"] for a in answers] == [False, False, False, False, True]
    assert all(a["error_message"] for a in answers[:4])

    letters = await service.pool.fetch(
        "SELECT update_id, kind, raw, error, attempts FROM dead_letters WHERE bot_id = $1 "
        "ORDER BY update_id",
        bot_id,
    )
    # The two foreign-looking payloads are simply declined as not ours (PAYLOAD_INVALID); the
    # values we must not store or coerce are dead-lettered, with the raw update (re-encoded as
    # ASCII JSON by the poller: NUL and 2^64 intact) and the error.
    assert [(row["kind"], row["attempts"]) for row in letters] == [
        ("successful_payment", 1),
        ("pre_checkout_query", 1),
        ("pre_checkout_query", 1),
    ]
    raws = [json.loads(row["raw"]) for row in letters]
    assert raws[0] == {"update_id": bad_payment_id, **bad_payment}
    assert raws[1]["pre_checkout_query"]["from"]["id"] == 2**64
    assert raws[2]["pre_checkout_query"]["invoice_payload"] == payload + "\x00"
    errors = [row["error"] for row in letters]
    assert errors[0].startswith("MalformedUpdate") and "'total_amount'" in errors[0]
    assert errors[1].startswith("MalformedUpdate") and "'id'" in errors[1]
    assert errors[2].startswith("MalformedUpdate") and "'invoice_payload'" in errors[2]
    types = await service.pool.fetch(
        "SELECT type, data FROM events WHERE application_id = $1::uuid "
        "AND type IN ('update.dead_lettered', 'payment.anomaly') ORDER BY id",
        shop.id,
    )
    assert sorted(t["type"] for t in types) == ["payment.anomaly"] + ["update.dead_lettered"] * 3
    assert {t["data"]["update_id"] for t in types} == {row["update_id"] for row in letters}
    assert (
        await service.pool.fetchval(
            "SELECT count(*) FROM payments WHERE application_id = $1::uuid", shop.id
        )
        == 1
    )

    # Log lines name the error's type, never the update's content. The payment someone made is
    # an error; the bot's other dead letters are warnings, one a minute (the second is held
    # back and counted in the next line).
    lines = [entry for entry in logs if entry["event"] == "update dead-lettered"]
    assert [(line["update_id"], line["log_level"]) for line in lines] == [
        (letters[0]["update_id"], "error"),
        (letters[1]["update_id"], "warning"),
    ]
    assert all(line["error_type"] == "MalformedUpdate" for line in lines)
    assert all(payload.split(".")[-1] not in repr(line) for line in lines)
    assert all(token not in repr(entry) for entry in logs)

    # The offset moved past each batch once: no batch was fetched again. Only the idle long
    # polls after the last update repeat their offset, the one stored for the bot.
    final = await service.pool.fetchval(
        "SELECT next_offset FROM poll_state WHERE bot_id = $1", bot_id
    )
    assert final == 1 + await service.pool.fetchval(
        "SELECT max(update_id) FROM telegram_updates WHERE bot_id = $1", bot_id
    )
    offsets = [
        int(c.params["offset"]) for c in calls if c.method == "getUpdates" and c.token == token
    ]
    assert offsets == sorted(offsets) and offsets[-1] == final
    refetched = {o: n for o, n in Counter(offsets).items() if n > 1 and o != final}
    assert not refetched, offsets


# --- Transient failures through a real PostgreSQL outage ----------------------------------------

RETRYING = "update processing failed, will retry"
WEBHOOK_503 = "Wrong response from the webhook: 503 Service Unavailable"


@dataclass
class Private:
    """A service on a PostgreSQL cluster of its own, which the test may stop and start."""

    cluster: PgCluster
    app: PortexApp
    admin: ApplicationAdmin
    shop: TestApp
    stub: Any  # a PaymentServiceStub on a grpc.aio channel (its stubs type the sync API)
    session: aiohttp.ClientSession
    bot_api: BotApiClient


@contextlib.asynccontextmanager
async def _private_service(
    tmp_path: Path, fake: FakeBotApi, updates: str = "webhook", **overrides: object
) -> AsyncIterator[Private]:
    cluster = PgCluster(tmp_path / "pg", ephemeral=True)
    await asyncio.to_thread(cluster.start)
    session = await new_session()
    # The webhook's application lookup is cached for the whole test, so that during the outage
    # updates reach the processor (a cold lookup answers 503 before it; see the cold app below).
    app = PortexApp(make_settings(cluster.dsn, fake.base_url, auth_cache_ttl=600.0, **overrides))
    try:
        await app.start()
        bot_api = BotApiClient(session, fake.base_url, 5.0)
        admin = application_admin(app.pool, bot_api, data_keys=DATA_KEYS)
        public_url = f"http://127.0.0.1:{app.http_port}"
        shop = await create_test_app(admin, fake, updates=updates, public_url=public_url)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            yield Private(cluster, app, admin, shop, stub, session, bot_api)
    finally:
        await app.stop()
        await session.close()
        await asyncio.to_thread(cluster.destroy)


async def _healthy(p: Private, wanted: bool) -> None:
    url = f"http://127.0.0.1:{p.app.http_port}/healthz"
    deadline = time.monotonic() + 20
    while True:
        async with p.session.get(url) as response:
            if (response.status == 200) is wanted:
                return
        assert time.monotonic() < deadline, f"healthz never became {wanted}"
        await asyncio.sleep(0.05)


async def _database_back(p: Private) -> None:
    await asyncio.to_thread(p.cluster.start)
    await _healthy(p, True)
    # Connections from before the restart are replaced now, not at the first update.
    await p.app.pool.expire_connections()


async def _last_webhook_error(p: Private, token: str) -> str | None:
    info = await p.bot_api.call(token, "getWebhookInfo", {})
    error: str | None = info.get("last_error_message")
    return error


async def test_an_update_failing_during_a_database_outage_is_retried_then_processed(
    tmp_path: Path, fake_telegram: FakeBotApi
):
    async with _private_service(tmp_path, fake_telegram) as p:
        shop = p.shop
        order = await p.stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
        public_url = f"http://127.0.0.1:{p.app.http_port}"
        cold = await create_test_app(
            p.admin, fake_telegram, updates="webhook", public_url=public_url
        )
        await fake_telegram.deliver_update(shop.bot_token, _text_message(USER))  # warms the cache
        await fake_telegram.drain(shop.bot_token)
        assert await _last_webhook_error(p, shop.bot_token) is None
        update = _successful_payment(
            USER, _payload_of(fake_telegram, order.tg_payment_url), f"stx-{uuid.uuid4().hex}"
        )

        await asyncio.to_thread(p.cluster.stop)
        with structlog.testing.capture_logs() as logs:
            update_id = await fake_telegram.deliver_update(shop.bot_token, update)
            await fake_telegram.deliver_update(cold.bot_token, _text_message(USER))
            # The fake tries each delivery 3 times, then gives up (as Telegram does, eventually).
            await fake_telegram.drain(shop.bot_token, timeout=20)
            await fake_telegram.drain(cold.bot_token, timeout=20)
        assert update_id is not None
        # Each try reached the processor, failed transiently and was answered 503: retry.
        retries = [entry for entry in logs if entry["event"] == RETRYING]
        assert [(r["update_id"], r["attempts"]) for r in retries] == [
            (update_id, 1),
            (update_id, 2),
            (update_id, 3),
        ]
        assert not [entry for entry in logs if entry["event"] == "update dead-lettered"]
        assert await _last_webhook_error(p, shop.bot_token) == WEBHOOK_503
        # An uncached application lookup failing is the same transient failure: 503, not 500.
        lookups = [entry for entry in logs if entry["event"] == "webhook application lookup failed"]
        assert len(lookups) == 3
        assert await _last_webhook_error(p, cold.bot_token) == WEBHOOK_503

        await _database_back(p)
        await fake_telegram.redeliver(update_id, token=shop.bot_token)  # Telegram tries again
        await fake_telegram.drain(shop.bot_token)
        assert await _state(p.stub, shop, order.tg_payment_id) == payment_pb2.Order.PAID
        pool = p.app.pool
        assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0
        assert await pool.fetchval("SELECT count(*) FROM payments") == 1
        assert (
            await pool.fetchval("SELECT count(*) FROM events WHERE type = 'update.dead_lettered'")
            == 0
        )


async def test_an_update_that_keeps_failing_transiently_is_dead_lettered_after_max_attempts(
    tmp_path: Path, fake_telegram: FakeBotApi
):
    async with _private_service(tmp_path, fake_telegram, update_max_attempts=5) as p:
        shop = p.shop
        bot_id = int(shop.bot_token.split(":")[0])
        order = await p.stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
        await fake_telegram.deliver_update(shop.bot_token, _text_message(USER))  # warms the cache
        await fake_telegram.drain(shop.bot_token)
        charge_id = f"stx-{uuid.uuid4().hex}"
        payload = _payload_of(fake_telegram, order.tg_payment_url)
        update = _successful_payment(USER, payload, charge_id)
        pool = p.app.pool
        # Sessions started after the restart give up on a statement after 300 ms: a lock that is
        # never released then fails each try with a statement timeout, a transient failure.
        await pool.execute(f'ALTER DATABASE "{p.cluster.database}" SET statement_timeout = 300')

        # Tries 1-3: PostgreSQL is down.
        await asyncio.to_thread(p.cluster.stop)
        with structlog.testing.capture_logs() as logs:
            update_id = await fake_telegram.deliver_update(shop.bot_token, update)
            await fake_telegram.drain(shop.bot_token, timeout=20)
        assert update_id is not None
        assert [e["attempts"] for e in logs if e["event"] == RETRYING] == [1, 2, 3]
        assert await _last_webhook_error(p, shop.bot_token) == WEBHOOK_503
        await _database_back(p)
        assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 0

        # Tries 4-5: PostgreSQL is back, but a stuck transaction holds the order's row lock.
        locker = await asyncpg.connect(p.cluster.dsn)
        try:
            async with locker.transaction():
                await locker.execute(
                    "SELECT 1 FROM orders WHERE tg_payment_id = $1 FOR UPDATE",
                    order.tg_payment_id,
                )
                with structlog.testing.capture_logs() as logs:
                    await fake_telegram.redeliver(update_id, token=shop.bot_token)
                    await fake_telegram.drain(shop.bot_token, timeout=20)
        finally:
            await locker.close()
        retried = [e for e in logs if e["event"] == RETRYING]
        assert [e["attempts"] for e in retried] == [4]  # under the bound: 503, not dead-lettered
        assert retried[0]["error"].startswith("QueryCanceledError")
        (line,) = [e for e in logs if e["event"] == "update dead-lettered"]
        assert (line["update_id"], line["attempts"], line["error_type"]) == (
            update_id,
            5,
            "QueryCanceledError",
        )
        assert charge_id not in repr(line) and payload not in repr(line)

        (letter,) = await pool.fetch(
            "SELECT update_id, kind, raw, error, attempts FROM dead_letters WHERE bot_id = $1",
            bot_id,
        )
        assert (letter["update_id"], letter["kind"], letter["attempts"]) == (
            update_id,
            "successful_payment",
            5,
        )
        assert letter["error"].startswith("QueryCanceledError")
        # The bytes exactly as the webhook received them.
        sent = {"update_id": update_id, **update}
        assert letter["raw"] == json.dumps(sent, ensure_ascii=False).encode()
        events = await pool.fetch(
            "SELECT type, data FROM events WHERE type IN ('update.dead_lettered', "
            "'payment.anomaly') ORDER BY id"
        )
        assert [e["type"] for e in events] == ["update.dead_lettered", "payment.anomaly"]
        assert events[0]["data"]["update_id"] == update_id
        assert {e["data"]["reason"] for e in events} == {"RETRIES_EXHAUSTED"}

        # Acknowledged for good: with the lock gone, a further delivery changes nothing.
        await fake_telegram.redeliver(update_id, token=shop.bot_token)
        await fake_telegram.drain(shop.bot_token)
        assert await pool.fetchval("SELECT count(*) FROM dead_letters") == 1
        assert await pool.fetchval("SELECT count(*) FROM payments") == 0
        assert await _state(p.stub, shop, order.tg_payment_id) == payment_pb2.Order.PENDING


async def test_a_poller_backs_off_on_a_transient_failure_then_dead_letters_it_and_moves_on(
    tmp_path: Path, fake_telegram: FakeBotApi
):
    polling = {"telegram_pollers": True, "poll_timeout": 1, "poll_lease_seconds": 2.0}
    async with _private_service(
        tmp_path, fake_telegram, updates="polling", update_max_attempts=3, **polling
    ) as p:
        shop, pool = p.shop, p.app.pool
        token = shop.bot_token
        stuck = await p.stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
        fine = await p.stub.Pay(pay_request(tg_use_id=OTHER_USER), metadata=shop.metadata)
        charge_id = f"stx-{uuid.uuid4().hex}"
        update = _successful_payment(
            USER, _payload_of(fake_telegram, stuck.tg_payment_url), charge_id
        )
        # New sessions give up on a statement after 300 ms, and a stuck transaction holds the
        # order's row lock: each try of the update fails with a statement timeout (transient).
        await pool.execute(f'ALTER DATABASE "{p.cluster.database}" SET statement_timeout = 300')
        await pool.expire_connections()
        locker = await asyncpg.connect(p.cluster.dsn)
        try:
            async with locker.transaction():
                await locker.execute(
                    "SELECT 1 FROM orders WHERE tg_payment_id = $1 FOR UPDATE",
                    stuck.tg_payment_id,
                )
                # A long poll is waiting: it returns the update the moment it is queued.
                polls = len(fake_telegram.calls_for("getUpdates", token))
                await fake_telegram.wait_for_call("getUpdates", token=token, count=polls + 1)
                mark = len(fake_telegram.calls)
                with structlog.testing.capture_logs() as logs:
                    delivered = time.time()
                    update_id = await fake_telegram.deliver_update(token, update)
                    # Queued behind it: answered once the stuck update is dead-lettered.
                    outcome = await fake_telegram.pay_invoice(fine.tg_payment_url, OTHER_USER)
                    await fake_telegram.drain(token)
        finally:
            await locker.close()
        assert outcome.approved
        assert await _state(p.stub, shop, fine.tg_payment_id) == payment_pb2.Order.PAID
        assert await _state(p.stub, shop, stuck.tg_payment_id) == payment_pb2.Order.PENDING

        assert [e["attempts"] for e in logs if e["event"] == RETRYING] == [1, 2]
        (line,) = [e for e in logs if e["event"] == "update dead-lettered"]
        assert (line["update_id"], line["attempts"], line["error_type"]) == (
            update_id,
            3,
            "QueryCanceledError",
        )
        (letter,) = await pool.fetch("SELECT update_id, kind, raw, attempts FROM dead_letters")
        assert (letter["update_id"], letter["kind"], letter["attempts"]) == (
            update_id,
            "successful_payment",
            3,
        )
        assert json.loads(letter["raw"]) == {"update_id": update_id, **update}

        # Not confirmed while retried: the same offset is fetched again, after 0.5 s and then
        # 1 s of backoff (never in a busy loop), and confirmed once dead-lettered.
        gets = [
            c for c in fake_telegram.calls[mark:] if c.method == "getUpdates" and c.token == token
        ]
        assert update_id is not None
        again = [c.time for c in gets if int(c.params["offset"]) <= update_id]
        assert 2 <= len(again) <= 3, again  # the first fetch may come after `mark`
        assert again[-2] - delivered >= 0.5
        assert again[-1] - again[-2] >= 1.0
        assert await pool.fetchval("SELECT next_offset FROM poll_state") == 1 + await pool.fetchval(
            "SELECT max(update_id) FROM telegram_updates"
        )
