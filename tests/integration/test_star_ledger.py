"""The Star ledger: getStarTransactions read from a checkpoint by one reader per bot, every
transaction stored and reconciled with our orders and refunds, and its reads over gRPC.

Each test drives the reader's catch-up (the code the per-bot jobs and `admin reconcile` run) on
the service's database, with the fake Bot API playing Telegram: a payment whose update never
came, a refund made elsewhere, withdrawals, ads, commissions, kinds newer than the code.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
import structlog
from google.protobuf import timestamp_pb2

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, Sessions, Wiring, application_admin, wire
from portex_pay.domain.application import Application
from portex_pay.service.reconcile import ReconcileReport
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp, make_settings, new_bot_token
from tests.integration.helpers import details, eventually, pay_request

USER = 6161
DAY = 86_400


@pytest.fixture
async def wiring_for(service: PortexApp) -> AsyncIterator[Callable[[str], Wiring]]:
    """The service's wiring on its database, reading as the replica named: each call is a
    replica (or the same one after a restart), with its own objects and nothing in memory."""
    session = await new_session()

    def make(replica: str) -> Wiring:
        return wire(service.settings, service.pool, Sessions(session), replica=replica)

    yield make
    await session.close()


async def application_of(wiring: Wiring, app: TestApp) -> Application:
    found = await wiring.applications.get(uuid.UUID(app.id))
    assert found is not None
    return found


async def catch_up(wiring: Wiring, app: TestApp) -> ReconcileReport:
    report = await wiring.ledger_reader.catch_up(await application_of(wiring, app), force=True)
    assert report is not None and report.error is None, report
    return report


def offsets(fake: FakeBotApi, app: TestApp) -> list[int]:
    """The offsets getStarTransactions was asked for by the app's bot, in order."""
    calls = fake.calls_for("getStarTransactions", token=app.bot_token)
    return [int(call.params["offset"]) for call in calls]


def payload_of(fake: FakeBotApi, link: str) -> str:
    [invoice] = [invoice for invoice in fake.invoices if invoice.link == link]
    return invoice.payload


async def pay_unseen(stub: Any, fake: FakeBotApi, app: TestApp, amount: int = 5) -> tuple[int, str]:
    """An order paid at Telegram whose successful_payment never reached us: its id and charge."""
    paid = await stub.Pay(pay_request(tg_use_id=USER, amount=amount), metadata=app.metadata)
    payload = payload_of(fake, paid.tg_payment_url)
    transaction = fake.record_star_payment(app.bot_token, USER, payload, amount)
    return paid.tg_payment_id, transaction["id"]


async def listed(stub: Any, app: TestApp, **request: Any) -> list[payment_pb2.StarTransaction]:
    response = await stub.ListStarTransactions(
        payment_pb2.ListStarTransactionsRequest(**request), metadata=app.metadata
    )
    return list(response.transactions)


async def order_of(stub: Any, app: TestApp, tg_payment_id: int) -> payment_pb2.Order:
    order: payment_pb2.Order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=app.metadata
    )
    return order


async def events_of(service: PortexApp, app: TestApp, event_type: str) -> list[dict[str, Any]]:
    rows = await service.pool.fetch(
        "SELECT tg_payment_id, data FROM events WHERE application_id = $1 AND type = $2"
        " ORDER BY id",
        uuid.UUID(app.id),
        event_type,
    )
    return [dict(row) for row in rows]


# -------------------------------------------------------------------------- reconciliation


