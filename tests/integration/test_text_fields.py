"""Control characters in every text field of every RPC (issue 7, defect 3), through real gRPC.

A NUL (which PostgreSQL cannot store in text) or another control character in a text field is
INVALID_ARGUMENT with a field violation naming the field, decided before any database work;
never INTERNAL. The rule itself (which characters, for which kind of field) is in
server/portex_pay/domain/text.py and tests/unit/test_pay_validation.py. QueryOrder,
ResumePayment, RefundPayment and CancelOrder have no text field.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2
from portex_pay.app import PortexApp
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.integration.helpers import details, pay_fields

# Characters every text field refuses, and those only single-line fields refuse.
EVERYWHERE = {"NUL": "\x00", "U+0001": "\x01", "ESC": "\x1b", "DEL": "\x7f", "C1 NEL": "\x85"}
SINGLE_LINE_ONLY = {"LF": "\n", "CR": "\r", "TAB": "\t", "U+2028": "\u2028"}

PAY_FIELDS = {
    "label": ("free", False),
    "title": ("free", False),
    "description": ("free", True),
    "payload": ("free", True),
    "photo_url": ("url", False),
    "callback_url": ("url", False),
    "request_id": ("id", False),
}


def _bad_value(field: str, char: str) -> str:
    kind, _ = PAY_FIELDS[field]
    if kind == "url":
        return f"https://example.com/a{char}b"
    if kind == "id":
        return f"req-{char}-1"
    return f"ab{char}cd"


def _pay_cases() -> list[Any]:
    cases = []
    for field, (_, free_text) in PAY_FIELDS.items():
        refused = dict(EVERYWHERE)
        if not free_text:
            refused.update(SINGLE_LINE_ONLY)
        for name, char in refused.items():
            cases.append(pytest.param(field, char, id=f"{field}-{name}"))
    return cases


async def _invalid_argument(call: Any) -> list[str]:
    """The field violations of a call that must fail with INVALID_ARGUMENT."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    found = details(raised.value)
    assert found["ErrorInfo"].reason == "INVALID_ARGUMENT"
    return [v.field for v in found["BadRequest"].field_violations]


@pytest.mark.parametrize(("field", "char"), _pay_cases())
async def test_pay_refuses_control_characters_in_each_text_field(
    stub, app: TestApp, service: PortexApp, fake_telegram: FakeBotApi, field: str, char: str
) -> None:
    request = payment_pb2.PayRequest(**pay_fields(**{field: _bad_value(field, char)}))
    assert await _invalid_argument(stub.Pay(request, metadata=app.metadata)) == [field]
    # Decided before any work: no order, no invoice.
    assert fake_telegram.calls_for("createInvoiceLink", token=app.bot_token) == []
    orders = await service.pool.fetchval(
        "SELECT count(*) FROM orders WHERE application_id = $1::uuid", app.id
    )
    assert orders == 0


async def test_pay_reports_each_bad_text_field_at_once(stub, app: TestApp) -> None:
    request = payment_pb2.PayRequest(
        **pay_fields(
            label="l\x00",
            title="t\x00",
            description="d\x00",
            payload="p\x00",
            photo_url="https://example.com/\x00",
            callback_url="https://example.com/\x00",
            request_id="r\x00",
        )
    )
    fields = await _invalid_argument(stub.Pay(request, metadata=app.metadata))
    assert sorted(fields) == sorted(PAY_FIELDS)


async def test_free_text_keeps_its_line_breaks_and_tabs(stub, app: TestApp) -> None:
    text = "Line one\r\n\tLine two\n"
    paid = await stub.Pay(
        payment_pb2.PayRequest(**pay_fields(description=text, payload=text)),
        metadata=app.metadata,
    )
    order = await stub.QueryOrder(
        payment_pb2.QueryOrderRequest(tg_payment_id=paid.tg_payment_id), metadata=app.metadata
    )
    assert (order.description, order.payload) == (text, text)


@pytest.mark.parametrize("char", [*EVERYWHERE.values(), *SINGLE_LINE_ONLY.values()])
async def test_report_invoice_closed_refuses_control_characters_in_status(
    stub, app: TestApp, char: str
) -> None:
    paid = await stub.Pay(payment_pb2.PayRequest(**pay_fields()), metadata=app.metadata)
    for status in (f"paid{char}", char, f"{char}cancelled"):
        request = payment_pb2.ReportInvoiceClosedRequest(
            tg_payment_id=paid.tg_payment_id, status=status
        )
        assert await _invalid_argument(
            stub.ReportInvoiceClosed(request, metadata=app.metadata)
        ) == ["status"]


async def _drain(call: Any) -> None:
    async for _ in call:
        pass


@pytest.mark.parametrize("char", [*EVERYWHERE.values(), *SINGLE_LINE_ONLY.values()])
async def test_cursors_with_control_characters_are_refused_by_their_field(
    stub, app: TestApp, char: str
) -> None:
    valid = "djEuMS4x"  # the cursor v1.1.1
    for text in (char, f"{valid}{char}", f"{char}{valid}"):
        for field in ("after_cursor", "page_token"):
            fields: dict[str, Any] = {field: text}
            request = payment_pb2.ListEventsRequest(**fields)
            assert await _invalid_argument(stub.ListEvents(request, metadata=app.metadata)) == [
                field
            ]
        stream = stub.StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(after_cursor=text), metadata=app.metadata
        )
        assert await _invalid_argument(_drain(stream)) == ["after_cursor"]


@pytest.mark.parametrize("char", [*EVERYWHERE.values(), *SINGLE_LINE_ONLY.values()])
async def test_event_type_filters_with_control_characters_are_refused(
    stub, app: TestApp, char: str
) -> None:
    types = ["order.paid", f"order.{char}created"]
    assert await _invalid_argument(
        stub.ListEvents(payment_pb2.ListEventsRequest(types=types), metadata=app.metadata)
    ) == ["types"]
    stream = stub.StreamInvoiceEvents(
        payment_pb2.StreamInvoiceEventsRequest(types=types), metadata=app.metadata
    )
    assert await _invalid_argument(_drain(stream)) == ["types"]
