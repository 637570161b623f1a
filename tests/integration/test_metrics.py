"""Prometheus metrics: `/metrics` on PORTEX_METRICS_ADDR, scraped over real HTTP after real calls
(gRPC with OK and error codes, a stream, a payment and a refund through the fake Bot API, the edge
and the Bot API proxy) and parsed with prometheus-client's own parser.

The service here is a server of this module's own, so that every count is exactly the calls made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.telegram.client import BotApiClient
from portex_pay.app import PortexApp, application_admin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, TestApp, create_test_app, make_settings
from tests.integration.helpers import eventually, pay_request

USER = 5151
SERVICE = "portex.payment.v1.PaymentService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
async def measured(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    settings = make_settings(
        database_url,
        fake_telegram.base_url,
        metrics_addr="127.0.0.1:0",
        metrics_interval=0.05,
        refund_interval=0.05,
    )
    app = PortexApp(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.fixture(scope="module")
async def shop(measured: PortexApp, fake_telegram: FakeBotApi) -> TestApp:
    async with aiohttp.ClientSession() as session:
        admin = application_admin(
            measured.pool, BotApiClient(session, fake_telegram.base_url, 5), data_keys=DATA_KEYS
        )
        return await create_test_app(
            admin,
            fake_telegram,
            updates="webhook",
            public_url=f"http://127.0.0.1:{measured.http_port}",
        )


async def scrape(app: PortexApp) -> tuple[str, Samples]:
    """The metrics text, and every sample in it by name and labels."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{app.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def rpc(method: str, grpc_type: str = "unary", **more: str) -> dict[str, str]:
    return {"grpc_type": grpc_type, "grpc_service": SERVICE, "grpc_method": method, **more}


async def test_metrics_after_real_calls_count_each_rpc_code_payment_refund_and_route(
    measured: PortexApp, shop: TestApp, fake_telegram: FakeBotApi
) -> None:
    """After two QueryOrders that succeed, one NOT_FOUND, one UNAUTHENTICATED, a Pay, a payment
    through the fake Bot API, a refund, a stream, an edge and a proxy call, one scrape holds the
    grpc-ecosystem series with exactly those counts and the service's own series."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{measured.grpc_port}") as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
        outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
        assert outcome.approved
        await fake_telegram.drain(shop.bot_token)
        found = payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id)
        for _ in range(2):
            await stub.QueryOrder(found, metadata=shop.metadata)
        missing = payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id + 10**9)
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await stub.QueryOrder(missing, metadata=shop.metadata)
        assert not_found.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await stub.QueryOrder(found, metadata=(("authorization", "Bearer nope"),))
        assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED
        await stub.RefundPayment(
            payment_pb2.RefundPaymentRequest(tg_payment_id=paid.tg_payment_id),
            metadata=shop.metadata,
        )
        await _read_one_event_while_sampled(measured, stub, shop)

    async with aiohttp.ClientSession() as session:
        base = f"http://127.0.0.1:{measured.http_port}"
        async with session.post(f"{base}/v1/no-such-endpoint", json={}) as edge:
            edge_status = edge.status
        async with session.get(f"{base}/bot{shop.bot_token}/getMe") as proxied:
            assert proxied.status == 200

    async def refunded() -> float | None:
        return value((await scrape(measured))[1], "portex_refunds_total", outcome="succeeded")

    await eventually(refunded, equals=1.0, what="the refund counted")
    text, samples = await scrape(measured)

    assert value(samples, "grpc_server_started_total", **rpc("QueryOrder")) == 4
    assert value(samples, "grpc_server_msg_received_total", **rpc("QueryOrder")) == 4
    assert value(samples, "grpc_server_msg_sent_total", **rpc("QueryOrder")) == 2
    handled = "grpc_server_handled_total"
    assert value(samples, handled, **rpc("QueryOrder", grpc_code="OK")) == 2
    assert value(samples, handled, **rpc("QueryOrder", grpc_code="NotFound")) == 1
    assert value(samples, handled, **rpc("QueryOrder", grpc_code="Unauthenticated")) == 1
    assert value(samples, "grpc_server_handling_seconds_count", **rpc("QueryOrder")) == 4
    assert value(samples, "grpc_server_handling_seconds_bucket", **rpc("QueryOrder", le="+Inf"))
    for method in ("Pay", "RefundPayment"):
        assert value(samples, "grpc_server_started_total", **rpc(method)) == 1
        assert value(samples, handled, **rpc(method, grpc_code="OK")) == 1
    stream = rpc("StreamInvoiceEvents", "server_stream")
    assert value(samples, "grpc_server_started_total", **stream) == 1
    assert value(samples, "grpc_server_msg_received_total", **stream) == 1
    assert (value(samples, "grpc_server_msg_sent_total", **stream) or 0) >= 1
    assert value(samples, handled, **stream, grpc_code="Canceled") == 1

    assert value(samples, "portex_payments_total", outcome="accepted") == 1
    assert value(samples, "portex_pre_checkout_answer_seconds_count", decision="ok") == 1
    telegram = "portex_telegram_requests_total"
    for method in ("createInvoiceLink", "answerPreCheckoutQuery", "refundStarPayment"):
        assert value(samples, telegram, method=method, result="ok") == 1
    webhook = "/telegram/webhook/{application_id}"
    assert (value(samples, "portex_http_requests_total", route=webhook, status="200") or 0) >= 2
    edge_route = {"route": "/v1/{tail}", "status": str(edge_status)}
    assert value(samples, "portex_http_requests_total", **edge_route) == 1
    proxy_route = {"route": "/bot{token}/{method}", "status": "200"}
    assert value(samples, "portex_http_requests_total", **proxy_route) == 1
    assert shop.bot_token not in text and shop.bot_token.split(":")[1] not in text

    for outbox in ("refunds", "callbacks", "relay"):
        assert value(samples, "portex_outbox_depth", outbox=outbox) is not None
        assert value(samples, "portex_outbox_oldest_age_seconds", outbox=outbox) is not None
    assert (value(samples, "portex_db_pool_connections") or 0) >= 1
    assert value(samples, "portex_db_pool_connections_in_use") is not None


async def _read_one_event_while_sampled(app: PortexApp, stub: Any, shop: TestApp) -> None:
    """Opens a stream, reads its first event, and holds it open until a sample counts it as a
    subscriber; then cancels it (CANCELLED on the server)."""
    call = stub.StreamInvoiceEvents(
        payment_pb2.StreamInvoiceEventsRequest(start=payment_pb2.RETENTION_START),
        metadata=shop.metadata,
        timeout=10,
    )
    try:
        async for message in call:
            if not message.heartbeat:
                break

        async def subscribers() -> float | None:
            return value((await scrape(app))[1], "portex_stream_subscribers")

        await eventually(subscribers, equals=1.0, what="the stream's subscriber sampled")
    finally:
        call.cancel()

    async def cancelled() -> float | None:
        stream = rpc("StreamInvoiceEvents", "server_stream", grpc_code="Canceled")
        return value((await scrape(app))[1], "grpc_server_handled_total", **stream)

    await eventually(cancelled, equals=1.0, what="the cancelled stream counted")


async def test_a_refused_request_counts_as_invalid_argument(measured: PortexApp) -> None:
    """Bytes that are not the request message are INVALID_ARGUMENT, and counted as such."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{measured.grpc_port}") as channel:
        raw: Any = channel.unary_unary(f"/{SERVICE}/ListEvents")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await raw(b"\xff\xff\xff")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, samples = await scrape(measured)
    labels = rpc("ListEvents", grpc_code="InvalidArgument")
    assert value(samples, "grpc_server_handled_total", **labels) == 1
    assert value(samples, "grpc_server_started_total", **rpc("ListEvents")) == 1