async def test_a_payment_whose_update_never_came_is_recorded_once_however_often_it_is_read(
    stub, make_app, fake_telegram: FakeBotApi, service: PortexApp, wiring_for
):
    app: TestApp = await make_app()
    order_id, charge_id = await pay_unseen(stub, fake_telegram, app)
    wiring = wiring_for("replica-a")

    first = await catch_up(wiring, app)
    second = await catch_up(wiring, app)

    assert (first.payments, first.recorded, first.stored, first.checkpoint) == (1, 1, 1, 1)
    assert (second.transactions, second.recorded, second.checkpoint) == (0, 0, 1)
    order = await order_of(stub, app, order_id)
    assert (order.state, order.telegram_payment_charge_id) == (payment_pb2.Order.PAID, charge_id)
    assert [e["tg_payment_id"] for e in await events_of(service, app, "order.paid")] == [order_id]
    [transaction] = await listed(stub, app)
    assert (transaction.id, transaction.match, transaction.tg_payment_id) == (
        charge_id,
        payment_pb2.StarTransaction.PAYMENT,
        order_id,
    )
    assert offsets(fake_telegram, app) == [0, 1]  # the second run read on from the checkpoint


async def test_a_refund_made_outside_portex_pay_refunds_the_order_and_is_recorded(
    stub, make_app, fake_telegram: FakeBotApi, service: PortexApp, wiring_for
):
    app: TestApp = await make_app()
    order_id, charge_id = await pay_unseen(stub, fake_telegram, app, amount=9)
    wiring = wiring_for("replica-a")
    await catch_up(wiring, app)
    fake_telegram.refund_outside(app.bot_token, charge_id)

    report = await catch_up(wiring, app)

    assert (report.refunds, report.outside_refunds, report.unmatched) == (1, 1, 0)
    assert (await order_of(stub, app, order_id)).state == payment_pb2.Order.REFUNDED
    refund = await service.pool.fetchrow(
        "SELECT reason, reason_code, state, amount, tg_payment_id FROM refunds"
        " WHERE telegram_payment_charge_id = $1",
        charge_id,
    )
    assert refund is not None and dict(refund) == {
        "reason": "outside",
        "reason_code": "other",
        "state": "succeeded",
        "amount": 9,
        "tg_payment_id": order_id,
    }
    assert len(await events_of(service, app, "order.refunded")) == 1
    newest = (await listed(stub, app))[0]
    assert (newest.direction, newest.match, newest.tg_payment_id) == (
        payment_pb2.StarTransaction.OUTGOING,
        payment_pb2.StarTransaction.REFUND,
        order_id,
    )


async def test_a_refund_of_ours_that_telegram_made_is_settled_not_recorded_again(
    stub, make_app, fake_telegram: FakeBotApi, service: PortexApp, wiring_for
):
    app: TestApp = await make_app()
    order_id, charge_id = await pay_unseen(stub, fake_telegram, app)
    wiring = wiring_for("replica-a")
    await catch_up(wiring, app)
    # Our refund worker cannot get through (Stars not cleared yet), and the refund is made by
    # hand meanwhile.
    fake_telegram.fail_next(
        "refundStarPayment", error_code=400, description="Bad Request: BALANCE_TOO_LOW",
        times=1000, token=app.bot_token,
    )  # fmt: skip
    await stub.RefundPayment(
        payment_pb2.RefundPaymentRequest(tg_payment_id=order_id), metadata=app.metadata
    )
    fake_telegram.refund_outside(app.bot_token, charge_id)

    report = await catch_up(wiring, app)

    assert (report.refunds, report.outside_refunds) == (1, 0)
    refund = await service.pool.fetchrow(
        "SELECT reason, state FROM refunds WHERE telegram_payment_charge_id = $1", charge_id
    )
    assert refund is not None and dict(refund) == {"reason": "requested", "state": "succeeded"}
    assert (await order_of(stub, app, order_id)).state == payment_pb2.Order.REFUNDED


