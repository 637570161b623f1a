"""The Python client package (portex_pay_client) against a real server.

Both clients are driven from async tests (tests/e2e/clients.py): `AsyncPaymentClient` directly,
the blocking `PaymentClient` in a worker thread (`asyncio.to_thread`), so that the event loop
running the in-process server and the fake Bot API keeps answering. Most tests use the in-process
server; the server-down-then-up test starts a real `portex-pay serve` process on a port chosen up
front. The RPCs of issue 18 that the server gains with it are in test_client_issue18.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import grpc
import pytest
from google.protobuf.json_format import MessageToDict

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay.domain.init_data import init_data_fields, sign_init_data
from portex_pay_client import (
    AsyncPaymentClient,
    PaymentClient,
    PortexPayError,
    RetryPolicy,
)
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, free_port
from tests.e2e.clients import Connect, code_and_reason, failure, orders_cli, paid_order
from tests.e2e.conftest import ServerProcess
from tests.integration.helpers import eventually, pay_fields, pay_request

# Retries quickly, and more often than any test needs: a test that sees fewer attempts than this
# allows sees the client's own decision not to retry.
FAST_RETRY = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05)

OptionalField = Literal["photo_url", "photo_size", "photo_width", "photo_height", "callback_url"]
OPTIONAL_ORDER_FIELDS: tuple[OptionalField, ...] = (
    "photo_url",
    "photo_size",
    "photo_width",
    "photo_height",
    "callback_url",
)


async def count_orders(service: PortexApp, app: TestApp) -> int:
    count: int = await service.pool.fetchval(
        "SELECT count(*) FROM orders WHERE application_id = $1::uuid", app.id
    )
    return count


# ------------------------------------------------------------------------ keys and round trips


async def test_pay_with_keyword_fields_then_query_order_returns_the_same_order(
    connect: Connect, app: TestApp
):
    """A good key: pay(**fields) creates a pending order with a link; query_order returns it
    exactly; optional fields left unset come back unset."""
    client = connect(app.api_key)
    fields = pay_fields(tg_use_id=5151, amount=7)
    paid = await client.pay(**fields)

    assert paid.tg_payment_id > 0
    assert paid.tg_payment_url.startswith("https://t.me/$")
    assert paid.order.tg_payment_id == paid.tg_payment_id
    assert paid.order.tg_payment_url == paid.tg_payment_url
    assert paid.order.application_id == app.id
    assert (paid.order.tg_use_id, paid.order.amount) == (5151, 7)
    assert (paid.order.label, paid.order.title, paid.order.description) == (
        "item",
        "Book",
        "Magic book",
    )
    assert paid.order.state == payment_pb2.Order.PENDING
    assert (paid.order.status, paid.order.status_description) == (0, "pending")
    assert paid.order.payload == ""
    assert [f for f in OPTIONAL_ORDER_FIELDS if paid.order.HasField(f)] == []

    queried = await client.query_order(paid.tg_payment_id)
    assert queried == paid.order


async def test_pay_with_a_pay_request_keeps_its_optional_fields(connect: Connect, app: TestApp):
    """A good key: pay(PayRequest(...)) works too, and optional fields that were set come back set,
    on Pay's answer and on QueryOrder's."""
    client = connect(app.api_key)
    request = pay_request(
        tg_use_id=5252,
        payload='{"sku": 1}',
        photo_url="https://example.com/book.png",
        photo_size=1000,
        photo_width=64,
        photo_height=0,
        callback_url="https://example.com/hook",
    )
    paid = await client.pay(request)
    queried = await client.query_order(paid.tg_payment_id)

    for order in (paid.order, queried):
        assert order.payload == '{"sku": 1}'
        assert [f for f in OPTIONAL_ORDER_FIELDS if order.HasField(f)] == list(
            OPTIONAL_ORDER_FIELDS
        )
        assert (
            order.photo_url,
            order.photo_size,
            order.photo_width,
            order.photo_height,
            order.callback_url,
        ) == ("https://example.com/book.png", 1000, 64, 0, "https://example.com/hook")
    assert queried == paid.order


async def test_resume_payment_returns_the_users_most_recent_payable_order(
    connect: Connect, app: TestApp
):
    """A good key: resume_payment finds the user's newest pending order; a user without one gets
    has_pending_payment false and nothing else."""
    client = connect(app.api_key)
    await client.pay(**pay_fields(tg_use_id=5353))
    newest = await client.pay(pay_request(tg_use_id=5353))

    resumed = await client.resume_payment(5353)
    assert resumed.has_pending_payment is True
    assert resumed.tg_payment_id == newest.tg_payment_id
    assert resumed.tg_payment_url == newest.tg_payment_url
    assert resumed.order == newest.order

    nothing = await client.resume_payment(5354)
    assert nothing == payment_pb2.ResumePaymentResponse(has_pending_payment=False)


async def test_a_wrong_key_raises_unauthenticated_on_every_method(connect: Connect, app: TestApp):
    """A wrong API key fails every RPC with UNAUTHENTICATED and reason UNAUTHENTICATED."""
    good = connect(app.api_key)
    paid = await good.pay(**pay_fields())
    client = connect("pk_wrong_" + uuid.uuid4().hex, retry=FAST_RETRY)
    calls = {
        "Pay": client.pay(**pay_fields()),
        "QueryOrder": client.query_order(paid.tg_payment_id),
        "ResumePayment": client.resume_payment(4242),
    }
    seen = {}
    for name, call in calls.items():
        with pytest.raises(PortexPayError) as raised:
            await call
        seen[name] = (raised.value.code, raised.value.reason)
    assert seen == dict.fromkeys(calls, (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"))


# --------------------------------------------------------------------------------- rich errors


async def test_bad_pay_fields_raise_invalid_argument_naming_exactly_the_bad_fields(
    connect: Connect, app: TestApp
):
    """INVALID_ARGUMENT from the real server parses into reason INVALID_ARGUMENT and one field
    violation per bad field, keyed by the field's name."""
    client = connect(app.api_key)
    with pytest.raises(PortexPayError) as raised:
        await client.pay(
            **pay_fields(tg_use_id=0, amount=-1, title="", photo_url="ftp://x", photo_size=-5)
        )
    error = raised.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_ARGUMENT"
    assert set(error.field_violations) == {
        "tg_use_id",
        "amount",
        "title",
        "photo_url",
        "photo_size",
    }
    assert all(error.field_violations.values())
    assert error.retry_after is None


