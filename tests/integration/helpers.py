"""Small helpers for the integration tests: rich status details of a failed call."""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Callable
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from portex.payment.v1 import payment_pb2


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