async def test_metrics_have_their_own_port_and_the_http_port_has_no_metrics(
    measured: PortexApp,
) -> None:
    """The metrics listener is not the public HTTP one, which answers /metrics with 404; the
    metrics listener serves nothing but /metrics."""
    assert measured.metrics_port not in (None, measured.http_port, measured.grpc_port)
    async with aiohttp.ClientSession() as session:
        public = f"http://127.0.0.1:{measured.http_port}"
        async with session.get(f"{public}/metrics") as response:
            assert response.status == 404
        private = f"http://127.0.0.1:{measured.metrics_port}"
        async with session.get(f"{private}/healthz") as response:
            assert response.status == 404
    _, samples = await scrape(measured)
    unmatched = {"route": "unmatched", "status": "404"}
    assert (value(samples, "portex_http_requests_total", **unmatched) or 0) >= 1


async def test_the_outbox_gauges_follow_a_real_backlog(
    empty_db: str, fake_telegram: FakeBotApi
) -> None:
    """A database of its own, so the backlog is exactly this test's: an order whose callbacks
    cannot be delivered (no dispatcher runs here) shows as that many waiting callbacks, the
    oldest one's age growing; the other outboxes stay empty."""
    settings = make_settings(
        empty_db, fake_telegram.base_url, metrics_addr="127.0.0.1:0", metrics_interval=0.05
    )
    app = PortexApp(settings)
    await app.start()
    try:
        async with aiohttp.ClientSession() as session:
            admin = application_admin(
                app.pool, BotApiClient(session, fake_telegram.base_url, 5), data_keys=DATA_KEYS
            )
            own = await create_test_app(admin, fake_telegram)

        async def depth(outbox: str) -> float | None:
            return value((await scrape(app))[1], "portex_outbox_depth", outbox=outbox)

        await eventually(lambda: depth("callbacks"), equals=0.0, what="an empty outbox sampled")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            await stub.Pay(
                pay_request(callback_url="http://127.0.0.1:9/hook"),
                metadata=(("authorization", f"Bearer {own.api_key}"),),
            )
        waiting = await app.pool.fetchval(
            "SELECT count(*) FROM callback_deliveries WHERE state = 'pending'"
        )
        assert waiting >= 1  # the order's events, each a callback that cannot be delivered
        await eventually(
            lambda: depth("callbacks"), equals=float(waiting), what="the waiting callbacks"
        )

        async def age() -> bool:
            samples = (await scrape(app))[1]
            seconds = value(samples, "portex_outbox_oldest_age_seconds", outbox="callbacks")
            return seconds is not None and seconds > 0.2

        await eventually(age, what="the waiting callback's age growing")
        samples = (await scrape(app))[1]
        for outbox in ("refunds", "relay"):
            assert value(samples, "portex_outbox_depth", outbox=outbox) == 0
    finally:
        await app.stop()


async def test_with_metrics_off_nothing_is_recorded(service: PortexApp) -> None:
    """PORTEX_METRICS_ADDR unset (the default): no listener, and no series for the hot paths to
    count into either."""
    assert service.settings.metrics.addr == ""
    assert service.wiring.metrics is None and service.metrics_port is None
