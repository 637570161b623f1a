"""Rotating PORTEX_PAYLOAD_SECRET with invoices open: an invoice signed with the old key is paid
after the rotation (the old key retired, still configured), as is one signed before key ids
existed (`v1`), and refused, as a forged payload is, once the operator has removed that key;
likewise a live subscription's renewals, which carry its first invoice's payload.
Replicas on the same database play the restarts; the fake Bot API plays Telegram and the buyer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any
from uuid import UUID

import grpc
import pytest

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.app import PortexApp
from portex_pay.domain.pay import payload_key_id
from portex_pay.logging import REDACTED, redact
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import PAYLOAD_SECRET, TestApp
from tests.integration.helpers import pay_request, replica_serving

Order = payment_pb2.Order
USER = 5151
MONTH = 2592000
KEY_A = PAYLOAD_SECRET  # what the session's service signs with: the key before the rotation


@pytest.fixture
async def shop(make_app: Any) -> TestApp:
    created: TestApp = await make_app(updates="webhook")
    return created


def invoice_payloads(fake: FakeBotApi, shop: TestApp) -> list[str]:
    return [call.params["payload"] for call in fake.calls_for("createInvoiceLink", shop.bot_token)]


async def state_of(service: PortexApp, tg_payment_id: int) -> str:
    state: str = await service.pool.fetchval(
        "SELECT state FROM orders WHERE tg_payment_id = $1", tg_payment_id
    )
    return state


async def last_checkout_event(service: PortexApp, shop: TestApp) -> dict[str, Any]:
    row = await service.pool.fetchrow(
        "SELECT type, tg_payment_id, data FROM events WHERE application_id = $1 "
        "AND type LIKE 'checkout.%' ORDER BY id DESC LIMIT 1",
        UUID(shop.id),
    )
    assert row is not None
    return {"type": row["type"], "tg_payment_id": row["tg_payment_id"], **row["data"]}


def v1_payload(secret: str, tg_payment_id: int, amount: int) -> str:
    """The payload the service signed before key ids (`v1`), as open invoices of then carry it."""
    message = f"v1.{tg_payment_id}.{amount}"
    mac = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()[:16]
    return f"{message}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def successful_payment(payload: str, charge_id: str, amount: int) -> dict[str, Any]:
    return {
        "message": {
            "message_id": 2,
            "date": int(time.time()),
            "chat": {"id": USER, "type": "private"},
            "from": {"id": USER, "is_bot": False, "first_name": "U"},
            "successful_payment": {
                "currency": "XTR",
                "total_amount": amount,
                "invoice_payload": payload,
                "telegram_payment_charge_id": charge_id,
                "provider_payment_charge_id": "",
            },
        }
    }


async def test_an_open_invoice_survives_a_rotation_until_its_key_is_removed(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi, database_url: str
) -> None:
    key_b = "rotated-payload-secret-" + secrets.token_hex(16)
    key_c = "another-retired-secret-" + secrets.token_hex(16)  # never current anywhere
    # Two invoices opened before the rotation: both signed with key A.
    paid_later = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    refused_later = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    # And one opened before the upgrade that brought key ids: its invoice carries a v1 payload.
    legacy = await stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
    legacy_payload = v1_payload(KEY_A, legacy.tg_payment_id, legacy.order.amount)
    old_payloads = invoice_payloads(fake_telegram, shop)
    assert [p.split(".")[:2] for p in old_payloads] == [["v2", payload_key_id(KEY_A.encode())]] * 3

    # Rotated: key B current, key A retired. The old invoice is paid; a new one is signed with B.
    async with replica_serving(
        database_url,
        fake_telegram,
        shop.id,
        payload_secret=key_b,
        payload_secrets_retired=f"{key_c}, {KEY_A}",
    ) as rotated:
        assert redact(f"retired {key_c}") == f"retired {REDACTED}"  # registered at start
        outcome = await fake_telegram.pay_invoice(paid_later.tg_payment_url, USER)
        await fake_telegram.drain(shop.bot_token)
        assert outcome.approved and outcome.charge_id
        assert await state_of(service, paid_later.tg_payment_id) == "paid"
        outcome = await fake_telegram.pay_invoice(
            legacy.tg_payment_url, USER, invoice_payload=legacy_payload
        )
        await fake_telegram.drain(shop.bot_token)
        assert outcome.approved and outcome.charge_id
        assert await state_of(service, legacy.tg_payment_id) == "paid"
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rotated.grpc_port}") as channel:
            rotated_stub = payment_pb2_grpc.PaymentServiceStub(channel)
            await rotated_stub.Pay(pay_request(tg_use_id=USER), metadata=shop.metadata)
        new_payload = invoice_payloads(fake_telegram, shop)[-1]
        assert new_payload.split(".")[:2] == ["v2", payload_key_id(key_b.encode())]

    # Key A removed (B current, only C retired): A's invoice is refused as a forged one is.
    async with replica_serving(
        database_url,
        fake_telegram,
        shop.id,
        payload_secret=key_b,
        payload_secrets_retired=key_c,
    ):
        outcome = await fake_telegram.pay_invoice(refused_later.tg_payment_url, USER)
        await fake_telegram.drain(shop.bot_token)
        assert outcome.answered and not outcome.approved and outcome.charge_id is None
        decision = await last_checkout_event(service, shop)
        assert (decision["type"], decision["reason"]) == ("checkout.declined", "PAYLOAD_INVALID")
        assert decision["tg_payment_id"] is None  # refused before any lookup

        # A successful_payment still carrying A's payload (approved before the removal, delivered
        # after it) is recorded, as an anomaly: never lost, never marking the order paid.
        charge_id = f"stxROTATED{time.monotonic_ns()}"
        update = successful_payment(old_payloads[1], charge_id, refused_later.order.amount)
        await fake_telegram.deliver_update(shop.bot_token, update)
        await fake_telegram.drain(shop.bot_token)
        row = await service.pool.fetchrow(
            "SELECT disposition, anomaly FROM payments WHERE telegram_payment_charge_id = $1",
            charge_id,
        )
        assert row is not None
        assert (row["disposition"], row["anomaly"]) == ("anomaly", "PAYLOAD_INVALID")
        assert await state_of(service, refused_later.tg_payment_id) == "pending"
        # The new key's payloads are unaffected by the removal.
        assert await state_of(service, paid_later.tg_payment_id) == "paid"


async def test_a_live_subscription_signed_by_the_old_key_renews_until_the_key_is_removed(
    stub, service: PortexApp, shop: TestApp, fake_telegram: FakeBotApi, database_url: str
) -> None:
    key_b = "rotated-payload-secret-" + secrets.token_hex(16)
    # Paid while key A is current: every renewal carries this first invoice's payload.
    paid = await stub.Pay(
        pay_request(tg_use_id=USER, amount=50, subscription_period=MONTH), metadata=shop.metadata
    )
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, USER)
    await fake_telegram.drain(shop.bot_token)
    assert outcome.approved and outcome.charge_id
    order_id, first = paid.tg_payment_id, outcome.charge_id

    async def period_end() -> int:
        order = await stub.QueryOrder(
            payment_pb2.QueryOrderRequest(tg_payment_id=order_id), metadata=shop.metadata
        )
        return int(order.subscription.current_period_end.ToSeconds())

    started = await period_end()
    # Rotated (B current, A retired): the renewal is verified by A and recorded as a renewal.
    async with replica_serving(
        database_url, fake_telegram, shop.id, payload_secret=key_b, payload_secrets_retired=KEY_A
    ):
        renewal = await fake_telegram.renew_subscription(shop.bot_token, first)
        await fake_telegram.drain(shop.bot_token)
    assert await period_end() == started + MONTH
    assert await disposition(service, renewal.telegram_payment_charge_id) == ("renewal", None)

    # A removed: a renewal carrying A's payload is refused as a forged payload is: kept as an
    # anomaly (never lost, not refunded automatically), no period added.
    async with replica_serving(database_url, fake_telegram, shop.id, payload_secret=key_b):
        refused = await fake_telegram.renew_subscription(shop.bot_token, first)
        await fake_telegram.drain(shop.bot_token)
    assert await period_end() == started + MONTH
    assert await disposition(service, refused.telegram_payment_charge_id) == (
        "anomaly",
        "PAYLOAD_INVALID",
    )
    renewed = await service.pool.fetchval(
        "SELECT count(*) FROM events WHERE tg_payment_id = $1 AND type = 'subscription.renewed'",
        order_id,
    )
    refunds = await service.pool.fetchval(
        "SELECT count(*) FROM refunds WHERE telegram_payment_charge_id = $1",
        refused.telegram_payment_charge_id,
    )
    assert (renewed, refunds) == (1, 0)


async def disposition(service: PortexApp, charge_id: str | None) -> tuple[str, str | None]:
    row = await service.pool.fetchrow(
        "SELECT disposition, anomaly FROM payments WHERE telegram_payment_charge_id = $1",
        charge_id,
    )
    assert row is not None
    return row["disposition"], row["anomaly"]
