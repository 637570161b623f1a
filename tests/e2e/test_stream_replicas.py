"""The event stream across server processes on one database."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.e2e.conftest import ServerFactory
from tests.integration.helpers import pay_request

USER = 7171


async def _read_until(
    call: Any, count: int, timeout: float = 15.0
) -> list[payment_pb2.InvoiceEvent]:
    events: list[payment_pb2.InvoiceEvent] = []
    async with asyncio.timeout(timeout):
        async for message in call:
            if not message.heartbeat:
                events.append(message)
            if len(events) == count:
                return events
    return events


async def test_a_payment_through_one_replica_reaches_a_subscriber_on_another(
    start_server: ServerFactory, make_app, fake_telegram: FakeBotApi
):
    app: TestApp = await make_app(updates="webhook")
    first, second = await start_server(), await start_server()
    async with (
        grpc.aio.insecure_channel(first.target) as channel_a,
        grpc.aio.insecure_channel(second.target) as channel_b,
    ):
        watching = payment_pb2_grpc.PaymentServiceStub(channel_a).StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(types=["order.paid"]), metadata=app.metadata
        )
        await watching.initial_metadata()
        paid = await payment_pb2_grpc.PaymentServiceStub(channel_b).Pay(
            pay_request(tg_use_id=USER), metadata=app.metadata
        )
        started = time.monotonic()
        assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
        [event] = await _read_until(watching, 1)
        latency = time.monotonic() - started
        watching.cancel()
    assert (event.type, event.order.tg_payment_id, event.order.status) == (
        "order.paid",
        paid.tg_payment_id,
        1,
    )
    assert (event.invoice_closed.order_id, event.invoice_closed.status) == (
        paid.tg_payment_id,
        "paid",
    )
    assert latency < 5  # measured properly by `make bench`


async def test_resuming_on_another_replica_after_a_kill_yields_exactly_the_missed_events(
    start_server: ServerFactory, app: TestApp, stub
):
    first, second = await start_server(), await start_server()
    request = payment_pb2.StreamInvoiceEventsRequest()
    async with grpc.aio.insecure_channel(first.target) as channel:
        call = payment_pb2_grpc.PaymentServiceStub(channel).StreamInvoiceEvents(
            request, metadata=app.metadata
        )
        await call.initial_metadata()
        await stub.Pay(pay_request(), metadata=app.metadata)  # 2 events
        seen = await _read_until(call, 2)
        first.signal(signal.SIGKILL)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _read_until(call, 1, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    # Meanwhile, more happens.
    for _ in range(2):
        await stub.Pay(pay_request(), metadata=app.metadata)
    async with grpc.aio.insecure_channel(second.target) as channel:
        resumed = payment_pb2_grpc.PaymentServiceStub(channel).StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(after_cursor=seen[-1].cursor),
            metadata=app.metadata,
        )
        missed = await _read_until(resumed, 4)
        resumed.cancel()
    listed = await stub.ListEvents(
        payment_pb2.ListEventsRequest(start=payment_pb2.RETENTION_START), metadata=app.metadata
    )
    assert [e.event_id for e in seen + missed] == [e.event_id for e in listed.events]


async def test_sigterm_ends_open_streams_at_once_with_unavailable(
    start_server: ServerFactory, app: TestApp
):
    server = await start_server(PORTEX_SHUTDOWN_GRACE="30")
    async with grpc.aio.insecure_channel(server.target) as channel:
        call = payment_pb2_grpc.PaymentServiceStub(channel).StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(), metadata=app.metadata
        )
        await call.initial_metadata()
        started = time.monotonic()
        server.signal()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _read_until(call, 1, timeout=10)
        ended_after = time.monotonic() - started
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended_after < 5  # not the 30 s grace period
    assert await server.wait_exit() == 0
