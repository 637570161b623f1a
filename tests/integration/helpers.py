"""Small helpers for the integration tests: rich status details of a failed call, valid Pay
fields, waiting for a condition, another replica with its own settings."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from portex.payment.v1 import payment_pb2
from portex_pay.adapters.telegram.client import BotApiClient
from portex_pay.app import PortexApp, application_admin
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.conftest import DATA_KEYS, make_settings


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """ErrorInfo, BadRequest and RetryInfo unpacked from the status trailer, by type name."""
    status = rpc_status.from_call(error)
    found: dict[str, Any] = {}
    if status is None:
        return found
    for packed in status.details:
        for cls in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if packed.Is(cls.DESCRIPTOR):
                message = cls()
                packed.Unpack(message)
                found[cls.__name__] = message
    return found


def pay_fields(**overrides: Any) -> dict[str, Any]:
    """The keyword fields of a valid Pay, with a fresh request_id."""
    fields: dict[str, Any] = {
        "tg_use_id": 4242,
        "amount": 5,
        "label": "item",
        "title": "Book",
        "description": "Magic book",
        "request_id": str(uuid.uuid4()),
    }
    fields.update(overrides)
    return fields


def pay_request(**overrides: Any) -> payment_pb2.PayRequest:
    return payment_pb2.PayRequest(**pay_fields(**overrides))


_ANY = object()


async def eventually(
    check: Callable[[], Any],
    *,
    equals: Any = _ANY,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str | None = None,
) -> Any:
    """Waits until `check()` (a function or a coroutine function) returns something truthy, or
    `equals` when given, and returns it; fails the test, naming `what` (or the check) and the
    last value, when that has not happened within `timeout` seconds. The one way tests wait for
    a state that nothing announces."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if (value == equals) if equals is not _ANY else value:
            return value
        if time.monotonic() > deadline:
            name = what or getattr(check, "__name__", repr(check))
            raise AssertionError(f"not within {timeout} s: {name} (last {value!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def replica_serving(
    database_url: str, fake: FakeBotApi, application_id: str, **overrides: object
) -> AsyncIterator[PortexApp]:
    """Another replica of the service on the same database, with settings changed (e.g. a
    rotated payload secret: `payload_secret=..., payload_secrets_retired=...`), to which
    `application_id`'s bot webhook points while it runs: its updates are handled there."""
    app = PortexApp(make_settings(database_url, fake.base_url, **overrides))
    await app.start()
    try:
        async with aiohttp.ClientSession() as session:
            admin = application_admin(
                app.pool, BotApiClient(session, fake.base_url, 5.0), data_keys=DATA_KEYS
            )
            await admin.register_webhook(
                uuid.UUID(application_id), f"http://127.0.0.1:{app.http_port}"
            )
        yield app
    finally:
        await app.stop()
