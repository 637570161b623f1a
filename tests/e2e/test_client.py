"""The Python client package (portex_pay_client) against a real server.

Both clients are driven from async tests: `AsyncPaymentClient` directly, the blocking
`PaymentClient` in a worker thread (`asyncio.to_thread`), so that the event loop running the
in-process server and the fake Bot API keeps answering. Most tests use the in-process server;
the server-down-then-up test starts a real `portex-pay serve` process on a port chosen up front.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Literal

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay_client import (
    AsyncPaymentClient,
    Order,
    PaymentClient,
    PayRequest,
    PayResponse,
    PortexPayError,
    ResumePaymentResponse,
    RetryPolicy,
)
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, free_port
from tests.e2e.conftest import ServerProcess
from tests.integration.helpers import pay_fields, pay_request

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


class Client:
    """One of the two clients behind awaitable methods; the blocking one runs in a worker thread."""

    def __init__(self, kind: str, target: str, api_key: str, **options: Any) -> None:
        self.kind = kind
        self.aio: AsyncPaymentClient | None = None
        self.blocking: PaymentClient | None = None
        if kind == "async":
            self.aio = AsyncPaymentClient(target, api_key, **options)
        else:
            self.blocking = PaymentClient(target, api_key, **options)

    @property
    def timeout(self) -> float:
        client = self.aio or self.blocking
        assert client is not None
        return client.timeout

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.aio is not None:
            return await getattr(self.aio, method)(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.blocking, method), *args, **kwargs)

    async def pay(self, request: PayRequest | None = None, **kwargs: Any) -> PayResponse:
        response: PayResponse = await self._call("pay", request, **kwargs)
        return response

    async def query_order(self, tg_payment_id: int, **kwargs: Any) -> Order:
        order: Order = await self._call("query_order", tg_payment_id, **kwargs)
        return order

    async def resume_payment(self, tg_use_id: int, **kwargs: Any) -> ResumePaymentResponse:
        response: ResumePaymentResponse = await self._call("resume_payment", tg_use_id, **kwargs)
        return response

    async def close(self) -> None:
        if self.aio is not None:
            await self.aio.close()
        if self.blocking is not None:
            self.blocking.close()


Connect = Callable[..., Client]


@pytest.fixture(params=["async", "blocking"])
async def connect(request: pytest.FixtureRequest, service: PortexApp) -> AsyncIterator[Connect]:
    """Opens clients of one kind (each test runs with both), to the in-process server by default."""
    opened: list[Client] = []

    def open_client(api_key: str, *, target: str | None = None, **options: Any) -> Client:
        client = Client(
            request.param, target or f"127.0.0.1:{service.grpc_port}", api_key, **options
        )
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


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


async def test_pay_without_request_id_is_sent_once_on_unavailable(
    connect: Connect, app: TestApp, fake_telegram: FakeBotApi, service: PortexApp
):
    """Telegram answers 502 once, the server UNAVAILABLE: a Pay without request_id is not
    repeated (it would create a second order), so the caller gets UNAVAILABLE."""
    fake_telegram.fail_next(
        "createInvoiceLink", error_code=502, description="Bad Gateway", token=app.bot_token
    )
    client = connect(app.api_key, retry=FAST_RETRY)
    with pytest.raises(PortexPayError) as raised:
        await client.pay(**pay_fields(request_id=""))

    assert (raised.value.code, raised.value.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "TELEGRAM_UNAVAILABLE",
    )
    assert len(fake_telegram.calls_for("createInvoiceLink", token=app.bot_token)) == 1
    assert await count_orders(service, app) == 1


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
    """Both clients keep retrying QueryOrder (UNAVAILABLE: nothing listens) and get the order
    once a server process starts listening on that port."""
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

    patient = RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.2)
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
    """No server: the default policy makes its 4 attempts (3 waits of at least 0.08 + 0.16 +
    0.32 s) and then raises UNAVAILABLE, well within 3 s."""
    client = connect("pk_any", target=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(PortexPayError) as raised:
        await client.query_order(1)
    elapsed = time.monotonic() - started

    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    # At least 0.5 s is only possible with three waits (two take at most 0.1 + 0.2 s).
    assert 0.5 <= elapsed < 3.0


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
