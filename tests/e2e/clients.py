"""Both Python clients behind one awaitable face, for the end-to-end tests of the client package.

`Client` drives `AsyncPaymentClient` directly and the blocking `PaymentClient` in a worker thread
(`asyncio.to_thread`), so that the event loop running the in-process server and the fake Bot API
keeps answering; the `connect` fixture (tests/e2e/conftest.py) opens one of each kind per test.
The helpers below make the orders those tests read: paid through the fake Bot API, as a buyer
would pay them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from portex_pay_client import (
    AsyncPaymentClient,
    Order,
    PaymentClient,
    PayRequest,
    PayResponse,
    PortexPayError,
    ResumePaymentResponse,
)
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import TestApp
from tests.integration.helpers import pay_fields


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

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)` of the client: awaited, or run in a worker thread."""
        if self.aio is not None:
            return await getattr(self.aio, method)(*args, **kwargs)
        return await asyncio.to_thread(getattr(self.blocking, method), *args, **kwargs)

    async def collect(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Everything an iterator method (`list_orders_pages`, `iter_orders`, ...) yields."""
        if self.aio is not None:
            return [item async for item in getattr(self.aio, method)(*args, **kwargs)]

        def run() -> list[Any]:
            return list(getattr(self.blocking, method)(*args, **kwargs))

        return await asyncio.to_thread(run)

    async def pay(self, request: PayRequest | None = None, **kwargs: Any) -> PayResponse:
        response: PayResponse = await self.call("pay", request, **kwargs)
        return response

    async def query_order(self, tg_payment_id: int | None = None, **kwargs: Any) -> Order:
        order: Order = await self.call("query_order", tg_payment_id, **kwargs)
        return order

    async def resume_payment(self, tg_use_id: int, **kwargs: Any) -> ResumePaymentResponse:
        response: ResumePaymentResponse = await self.call("resume_payment", tg_use_id, **kwargs)
        return response

    async def close(self) -> None:
        if self.aio is not None:
            await self.aio.close()
        if self.blocking is not None:
            self.blocking.close()


Connect = Callable[..., Client]


async def paid_order(
    client: Client, shop: TestApp, fake_telegram: FakeBotApi, **fields: Any
) -> tuple[PayResponse, str]:
    """An order of `shop` (a webhook application) paid by its buyer: Pay, then the buyer pays the
    invoice at the fake Bot API and the service handles the updates. The order and the charge."""
    paid = await client.pay(**pay_fields(**fields))
    outcome = await fake_telegram.pay_invoice(paid.tg_payment_url, paid.order.tg_use_id)
    assert outcome.approved and outcome.charge_id
    await fake_telegram.drain(shop.bot_token)
    return paid, outcome.charge_id


async def failure(call: Any) -> PortexPayError:
    """The PortexPayError that awaiting `call` raises."""
    with pytest.raises(PortexPayError) as raised:
        await call
    return raised.value


def code_and_reason(error: PortexPayError) -> tuple[grpc.StatusCode, str | None]:
    return error.code, error.reason


async def orders_cli(target: str, api_key: str | None, *args: str) -> tuple[int, list[Any], str]:
    """Runs the installed `portex-pay-orders` with the key in PORTEX_API_KEY (None: no key):
    its exit status, the JSON lines it printed, its stderr."""
    command = Path(sys.executable).with_name("portex-pay-orders")
    assert command.exists(), "the portex-pay-orders console script is not installed"
    env = {k: v for k, v in os.environ.items() if k != "PORTEX_API_KEY"}
    if api_key is not None:
        env["PORTEX_API_KEY"] = api_key
    process = await asyncio.create_subprocess_exec(
        str(command), args[0], "--target", target, *args[1:],
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    lines = [json.loads(line) for line in out.decode().splitlines()]
    return int(process.returncode or 0), lines, err.decode()