async def test_a_reused_request_id_with_other_fields_raises_already_exists(
    connect: Connect, app: TestApp
):
    """The same request_id with a different amount fails with ALREADY_EXISTS and reason
    IDEMPOTENCY_KEY_REUSED, while the same fields again return the first order."""
    client = connect(app.api_key)
    fields = pay_fields(amount=5)
    first = await client.pay(**fields)
    again = await client.pay(**fields)
    assert again.tg_payment_id == first.tg_payment_id

    with pytest.raises(PortexPayError) as raised:
        await client.pay(**{**fields, "amount": 6})
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "IDEMPOTENCY_KEY_REUSED",
    )
    assert raised.value.field_violations == {}


async def test_another_applications_order_raises_not_found(connect: Connect, make_app: Any):
    """QueryOrder of an order that belongs to another application fails with NOT_FOUND (reason
    ORDER_NOT_FOUND), exactly as for an order that does not exist."""
    owner: TestApp = await make_app()
    other: TestApp = await make_app()
    paid = await connect(owner.api_key).pay(**pay_fields())
    assert (await connect(owner.api_key).query_order(paid.tg_payment_id)) == paid.order

    stranger = connect(other.api_key)
    with pytest.raises(PortexPayError) as raised:
        await stranger.query_order(paid.tg_payment_id)
    with pytest.raises(PortexPayError) as missing:
        await stranger.query_order(2**62)
    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "ORDER_NOT_FOUND",
    )
    assert (missing.value.code, missing.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "ORDER_NOT_FOUND",
    )