async def test_withdrawals_ads_fees_commissions_and_unknown_kinds_are_stored_as_they_came(
    stub, make_app, fake_telegram: FakeBotApi, wiring_for
):
    app: TestApp = await make_app()
    token = app.bot_token
    sponsor = {"id": 555, "is_bot": True, "first_name": "Sponsor"}
    future = {
        "id": "future-1",
        "amount": 4,
        "nanostar_amount": 5,
        "source": {"type": "stars_from_the_future", "planet": {"name": "Mars"}},
    }
    for transaction in (
        {"id": "wd-1", "amount": 30, "receiver": {
            "type": "fragment", "withdrawal_state": {"type": "pending"}}},
        {"id": "ads-1", "amount": 3, "nanostar_amount": 250_000_000,
         "receiver": {"type": "telegram_ads"}},
        {"id": "api-1", "amount": 1, "receiver": {"type": "telegram_api", "request_count": 900}},
        {"id": "aff-1", "amount": 2, "source": {
            "type": "affiliate_program", "sponsor_user": sponsor, "commission_per_mille": 120}},
        future,
    ):  # fmt: skip
        fake_telegram.add_star_transaction(token, transaction)

    report = await catch_up(wiring_for("replica-a"), app)

    assert (report.stored, report.unmatched, report.payments) == (5, 0, 0)
    by_id = {t.id: t for t in await listed(stub, app)}
    assert {t.match for t in by_id.values()} == {payment_pb2.StarTransaction.NONE}
    assert (by_id["wd-1"].partner_type, by_id["wd-1"].withdrawal_state) == ("fragment", "pending")
    assert (by_id["ads-1"].amount, by_id["ads-1"].nanostar_amount) == (3, 250_000_000)
    aff = by_id["aff-1"]
    assert (aff.direction, aff.partner_id, aff.commission_per_mille) == (
        payment_pb2.StarTransaction.INCOMING, 555, 120,
    )  # fmt: skip
    stored_future = by_id["future-1"]
    assert stored_future.partner_type == "stars_from_the_future"
    assert json.loads(stored_future.raw_json) == {
        **future,
        "date": json.loads(stored_future.raw_json)["date"],
    }


async def test_a_payment_or_refund_matching_nothing_of_ours_is_announced(
    stub, make_app, fake_telegram: FakeBotApi, service: PortexApp, wiring_for
):
    app: TestApp = await make_app()
    forged = fake_telegram.record_star_payment(app.bot_token, USER, "v1.1.5.forged", 5)
    user = {"id": USER, "is_bot": False, "first_name": "Ann"}
    stranger = {"id": "stx-never-ours", "amount": 8, "receiver": {
        "type": "user", "transaction_type": "invoice_payment", "user": user}}  # fmt: skip
    fake_telegram.add_star_transaction(app.bot_token, stranger)

    report = await catch_up(wiring_for("replica-a"), app)
    await catch_up(wiring_for("replica-a"), app)  # nothing new: announced once

    assert (report.payments, report.refunds, report.unmatched, report.recorded) == (1, 1, 2, 0)
    response = await stub.ListEvents(
        payment_pb2.ListEventsRequest(types=["ledger.unmatched"]), metadata=app.metadata
    )
    announced = [(e.star_transaction.id, e.star_transaction.match) for e in response.events]
    assert announced == [
        (forged["id"], payment_pb2.StarTransaction.UNMATCHED),
        ("stx-never-ours", payment_pb2.StarTransaction.UNMATCHED),
    ]
    first = response.events[0].star_transaction
    assert (first.amount, first.partner_id, first.invoice_payload) == (5, USER, "v1.1.5.forged")
    # Nothing was paid or recorded as a charge for them.
    assert (
        await service.pool.fetchval(
            "SELECT count(*) FROM payments WHERE application_id = $1", uuid.UUID(app.id)
        )
        == 0
    )


