"""PaymentService's rate limit per application (PORTEX_GRPC_APP_RATE / _BURST), over real gRPC
on loopback: the call after the burst answers RESOURCE_EXHAUSTED with a google.rpc.RetryInfo in
the status details (grpc-status-details-bin), another application is not limited by the first,
calls without a valid key are not counted, and without the setting there is no limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.app import PortexApp
from portex_pay.config import Settings
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp, make_settings

BURST = 3
LIST = payment_pb2.ListOrdersRequest(page_size=1)


@pytest.fixture(scope="module")
async def limited(database_url: str, fake_telegram: FakeBotApi) -> AsyncIterator[PortexApp]:
    """A replica whose limit (3 calls in a window of 300 s) does not refill during a test."""
    own = PortexApp(
        make_settings(
            database_url, fake_telegram.base_url, grpc_app_rate=0.01, grpc_app_burst=BURST
        )
    )
    await own.start()
    try:
        yield own
    finally:
        await own.stop()


@pytest.fixture(scope="module")
async def limited_stub(limited: PortexApp) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{limited.grpc_port}") as channel:
        yield payment_pb2_grpc.PaymentServiceStub(channel)


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status in the trailing metadata, read as a client in any language would."""
    trailers = dict(error.trailing_metadata() or ())
    return status_pb2.Status.FromString(trailers["grpc-status-details-bin"])


async def test_the_call_after_the_burst_is_resource_exhausted_with_retry_info(
    limited_stub: Any, make_app
) -> None:
    app: TestApp = await make_app(bot=False)
    for _ in range(BURST):
        await limited_stub.ListOrders(LIST, metadata=app.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await limited_stub.ListOrders(LIST, metadata=app.metadata)
    error = raised.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = status_details(error)
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    found: dict[str, object] = {}
    for packed in status.details:
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                found[cls.__name__] = message
    info, retry = found["ErrorInfo"], found["RetryInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert info.reason == "RATE_LIMITED"
    # The window is 300 s long and began with the first call: the wait is most of it.
    assert 1 <= retry.retry_delay.seconds <= 300
    assert info.metadata["retry_after"] == str(retry.retry_delay.seconds)
    # Any RPC of the application is refused now, a stream too.
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for _ in limited_stub.StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(), metadata=app.metadata
        ):
            pass
    assert streamed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_another_application_is_not_limited_by_the_first(limited_stub: Any, make_app) -> None:
    busy: TestApp = await make_app(bot=False)
    other: TestApp = await make_app(bot=False)
    for _ in range(BURST):
        await limited_stub.ListOrders(LIST, metadata=busy.metadata)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await limited_stub.ListOrders(LIST, metadata=busy.metadata)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    for _ in range(BURST):
        await limited_stub.ListOrders(LIST, metadata=other.metadata)


async def test_calls_without_a_valid_key_are_refused_before_they_are_counted(
    limited_stub: Any, make_app
) -> None:
    app: TestApp = await make_app(bot=False)
    wrong = (("authorization", "Bearer not-a-key"),)
    for _ in range(BURST * 2):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await limited_stub.ListOrders(LIST, metadata=wrong)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    for _ in range(BURST):
        await limited_stub.ListOrders(LIST, metadata=app.metadata)


async def test_there_is_no_limit_unless_one_is_set(stub: Any, make_app) -> None:
    assert Settings().grpc.app_rate is None
    app: TestApp = await make_app(bot=False)
    # More calls than any burst the setting would default to: all answered.
    for _ in range(Settings().grpc.app_burst + 20):
        await stub.ListOrders(LIST, metadata=app.metadata)