async def test_telegram_rate_limit_raises_resource_exhausted_with_retry_after(
    connect: Connect, app: TestApp, fake_telegram: FakeBotApi
):
    """Telegram's 429 with retry_after=7 reaches the client as RESOURCE_EXHAUSTED with
    retry_after == 7 s (from RetryInfo), and is not retried."""
    fake_telegram.fail_next(
        "createInvoiceLink",
        error_code=429,
        description="Too Many Requests: retry after 7",
        retry_after=7,
        token=app.bot_token,
    )
    client = connect(app.api_key, retry=FAST_RETRY)
    with pytest.raises(PortexPayError) as raised:
        await client.pay(**pay_fields())
    error = raised.value
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.reason == "TELEGRAM_RATE_LIMITED"
    assert error.retry_after == 7.0
    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 1


# ---------------------------------------------------------------------- retries on UNAVAILABLE


async def test_pay_with_request_id_is_retried_on_unavailable_and_makes_one_order(
    connect: Connect, app: TestApp, fake_telegram: FakeBotApi, service: PortexApp
):
    """Telegram answers 502 once, the server UNAVAILABLE: the client repeats a Pay that has a
    request_id, the server creates the invoice on the second attempt, and there is one order."""
    fake_telegram.fail_next(
        "createInvoiceLink", error_code=502, description="Bad Gateway", token=app.bot_token
    )
    client = connect(app.api_key, retry=FAST_RETRY)
    paid = await client.pay(**pay_fields(tg_use_id=6161))

    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 2
    assert paid.order.state == payment_pb2.Order.PENDING
    assert paid.tg_payment_url.startswith("https://t.me/$")
    assert await count_orders(service, app) == 1
    assert (await client.resume_payment(6161)).tg_payment_id == paid.tg_payment_id


async def test_pay_without_request_id_gets_one_from_the_client_and_makes_one_order(
    connect: Connect, app: TestApp, fake_telegram: FakeBotApi, service: PortexApp
):
    """Telegram answers 502 once, the server UNAVAILABLE: a Pay the caller sent without a
    request_id carries one the client made, so gRPC repeats it and there is still one order."""
    fake_telegram.fail_next(
        "createInvoiceLink", error_code=502, description="Bad Gateway", token=app.bot_token
    )
    client = connect(app.api_key, retry=FAST_RETRY)
    paid = await client.pay(**pay_fields(request_id="", tg_use_id=6262))

    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 2
    assert await count_orders(service, app) == 1
    assert (await client.resume_payment(6262)).tg_payment_id == paid.tg_payment_id


async def _wait_for_state(
    channel: grpc.aio.Channel, wanted: grpc.ChannelConnectivity, timeout: float = 10.0
) -> None:
    async with asyncio.timeout(timeout):
        state = channel.get_state()
        while state is not wanted:
            await channel.wait_for_state_change(state)
            state = channel.get_state()


