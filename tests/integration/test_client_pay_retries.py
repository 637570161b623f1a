"""The Python client's Pay over real gRPC on loopback, against a small server of the test's own
(PaymentService's generated base class) that answers UNAVAILABLE to the first two attempts and
counts them: the call succeeds on the third, every attempt carrying the same request_id, one the
client made when the caller gave none; a caller's request_id is sent as it is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay_client import AsyncPaymentClient


class FailingTwice(payment_pb2_grpc.PaymentServiceServicer):
    def __init__(self) -> None:
        self.request_ids: list[str] = []

    async def Pay(self, request: payment_pb2.PayRequest, context: Any) -> Any:
        self.request_ids.append(request.request_id)
        if len(self.request_ids) <= 2:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return payment_pb2.PayResponse(tg_payment_id=7, tg_payment_url="https://t.me/$x")


@pytest.fixture
async def failing() -> AsyncIterator[tuple[FailingTwice, str]]:
    servicer = FailingTwice()  # type: ignore[abstract]  # serves Pay alone: the rest UNIMPLEMENTED
    server = grpc.aio.server()
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


FIELDS: dict[str, Any] = {
    "tg_use_id": 1,
    "amount": 5,
    "label": "item",
    "title": "Book",
    "description": "A book",
}


async def test_pay_without_a_request_id_is_retried_with_one_made_by_the_client(
    failing: tuple[FailingTwice, str],
) -> None:
    servicer, target = failing
    async with AsyncPaymentClient(target, "key", timeout=30) as client:
        response = await client.pay(**FIELDS)
    assert response.tg_payment_id == 7
    assert len(servicer.request_ids) == 3
    assert len(set(servicer.request_ids)) == 1
    assert servicer.request_ids[0] != ""


async def test_a_callers_request_id_is_sent_as_it_is_and_its_request_left_unchanged(
    failing: tuple[FailingTwice, str],
) -> None:
    servicer, target = failing
    request = payment_pb2.PayRequest(**FIELDS)
    async with AsyncPaymentClient(target, "key", timeout=30) as client:
        await client.pay(request)
        assert request.request_id == ""  # the id went into a copy
        await client.pay(**FIELDS, request_id="order-42")
    assert len(servicer.request_ids) == 4
    assert len(set(servicer.request_ids[:3])) == 1
    assert servicer.request_ids[3] == "order-42"