async def test_a_withdrawal_is_read_again_until_fragment_settles_it(
    stub, make_app, fake_telegram: FakeBotApi, wiring_for
):
    app: TestApp = await make_app()
    pending = {"type": "fragment", "withdrawal_state": {"type": "pending"}}
    fake_telegram.add_star_transaction(
        app.bot_token, {"id": "wd-1", "amount": 10, "receiver": pending}
    )
    wiring = wiring_for("replica-a")
    await catch_up(wiring, app)
    settled = {"type": "succeeded", "date": 1_790_000_000, "url": "https://fragment.com/tx/9"}
    fake_telegram.set_withdrawal_state(app.bot_token, "wd-1", settled)

    report = await catch_up(wiring, app)
    third = await catch_up(wiring, app)

    assert (report.pages, report.withdrawals_updated, third.pages) == (2, 1, 1)
    assert offsets(fake_telegram, app) == [0, 1, 0, 1]  # read again at its position, once
    [withdrawal] = await listed(stub, app)
    assert withdrawal.withdrawal_state == "succeeded"
    assert json.loads(withdrawal.raw_json)["receiver"]["withdrawal_state"] == settled


# ------------------------------------------------------------------------------ the reader


async def test_the_checkpoint_survives_a_restart_and_the_list_is_never_read_from_zero_again(
    make_app, fake_telegram: FakeBotApi, service: PortexApp, wiring_for
):
    app: TestApp = await make_app()
    for number in range(150):
        fake_telegram.add_star_transaction(
            app.bot_token,
            {"id": f"ads-{number}", "amount": 1, "receiver": {"type": "telegram_ads"}},
        )

    before = await catch_up(wiring_for("replica-a"), app)
    # A restart: other objects, nothing in memory; the checkpoint is in PostgreSQL.
    restarted = wiring_for("replica-a")
    idle = await catch_up(restarted, app)
    for number in range(3):
        fake_telegram.add_star_transaction(
            app.bot_token, {"id": f"late-{number}", "amount": 1, "receiver": {"type": "other"}}
        )
    after = await catch_up(restarted, app)

    assert (before.pages, before.checkpoint, before.stored) == (2, 150, 150)
    assert (idle.pages, idle.transactions, idle.checkpoint) == (1, 0, 150)
    assert (after.start, after.stored, after.checkpoint) == (150, 3, 153)
    assert offsets(fake_telegram, app) == [0, 100, 150, 150]
    bot_id = int(app.bot_token.split(":")[0])
    assert (
        await service.pool.fetchval(
            "SELECT count(*) FROM star_transactions WHERE bot_id = $1", bot_id
        )
        == 153
    )


async def test_while_one_replica_reads_a_bot_no_other_does(
    make_app, fake_telegram: FakeBotApi, wiring_for
):
    app: TestApp = await make_app()
    fake_telegram.add_star_transaction(
        app.bot_token, {"id": "ads-1", "amount": 1, "receiver": {"type": "telegram_ads"}}
    )
    first, second = wiring_for("replica-a"), wiring_for("replica-b")
    # Telegram is slow to answer the first reader: it holds the bot's lease meanwhile.
    fake_telegram.delay("getStarTransactions", 1.0, times=1, token=app.bot_token)
    reading = asyncio.create_task(
        first.ledger_reader.catch_up(await application_of(first, app), force=True)
    )
    await fake_telegram.wait_for_call("getStarTransactions", token=app.bot_token)

    refused = await second.ledger_reader.catch_up(await application_of(second, app), force=True)
    report = await reading

    assert refused is None
    assert report is not None and report.stored == 1
    assert offsets(fake_telegram, app) == [0]
    # Released with the last page: the other replica reads on from the checkpoint.
    taken_over = await catch_up(second, app)
    assert (taken_over.start, offsets(fake_telegram, app)) == (1, [0, 1])


async def test_a_bot_read_within_the_interval_is_left_alone_by_the_jobs(
    make_app, fake_telegram: FakeBotApi, wiring_for
):
    app: TestApp = await make_app()
    wiring = wiring_for("replica-a")
    application = await application_of(wiring, app)
    assert await wiring.ledger_reader.catch_up(application) is not None  # never read: at once
    # The default interval (300 s) has not passed: another replica's job does not read again.
    assert await wiring_for("replica-b").ledger_reader.catch_up(application) is None
    assert offsets(fake_telegram, app) == [0]