async def test_calls_made_while_the_server_is_down_succeed_once_it_is_up(
    app: TestApp,
    service: PortexApp,
    database_url: str,
    fake_telegram: FakeBotApi,
    tmp_path: Path,
):
    """Both clients, with a policy that waits for the server (gRPC's wait-for-ready), keep
    QueryOrder waiting while nothing listens and get the order once a server process starts
    listening on that port, within the call's deadline."""
    async with AsyncPaymentClient(f"127.0.0.1:{service.grpc_port}", app.api_key) as seed:
        paid = await seed.pay(pay_request())

    port = free_port()
    target = f"127.0.0.1:{port}"
    # Not start_server(): the server must start only after the clients' first attempts failed.
    server = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "PORTEX_TELEGRAM_API_URL": fake_telegram.base_url,
            "PORTEX_GRPC_ADDR": target,
        },
        tmp_path / "server.log",
    )
    assert server.target == target

    patient = RetryPolicy(wait_for_ready=True)
    aio_client = AsyncPaymentClient(target, app.api_key, timeout=20, retry=patient)
    blocking_client = PaymentClient(target, app.api_key, timeout=20, retry=patient)
    blocking_failed = threading.Event()

    def on_state(state: grpc.ChannelConnectivity) -> None:
        if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            blocking_failed.set()

    blocking_client.channel.subscribe(on_state)
    async_call = asyncio.ensure_future(aio_client.query_order(paid.tg_payment_id))
    blocking_call = asyncio.ensure_future(
        asyncio.to_thread(blocking_client.query_order, paid.tg_payment_id)
    )
    try:
        # Both channels have tried to connect and failed: the first attempts met no server.
        await _wait_for_state(aio_client.channel, grpc.ChannelConnectivity.TRANSIENT_FAILURE)
        assert await asyncio.to_thread(blocking_failed.wait, 10)
        assert not async_call.done()
        assert not blocking_call.done()

        await server.start()
        async with asyncio.timeout(20):
            async_order, blocking_order = await asyncio.gather(async_call, blocking_call)
    finally:
        async_call.cancel()
        blocking_client.channel.unsubscribe(on_state)
        await aio_client.close()
        blocking_client.close()
        server.kill()

    assert async_order == paid.order
    assert blocking_order == paid.order


