"""Crashes: a server killed (SIGKILL) mid-work loses nothing. Each test runs its replicas on a
database of its own, so no other process can finish the work for them."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import asyncpg
import grpc

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, stored_secret
from tests.e2e.conftest import ServerFactory, ServerProcess
from tests.integration.helpers import eventually, pay_request

USER = 6161


async def _order(server: ServerProcess, app: TestApp, tg_payment_id: int) -> payment_pb2.Order:
    async with grpc.aio.insecure_channel(server.target) as channel:
        order: payment_pb2.Order = await payment_pb2_grpc.PaymentServiceStub(channel).QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=tg_payment_id), metadata=app.metadata
        )
        return order


async def test_a_refund_in_flight_when_its_server_is_killed_completes_after_restart(
    isolated, start_server: ServerFactory, fake_telegram: FakeBotApi
):
    dsn, create_app = isolated
    first = await start_server(DATABASE_URL=dsn, PORTEX_REFUND_LEASE="2")
    app = await create_app(updates="webhook", public_url=f"http://127.0.0.1:{first.http_port}")
    async with grpc.aio.insecure_channel(first.target) as channel:
        stub = payment_pb2_grpc.PaymentServiceStub(channel)
        paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=app.metadata)
        assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved
        await fake_telegram.drain(app.bot_token)
        # Telegram hangs on the refund: the call is in flight when the server dies.
        fake_telegram.delay("refundStarPayment", 30.0, times=1, token=app.bot_token)
        refund = await stub.RefundPayment(
            payment_pb2.RefundPaymentRequest(tg_payment_id=paid.tg_payment_id),
            metadata=app.metadata,
        )
        assert refund.refund.state == payment_pb2.Refund.PENDING
    await fake_telegram.wait_for_call("refundStarPayment", token=app.bot_token)
    first.signal(signal.SIGKILL)
    await first.wait_exit()

    second = await start_server(DATABASE_URL=dsn, PORTEX_REFUND_LEASE="2")

    async def refunded() -> bool:
        order = await _order(second, app, paid.tg_payment_id)
        return order.state == payment_pb2.Order.REFUNDED

    await eventually(refunded, timeout=15)
    calls = fake_telegram.calls_for("refundStarPayment", token=app.bot_token)
    assert len(calls) == 2  # the one that died with the first server, and the retry


async def test_a_killed_poller_is_replaced_once_its_lease_lapses(
    isolated, start_server: ServerFactory, fake_telegram: FakeBotApi
):
    dsn, create_app = isolated
    app = await create_app(updates="polling")
    bot_id = int(app.bot_token.split(":")[0])
    polling = {
        "DATABASE_URL": dsn,
        "PORTEX_TELEGRAM_POLLERS": "true",
        "PORTEX_POLL_LEASE": "2",
        "PORTEX_POLL_TIMEOUT": "1",
    }
    replicas = [await start_server(**polling), await start_server(**polling)]
    conn = await asyncpg.connect(dsn)
    try:

        async def owner() -> str | None:
            value: str | None = await conn.fetchval(
                "SELECT lease_owner FROM poll_state WHERE bot_id = $1 AND lease_until > now()",
                bot_id,
            )
            return value

        await eventually(owner, timeout=15)
        holder_pid = int(str(await owner()).split(":")[1])
        holder = next(r for r in replicas if r.process and r.process.pid == holder_pid)
        standby = next(r for r in replicas if r is not holder)

        def started_polling(server: ServerProcess) -> bool:
            return any(
                line.get("event") == "polling" and line.get("bot_id") == bot_id
                for line in server.log_lines()
            )

        assert started_polling(holder) and not started_polling(standby)
        holder.signal(signal.SIGKILL)  # no chance to release the lease
        await holder.wait_exit()

        async with grpc.aio.insecure_channel(standby.target) as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            paid = await stub.Pay(pay_request(tg_use_id=USER), metadata=app.metadata)
        # Queued at Telegram until the standby's lease begins; answered well inside 10 s.
        outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
        assert outcome.approved
        await fake_telegram.drain(app.bot_token)
        assert started_polling(standby)
        standby_pid = standby.process.pid if standby.process else None
        assert str(await owner()).split(":")[1] == str(standby_pid)
        assert (await _order(standby, app, paid.tg_payment_id)).state == payment_pb2.Order.PAID
    finally:
        await conn.close()


async def test_a_running_server_delivers_signed_callbacks_and_retries_failures(
    isolated, start_server: ServerFactory, fake_telegram: FakeBotApi
):
    from aiohttp import web

    from portex_pay.domain.callbacks import verify_callback

    dsn, create_app = isolated
    received: list[tuple[str, bytes, str]] = []
    failures_left = [1]
    arrived = asyncio.Event()

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        if failures_left[0] > 0:  # the receiver is down for the first delivery
            failures_left[0] -= 1
            return web.Response(status=503)
        received.append(
            (request.headers["Portex-Event-Id"], body, request.headers["Portex-Signature"])
        )
        arrived.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", receive)
    runner = web.AppRunner(receiver)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        server = await start_server(DATABASE_URL=dsn)
        app = await create_app(updates="webhook", public_url=f"http://127.0.0.1:{server.http_port}")
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            paid = await stub.Pay(
                pay_request(tg_use_id=USER, callback_url=f"http://127.0.0.1:{port}/hook"),
                metadata=app.metadata,
            )
        assert (await fake_telegram.pay_invoice(paid.tg_payment_url, USER)).approved

        # created, invoice_created, paid; the receiver's first answer was 503: it was retried.
        async def all_arrived() -> bool:
            return len(received) >= 3

        await eventually(all_arrived, timeout=20)
    finally:
        await runner.cleanup()
    conn = await asyncpg.connect(dsn)
    try:
        secret = await stored_secret(conn, app.id, "signing_secret")
        expected = await conn.fetch(
            "SELECT id, type FROM events WHERE tg_payment_id = $1 AND type LIKE 'order.%' "
            "ORDER BY id",
            paid.tg_payment_id,
        )
    finally:
        await conn.close()
    assert [r["type"] for r in expected] == ["order.created", "order.invoice_created", "order.paid"]
    assert [event_id for event_id, _, _ in received] == [str(r["id"]) for r in expected]
    now = time.time()
    assert all(verify_callback(secret, signature, body, now) for _, body, signature in received)
    assert [json.loads(body)["type"] for _, body, _ in received] == [r["type"] for r in expected]
