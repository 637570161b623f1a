"""The Python clients' retries are gRPC's own (the channel's service config), over real gRPC on
loopback, against a small server of the test's own (PaymentService's generated base class) that
answers UNAVAILABLE to the first two attempts of a call and counts them: Pay succeeds on the
third, every attempt carrying the same request_id, one the client made when the caller gave
none; a caller's request_id is sent as it is; a call that is not safe to repeat is sent once;
a channel without the service config (`from_channel`) makes one attempt, one made with
`channel_options` retries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay_client import (
    AsyncPaymentClient,
    PaymentClient,
    PortexPayError,
    RetryPolicy,
    channel_options,
)


class FailingTwice(payment_pb2_grpc.PaymentServiceServicer):
    """Pay answers UNAVAILABLE twice in a row, then succeeds; DeleteCatalogItem is always
    UNAVAILABLE. Every attempt is counted."""

    def __init__(self) -> None:
        self.request_ids: list[str] = []
        self.deletes = 0

    async def Pay(self, request: payment_pb2.PayRequest, context: Any) -> Any:
        self.request_ids.append(request.request_id)
        if len(self.request_ids) % 3 != 0:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return payment_pb2.PayResponse(tg_payment_id=7, tg_payment_url="https://t.me/$x")

    async def DeleteCatalogItem(
        self, request: payment_pb2.DeleteCatalogItemRequest, context: Any
    ) -> Any:
        self.deletes += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "not now")


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
    assert len(servicer.request_ids) == 6
    assert len(set(servicer.request_ids[:3])) == 1
    assert servicer.request_ids[3:] == ["order-42"] * 3


async def test_the_blocking_client_is_retried_by_grpc_too(
    failing: tuple[FailingTwice, str],
) -> None:
    servicer, target = failing
    with PaymentClient(target, "key", timeout=30) as client:  # its calls in a thread: the
        # server runs on this test's loop
        assert (await asyncio.to_thread(client.pay, **FIELDS)).tg_payment_id == 7
    assert len(servicer.request_ids) == 3 and len(set(servicer.request_ids)) == 1


async def test_a_call_a_repeat_could_do_twice_is_sent_once(
    failing: tuple[FailingTwice, str],
) -> None:
    """DeleteCatalogItem after a lost answer would report deleted=False: never repeated."""
    servicer, target = failing
    async with AsyncPaymentClient(target, "key", timeout=30) as client:
        with pytest.raises(PortexPayError) as raised:
            await client.delete_catalog_item("sword")
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert servicer.deletes == 1


async def test_from_channel_retries_as_its_channel_is_configured(
    failing: tuple[FailingTwice, str],
) -> None:
    servicer, target = failing
    async with grpc.aio.insecure_channel(target) as plain:
        client = AsyncPaymentClient.from_channel(plain, "key")
        assert client.retry is None  # the channel's config, not the client's, decides
        with pytest.raises(PortexPayError) as raised:
            await client.pay(**FIELDS)  # no service config: one attempt
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(servicer.request_ids) == 1
    options = channel_options(retry=RetryPolicy(max_attempts=3))
    async with grpc.aio.insecure_channel(target, options=options) as configured:
        client = AsyncPaymentClient.from_channel(configured, "key")
        assert (await client.pay(**FIELDS)).tg_payment_id == 7  # attempts 2 and 3
    assert len(servicer.request_ids) == 3


async def test_a_policy_of_one_attempt_is_not_retried(failing: tuple[FailingTwice, str]) -> None:
    servicer, target = failing
    async with AsyncPaymentClient(target, "key", retry=RetryPolicy.disabled()) as client:
        with pytest.raises(PortexPayError):
            await client.pay(**FIELDS)
    assert len(servicer.request_ids) == 1