async def test_with_nothing_listening_the_default_policy_gives_up_with_unavailable_quickly(
    connect: Connect,
):
    """No server, the default policy (no wait-for-ready): the call fails with UNAVAILABLE in
    under 5 s, well before its 10 s deadline, rather than waiting out the deadline. (How many
    attempts gRPC made is not visible here.)"""
    client = connect("pk_any", target=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(PortexPayError) as raised:
        await client.query_order(1)
    elapsed = time.monotonic() - started

    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert elapsed < 5.0


# ---------------------------------------------------------------------------------- deadlines


async def test_a_per_call_timeout_against_slow_telegram_raises_deadline_exceeded(
    connect: Connect, app: TestApp, fake_telegram: FakeBotApi
):
    """Telegram holds createInvoiceLink for 2 s; pay(timeout=0.5) raises DEADLINE_EXCEEDED after
    about 0.5 s, not the client's default 10 s nor Telegram's 2 s."""
    fake_telegram.delay("createInvoiceLink", 2.0, times=1, token=app.bot_token)
    client = connect(app.api_key, retry=FAST_RETRY)
    assert client.timeout == 10.0

    started = time.monotonic()
    with pytest.raises(PortexPayError) as raised:
        await client.pay(**pay_fields(), timeout=0.5)
    elapsed = time.monotonic() - started

    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.45 <= elapsed < 1.5
    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 1


# ---------------------------------------------------------------------------- channel ownership


async def test_leaving_async_with_closes_the_channel(service: PortexApp, app: TestApp):
    """AsyncPaymentClient owns the channel it made: after `async with`, calls fail."""
    async with AsyncPaymentClient(f"127.0.0.1:{service.grpc_port}", app.api_key) as client:
        resumed = await client.resume_payment(7171)
    assert resumed.has_pending_payment is False
    with pytest.raises(grpc.aio.UsageError, match="Channel is closed"):
        await client.resume_payment(7171)


async def test_leaving_with_closes_the_channel(service: PortexApp, app: TestApp):
    """PaymentClient owns the channel it made: after `with`, calls fail."""

    def use_then_leave() -> tuple[payment_pb2.ResumePaymentResponse, BaseException]:
        with PaymentClient(f"127.0.0.1:{service.grpc_port}", app.api_key) as client:
            resumed = client.resume_payment(7172)
        try:
            client.resume_payment(7172)
        except BaseException as exc:  # returned for the assertions below
            return resumed, exc
        raise AssertionError("a call after `with` succeeded")

    resumed, error = await asyncio.to_thread(use_then_leave)
    assert resumed.has_pending_payment is False
    assert isinstance(error, ValueError)
    assert str(error) == "Cannot invoke RPC on closed channel!"


async def test_async_from_channel_leaves_the_callers_channel_open(service: PortexApp, app: TestApp):
    """AsyncPaymentClient.from_channel does not close a channel it does not own; with
    close_channel=True it does."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
        async with AsyncPaymentClient.from_channel(channel, app.api_key) as client:
            await client.resume_payment(7173)
        again = AsyncPaymentClient.from_channel(channel, app.api_key)
        assert (await again.resume_payment(7173)).has_pending_payment is False

        owning = AsyncPaymentClient.from_channel(channel, app.api_key, close_channel=True)
        await owning.close()
        with pytest.raises(grpc.aio.UsageError, match="Channel is closed"):
            await again.resume_payment(7173)


async def test_blocking_from_channel_leaves_the_callers_channel_open(
    service: PortexApp, app: TestApp
):
    """PaymentClient.from_channel does not close a channel it does not own; with
    close_channel=True it does."""

    def run() -> tuple[bool, BaseException]:
        with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            with PaymentClient.from_channel(channel, app.api_key) as client:
                client.resume_payment(7174)
            again = PaymentClient.from_channel(channel, app.api_key)
            pending = again.resume_payment(7174).has_pending_payment
            PaymentClient.from_channel(channel, app.api_key, close_channel=True).close()
            try:
                again.resume_payment(7174)
            except BaseException as exc:  # returned for the assertions below
                return pending, exc
            raise AssertionError("a call after close_channel=True close() succeeded")

    pending, error = await asyncio.to_thread(run)
    assert pending is False
    assert isinstance(error, ValueError)
    assert str(error) == "Cannot invoke RPC on closed channel!"


# ------------------------------------------------------------- refunds, cancel, report, events


@pytest.fixture
async def shop(make_app: Any) -> TestApp:
    """An application whose bot's updates reach the in-process server by webhook, so that its
    orders can be paid."""
    created: TestApp = await make_app(updates="webhook")
    return created


async def test_refund_payment_refunds_a_paid_order_once_and_a_repeat_returns_that_refund(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi
):
    """refund_payment (with a reason) records the refund of the order's charge, the worker
    refunds it at Telegram once, the order becomes REFUNDED; asking again returns the same,
    now succeeded, refund. An unpaid order cannot be refunded (FAILED_PRECONDITION)."""
    client = connect(shop.api_key)
    paid, charge_id = await paid_order(client, shop, fake_telegram, tg_use_id=8181, amount=9)

    first = await client.call(
        "refund_payment",
        paid.tg_payment_id,
        reason_code="REQUESTED_BY_CUSTOMER",
        reason_text="changed their mind",
    )
    assert (first.refund.tg_payment_id, first.refund.telegram_payment_charge_id) == (
        paid.tg_payment_id,
        charge_id,
    )
    assert first.refund.amount == 9
    assert first.order.tg_payment_id == paid.tg_payment_id

    async def state() -> int:
        return (await client.query_order(paid.tg_payment_id)).state

    await eventually(state, equals=payment_pb2.Order.REFUNDED)
    request = payment_pb2.RefundPaymentRequest(tg_payment_id=paid.tg_payment_id)
    again = await client.call("refund_payment", request)
    assert again.refund.state == payment_pb2.Refund.SUCCEEDED
    assert again.refund.telegram_payment_charge_id == charge_id
    assert (again.order.state, again.order.status) == (payment_pb2.Order.REFUNDED, 5)
    assert len(fake_telegram.calls_for("refundStarPayment", token=shop.bot_token)) == 1

    unpaid = await client.pay(**pay_fields(tg_use_id=8181))
    error = await failure(client.call("refund_payment", unpaid.tg_payment_id))
    assert code_and_reason(error) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ILLEGAL_STATE_TRANSITION",
    )


async def test_cancel_order_withdraws_an_unpaid_order_and_refuses_a_paid_one(
    connect: Connect, shop: TestApp, fake_telegram: FakeBotApi, make_app: Any
):
    """cancel_order makes a pending order CANCELLED (status 2), a second cancel changes nothing,
    a paid order answers FAILED_PRECONDITION and another application's order NOT_FOUND."""
    client = connect(shop.api_key)
    pending = await client.pay(**pay_fields(tg_use_id=8282))

    cancelled = await client.call("cancel_order", pending.tg_payment_id)
    assert (cancelled.state, cancelled.status, cancelled.status_description) == (
        payment_pb2.Order.CANCELLED,
        2,
        "cancelled",
    )
    request = payment_pb2.CancelOrderRequest(tg_payment_id=pending.tg_payment_id)
    again = await client.call("cancel_order", request)
    assert again == cancelled
    assert await client.query_order(pending.tg_payment_id) == cancelled

    paid, _ = await paid_order(client, shop, fake_telegram, tg_use_id=8282)
    error = await failure(client.call("cancel_order", paid.tg_payment_id))
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert (await client.query_order(paid.tg_payment_id)).state == payment_pb2.Order.PAID

    other: TestApp = await make_app()
    stranger = connect(other.api_key)
    error = await failure(stranger.call("cancel_order", paid.tg_payment_id))
    assert code_and_reason(error) == (grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND")


async def test_report_invoice_closed_records_the_report_and_never_changes_the_state(
    connect: Connect, app: TestApp
):
    """report_invoice_closed stores the Mini App's report on the order (client_report) and
    leaves it PENDING; a status the SDK never sends answers INVALID_ARGUMENT."""
    client = connect(app.api_key)
    paid = await client.pay(**pay_fields(tg_use_id=8383))

    reported = await client.call("report_invoice_closed", paid.tg_payment_id, "cancelled")
    assert (reported.order.state, reported.order.client_report) == (
        payment_pb2.Order.PENDING,
        "cancelled",
    )
    assert (await client.query_order(paid.tg_payment_id)).client_report == "cancelled"
    error = await failure(client.call("report_invoice_closed", paid.tg_payment_id, "ok"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_event_pages_and_the_event_iterator_visit_every_event_once_in_order(
    connect: Connect, app: TestApp
):
    """list_events_pages with page_size 2 reads a user's events page after page until the
    newest, each exactly once and in stream order; iter_events yields the same events; a
    single list_events page equals the first page."""
    client = connect(app.api_key)
    user = 8484
    created = [await client.pay(**pay_fields(tg_use_id=user)) for _ in range(3)]
    await client.call("cancel_order", created[0].tg_payment_id)

    whole = await client.call("list_events", tg_use_id=user, page_size=1000)
    assert whole.next_page_token == ""
    expected = [event.event_id for event in whole.events]
    # Each order: created and invoice_created; the first one cancelled too.
    assert len(expected) == 7
    assert len(set(expected)) == 7

    pages = await client.collect("list_events_pages", tg_use_id=user, page_size=2)
    assert [len(page.events) for page in pages[:3]] == [2, 2, 2]
    assert all(page.next_page_token for page in pages[:-1])
    assert pages[-1].next_page_token == ""
    assert [event.event_id for page in pages for event in page.events] == expected

    iterated = await client.collect("iter_events", tg_use_id=user, page_size=2)
    assert [event.event_id for event in iterated] == expected
    first = await client.call("list_events", tg_use_id=user, page_size=2)
    assert first == pages[0]
    cancelled = await client.collect("iter_events", tg_use_id=user, types=["order.cancelled"])
    assert [(e.type, e.order.tg_payment_id) for e in cancelled] == [
        ("order.cancelled", created[0].tg_payment_id)
    ]


async def test_a_page_iterator_raises_the_servers_error_where_it_reaches_it(
    connect: Connect, app: TestApp
):
    """A page iterator with a bad page size raises INVALID_ARGUMENT naming page_size from the
    iteration; the request it was given is left as it was."""
    client = connect(app.api_key)
    request = payment_pb2.ListEventsRequest(page_size=5000)
    error = await failure(client.collect("list_events_pages", request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"page_size"}
    assert request == payment_pb2.ListEventsRequest(page_size=5000)


# ---------------------------------------------------------------- catalog, users, bot messages


async def test_the_catalog_is_set_listed_and_deleted_per_application(
    connect: Connect, app: TestApp, make_app: Any
):
    """set_catalog_item adds (by keywords or a CatalogItem) and replaces by key,
    list_catalog_items lists by key, delete_catalog_item removes once (then deleted is false); a
    bad item names its fields; another application sees none of it."""
    client = connect(app.api_key)
    sword = await client.call("set_catalog_item", key="sword", amount=25, title="Sword")
    assert (sword.key, sword.amount, sword.title) == ("sword", 25, "Sword")
    axe = payment_pb2.CatalogItem(key="axe", amount=7, description="Heavy")
    assert await client.call("set_catalog_item", axe) == axe
    replaced = await client.call("set_catalog_item", key="sword", amount=30)
    assert replaced.amount == 30 and not replaced.HasField("title")

    listed = await client.call("list_catalog_items")
    assert [(item.key, item.amount) for item in listed.items] == [("axe", 7), ("sword", 30)]

    error = await failure(client.call("set_catalog_item", key="bad", amount=0, title=""))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"item.amount", "item.title"}

    other: TestApp = await make_app()
    stranger = connect(other.api_key)
    assert list((await stranger.call("list_catalog_items")).items) == []
    assert (await stranger.call("delete_catalog_item", "sword")).deleted is False

    assert (await client.call("delete_catalog_item", "sword")).deleted is True
    assert (await client.call("delete_catalog_item", "sword")).deleted is False
    assert [item.key for item in (await client.call("list_catalog_items")).items] == ["axe"]


async def test_get_telegram_user_finds_a_user_the_mini_app_saved_for_that_application_only(
    connect: Connect, app: TestApp, make_app: Any, service: PortexApp
):
    """A user unknown to the application is NOT_FOUND (USER_NOT_FOUND); once its Mini App's
    init() saved them (POST /v1/saveTgUser with signed initData), get_telegram_user returns
    them; another application still gets NOT_FOUND."""
    client = connect(app.api_key)
    user = 8585
    error = await failure(client.call("get_telegram_user", user))
    assert code_and_reason(error) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")

    init_data = sign_init_data(
        init_data_fields(
            {"id": user, "first_name": "Ada", "username": "ada", "language_code": "en"},
            auth_date=datetime.now(UTC),
        ),
        bot_token=app.bot_token,
    )
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{service.http_port}/v1/saveTgUser",
            headers={"X-App-Id": app.id, "X-Tg-InitData": init_data},
        ) as response,
    ):
        assert response.status == 200, await response.text()

    request = payment_pb2.GetTelegramUserRequest(tg_use_id=user)
    found = await client.call("get_telegram_user", request)
    assert (found.id, found.first_name, found.username, found.language_code) == (
        user,
        "Ada",
        "ada",
        "en",
    )
    assert not found.HasField("last_name")
    other: TestApp = await make_app()
    error = await failure(connect(other.api_key).call("get_telegram_user", user))
    assert code_and_reason(error) == (grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND")


async def test_bot_messages_are_read_and_changed_field_by_field(connect: Connect, app: TestApp):
    """get_bot_messages starts from the defaults; set_bot_messages changes only the fields
    given, an empty text resets one; a change of nothing is INVALID_ARGUMENT."""
    client = connect(app.api_key)
    defaults = await client.call("get_bot_messages")
    assert defaults.support_text_default and defaults.terms_text_default
    assert not defaults.buyer_messages

    changed = await client.call(
        "set_bot_messages", support_text="Mail help@example.com", buyer_messages=True
    )
    assert (changed.support_text, changed.support_text_default) == ("Mail help@example.com", False)
    assert changed.buyer_messages is True
    assert (changed.terms_text, changed.terms_text_default) == (defaults.terms_text, True)
    assert await client.call("get_bot_messages") == changed

    reset = await client.call(
        "set_bot_messages", payment_pb2.SetBotMessagesRequest(support_text="")
    )
    assert (reset.support_text, reset.support_text_default) == (defaults.support_text, True)
    error = await failure(client.call("set_bot_messages"))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_wrong_key_raises_unauthenticated_on_the_other_methods(
    connect: Connect, app: TestApp
):
    """A wrong API key fails every RPC the server had before issue 18 with UNAUTHENTICATED."""
    client = connect("pk_wrong_" + uuid.uuid4().hex, retry=FAST_RETRY)
    calls = {
        "RefundPayment": client.call("refund_payment", 1),
        "CancelOrder": client.call("cancel_order", 1),
        "ReportInvoiceClosed": client.call("report_invoice_closed", 1, "paid"),
        "ListEvents": client.call("list_events"),
        "ListEvents pages": client.collect("list_events_pages"),
        "SetCatalogItem": client.call("set_catalog_item", key="k", amount=1),
        "DeleteCatalogItem": client.call("delete_catalog_item", "k"),
        "ListCatalogItems": client.call("list_catalog_items"),
        "GetTelegramUser": client.call("get_telegram_user", 1),
        "GetBotMessages": client.call("get_bot_messages"),
        "SetBotMessages": client.call("set_bot_messages", buyer_messages=True),
    }
    seen = {name: code_and_reason(await failure(call)) for name, call in calls.items()}
    assert seen == dict.fromkeys(calls, (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"))


# ------------------------------------------------------------------------- portex-pay-orders


async def test_the_orders_command_prints_one_order_as_json_and_says_why_it_cannot(
    service: PortexApp, app: TestApp, stub: Any
):
    """`portex-pay-orders get ID` prints the order as QueryOrder answers it, in the protobuf JSON
    mapping, and exits 0; a missing order exits 1 naming NOT_FOUND; no key, no id, or an id with
    --charge are usage errors (exit 2)."""
    target = f"127.0.0.1:{service.grpc_port}"
    paid = await stub.Pay(pay_request(tg_use_id=8686), metadata=app.metadata)
    code, printed, err = await orders_cli(target, app.api_key, "get", str(paid.tg_payment_id))
    assert (code, err) == (0, "")
    assert printed == [MessageToDict(paid.order)]
    assert printed[0]["tgPaymentId"] == str(paid.tg_payment_id)

    code, printed, err = await orders_cli(target, app.api_key, "get", str(2**62))
    assert (code, printed) == (1, [])
    assert err.startswith("portex-pay-orders: NOT_FOUND: ")
    assert "(reason=ORDER_NOT_FOUND)" in err
    for key, args, problem in (
        (None, ["get", "1"], "an API key is needed"),
        (app.api_key, ["get"], "one of the arguments tg_payment_id --charge is required"),
        (app.api_key, ["get", "1", "--charge", "stx1"], "not allowed with argument"),
        (app.api_key, ["get", "0"], "must be positive: 0"),
    ):
        code, printed, err = await orders_cli(target, key, *args)
        assert (code, printed) == (2, []), args
        assert err.startswith("usage: portex-pay-orders")
        assert problem in err