async def test_telegram_failing_ends_the_run_and_the_next_goes_on_from_the_checkpoint(
    make_app, fake_telegram: FakeBotApi, wiring_for
):
    app: TestApp = await make_app()
    fake_telegram.add_star_transaction(
        app.bot_token, {"id": "ads-1", "amount": 1, "receiver": {"type": "telegram_ads"}}
    )
    fake_telegram.fail_next(
        "getStarTransactions", error_code=429, description="Too Many Requests: retry after 7",
        retry_after=7, token=app.bot_token,
    )  # fmt: skip
    wiring = wiring_for("replica-a")
    application = await application_of(wiring, app)
    failed = await wiring.ledger_reader.catch_up(application, force=True)
    assert failed is not None and (failed.retry_after, failed.checkpoint) == (7, 0)
    # The lease was released: the next run (here another replica's) reads at once.
    retried = await catch_up(wiring_for("replica-b"), app)
    assert (retried.stored, offsets(fake_telegram, app)) == (1, [0, 0])


# --------------------------------------------------------------------------------- the reads


async def test_list_star_transactions_pages_newest_first_filters_and_refuses_bad_requests(
    stub, make_app, fake_telegram: FakeBotApi, wiring_for
):
    app: TestApp = await make_app()
    start = 1_780_000_000
    kinds = ["telegram_ads", "fragment", "other", "telegram_ads", "other", "fragment", "other"]
    for number, kind in enumerate(kinds):
        # Two transactions a second: the order within a second is by id.
        fake_telegram.add_star_transaction(app.bot_token, {
            "id": f"t-{number}", "amount": number, "date": start + number // 2,
            "receiver": {"type": kind}})  # fmt: skip
    await catch_up(wiring_for("replica-a"), app)

    everything = [t.id for t in await listed(stub, app)]
    assert everything == ["t-6", "t-5", "t-4", "t-3", "t-2", "t-1", "t-0"]
    pages, token = [], ""
    while True:
        response = await stub.ListStarTransactions(
            payment_pb2.ListStarTransactionsRequest(page_size=3, page_token=token),
            metadata=app.metadata,
        )
        pages.append([t.id for t in response.transactions])
        token = response.next_page_token
        if not token:
            break
    assert pages == [["t-6", "t-5", "t-4"], ["t-3", "t-2", "t-1"], ["t-0"]]

    fragments = await listed(stub, app, partner_types=["fragment"])
    assert [t.id for t in fragments] == ["t-5", "t-1"]
    merged = await listed(stub, app, partner_types=["fragment", "telegram_ads", "fragment"])
    assert [t.id for t in merged] == ["t-5", "t-3", "t-1", "t-0"]
    window = await listed(
        stub, app,
        date_start=timestamp(start + 1), date_end=timestamp(start + 3),
    )  # fmt: skip
    assert [t.id for t in window] == ["t-5", "t-4", "t-3", "t-2"]
    first = await stub.ListStarTransactions(
        payment_pb2.ListStarTransactionsRequest(page_size=2, partner_types=["other"]),
        metadata=app.metadata,
    )
    second = await stub.ListStarTransactions(
        payment_pb2.ListStarTransactionsRequest(
            page_size=2, partner_types=["other"], page_token=first.next_page_token
        ),
        metadata=app.metadata,
    )
    assert [t.id for t in (*first.transactions, *second.transactions)] == ["t-6", "t-4", "t-2"]

    for request, field in (
        ({"page_size": 1001}, "page_size"),
        ({"page_size": -1}, "page_size"),
        ({"date_start": timestamp(start), "date_end": timestamp(start)}, "date_end"),
        ({"partner_types": ["user\n"]}, "partner_types[0]"),
        ({"partner_types": ["x" * 65]}, "partner_types[0]"),
        ({"date_start": timestamp_pb2.Timestamp(
            seconds=-(10**12))}, "date_start"),
        ({"page_token": first.next_page_token}, "page_token"),  # made for other filters
        ({"page_token": "not-a-token"}, "page_token"),
    ):  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await listed(stub, app, **request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        violations = details(refused.value)["BadRequest"].field_violations
        assert [v.field for v in violations] == [field]


def timestamp(unix: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=unix)


async def test_another_applications_transactions_answer_as_absent(
    stub, make_app, fake_telegram: FakeBotApi, wiring_for
):
    mine: TestApp = await make_app()
    theirs: TestApp = await make_app()
    fake_telegram.add_star_transaction(
        theirs.bot_token, {"id": "theirs-1", "amount": 1, "receiver": {"type": "telegram_ads"}}
    )
    await catch_up(wiring_for("replica-a"), theirs)
    await catch_up(wiring_for("replica-a"), mine)

    assert await listed(stub, mine) == []
    assert [t.id for t in await listed(stub, theirs)] == ["theirs-1"]
    botless: TestApp = await make_app(bot=False)
    for call in (
        stub.ListStarTransactions(
            payment_pb2.ListStarTransactionsRequest(), metadata=botless.metadata
        ),
        stub.GetStarBalance(payment_pb2.GetStarBalanceRequest(), metadata=botless.metadata),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert details(refused.value)["ErrorInfo"].reason == "BOT_NOT_CONFIGURED"


async def test_get_star_balance_adds_what_the_ledger_knows_to_telegrams_figure(
    stub, make_app, fake_telegram: FakeBotApi, wiring_for
):
    app: TestApp = await make_app()
    token = app.bot_token
    unread = await stub.GetStarBalance(payment_pb2.GetStarBalanceRequest(), metadata=app.metadata)
    assert not unread.HasField("ledger_read_time")
    today = int(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp())
    hour = 3600

    def pay(amount: int, date: int) -> str:
        return str(fake_telegram.record_star_payment(token, USER, "x", amount, date=date)["id"])

    pay(100, today - 30 * DAY)  # available for 9 days
    twenty = today - 20 * DAY + 12 * hour
    pay(40, twenty)  # held one more day
    two = today - 2 * DAY
    pay(7, two + hour)
    refunded = pay(3, two + 5 * hour)
    fake_telegram.refund_outside(token, refunded, date=today - DAY)  # no longer held
    for number, (amount, state) in enumerate(((10, "pending"), (5, "failed"), (20, "succeeded"))):
        fake_telegram.add_star_transaction(token, {
            "id": f"wd-{number}", "amount": amount, "date": today - DAY + (number + 1) * hour,
            "receiver": {"type": "fragment", "withdrawal_state": {"type": state}}})  # fmt: skip
    fake_telegram.add_star_transaction(token, {
        "id": "ads-1", "amount": 1, "date": today - DAY + 4 * hour,
        "receiver": {"type": "telegram_ads"}})  # fmt: skip
    fake_telegram.add_star_transaction(token, {
        "id": "aff-1", "amount": 2, "date": today - DAY + 5 * hour,
        "source": {"type": "affiliate_program", "commission_per_mille": 100}})  # fmt: skip
    before = datetime.now(UTC)
    await catch_up(wiring_for("replica-a"), app)

    balance = await stub.GetStarBalance(payment_pb2.GetStarBalanceRequest(), metadata=app.metadata)

    # Telegram: 150 + 2 in, 3 + 10 + 5 + 20 + 1 out.
    assert (balance.amount, balance.nanostar_amount) == (113, 0)
    assert (balance.received, balance.refunded, balance.withdrawn) == (150, 3, 30)
    assert [(h.available_time.seconds, h.amount) for h in balance.held] == [
        (twenty + 21 * DAY, 40),
        (two + hour + 21 * DAY, 7),
    ]
    assert balance.held_total == 47
    assert balance.ledger_read_time.ToDatetime(tzinfo=UTC) >= before - timedelta(seconds=1)


async def test_get_star_balance_passes_telegrams_flood_control_on(stub, make_app, fake_telegram):
    app: TestApp = await make_app()
    fake_telegram.fail_next(
        "getMyStarBalance", error_code=429, description="Too Many Requests: retry after 4",
        retry_after=4, token=app.bot_token,
    )  # fmt: skip
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetStarBalance(payment_pb2.GetStarBalanceRequest(), metadata=app.metadata)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(refused.value)["RetryInfo"].retry_delay.seconds == 4


# ------------------------------------------------------------------------------ the replicas


async def test_two_replicas_run_one_reader_per_bot(empty_db: str, fake_telegram: FakeBotApi):
    """Two serving replicas on a database of their own (so that no other test's bots are
    read): both run a ledger job for the new bot, only one of them reads it at a time."""
    settings = make_settings(
        empty_db,
        fake_telegram.base_url,
        ledger_enabled=True,
        ledger_interval=0.1,
        ledger_lease_seconds=60.0,
        telegram_timeout=30.0,
    )
    replicas = [PortexApp(settings), PortexApp(settings)]
    session = await new_session()
    try:
        for replica in replicas:
            await replica.start()
        token = new_bot_token()
        fake_telegram.add_bot(token)
        fake_telegram.add_star_transaction(
            token, {"id": "ads-1", "amount": 1, "receiver": {"type": "telegram_ads"}}
        )
        # The first reader's call hangs: it holds the bot's lease for as long.
        fake_telegram.delay("getStarTransactions", 25.0, times=1, token=token)
        admin = application_admin(
            replicas[0].pool, BotApiClient(session, fake_telegram.base_url, 5), data_keys=DATA_KEYS
        )
        await admin.create_app(f"ledger-{uuid.uuid4().hex[:8]}", token)
        await fake_telegram.wait_for_call("getStarTransactions", token=token, timeout=10)
        bot_id = int(token.split(":")[0])

        def attempts() -> list[int]:
            found = []
            for replica in replicas:
                assert replica.ledgers is not None
                job = replica.ledgers.workers.get(bot_id)
                found.append(0 if job is None else job.attempts)
            return found

        # The reader tried once and is still waiting on Telegram; the other keeps trying.
        await eventually(lambda: sorted(attempts())[1] >= 5, what="the other replica's attempts")
        assert sorted(attempts())[0] == 1
        assert len(fake_telegram.calls_for("getStarTransactions", token=token)) == 1
    finally:
        for replica in replicas:
            await replica.stop()
        await session.close()


async def test_a_transaction_the_ledger_cannot_read_is_counted_and_passed_over(
    stub, make_app, fake_telegram: FakeBotApi, wiring_for
):
    """Telegram should never list one, but a broken answer must not stop the reader: what it
    cannot key or count is logged (once a minute per bot) and the checkpoint moves past it."""
    app: TestApp = await make_app()
    ads = {"id": "ads-1", "amount": 1, "receiver": {"type": "telegram_ads"}}
    fake_telegram.add_star_transaction(app.bot_token, ads)
    for broken in ({"id": "no-partner", "amount": 1, "date": 1}, ["not", "an", "object"]):
        fake_telegram.add_star_transaction(app.bot_token, broken, malformed=True)  # type: ignore[arg-type]
    fake_telegram.add_star_transaction(app.bot_token, {**ads, "id": "ads-2"})

    with structlog.testing.capture_logs() as logs:
        report = await catch_up(wiring_for("replica-a"), app)

    assert (report.transactions, report.malformed, report.stored, report.checkpoint) == (4, 2, 2, 4)
    assert [t.id for t in await listed(stub, app)] == ["ads-2", "ads-1"]
    [warning] = [line for line in logs if line["event"] == "star transactions unreadable"]
    assert (warning["log_level"], warning["count"]) == ("warning", 2)
