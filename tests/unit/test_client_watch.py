"""The two event watches, `AsyncEventWatch` and the generated `EventWatch`, on fake streams.

One scenario per test, run against both watches: each keeps its place across broken streams,
gives up on a failure it must not retry, and stops when closed from elsewhere. The fake streams
have the shapes of the real calls: ``grpc.aio``'s ``read()`` answering ``grpc.aio.EOF`` at the
end, and the blocking iterator ending with StopIteration; both fail with a real
``AioRpcError`` (a ``grpc.RpcError``) and fail with CANCELLED once cancelled, as gRPC's do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from portex.payment.v1 import payment_pb2
from portex_pay_client import (
    AsyncEventWatch,
    EventWatch,
    InvoiceEvent,
    PortexPayError,
    RetryPolicy,
    StreamInvoiceEventsRequest,
)

FAST = RetryPolicy(max_attempts=1_000, initial_backoff=0.001, max_backoff=0.001)
END = object()
"""A script item: the stream ends (``grpc.aio.EOF``, StopIteration)."""
KINDS = ("async", "blocking")


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt (or a task's cancellation) arriving while a watch waits."""


def rpc_error(code: grpc.StatusCode, message: str, reason: str = "") -> grpc.aio.AioRpcError:
    details = []
    if reason:
        info = error_details_pb2.ErrorInfo(reason=reason, domain="pay.portex.dev")
        status = status_pb2.Status(code=code.value[0], message=message)
        status.details.add().Pack(info)
        details = list(rpc_status.to_status(status).trailing_metadata)
    return grpc.aio.AioRpcError(
        code=code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*details),
        details=message,
    )


def event(cursor: str, order: int = 0) -> InvoiceEvent:
    return payment_pb2.InvoiceEvent(
        cursor=cursor, type="order.paid", order=payment_pb2.Order(tg_payment_id=order)
    )


def heartbeat(cursor: str) -> InvoiceEvent:
    return payment_pb2.InvoiceEvent(cursor=cursor, heartbeat=True)


class Streams:
    """Opens one fake stream per script, in turn, and records each request and call."""

    def __init__(self, kind: str, scripts: Sequence[Sequence[object]]) -> None:
        self.kind = kind
        self.scripts = [list(script) for script in scripts]
        self.requests: list[StreamInvoiceEventsRequest] = []
        self.calls: list[FakeAioCall | FakeCall] = []

    def open(self, request: StreamInvoiceEventsRequest) -> Any:
        self.requests.append(request)
        script = self.scripts.pop(0) if self.scripts else []
        call = FakeAioCall(script) if self.kind == "async" else FakeCall(script)
        self.calls.append(call)
        return call

    @property
    def after_cursors(self) -> list[str]:
        return [request.after_cursor for request in self.requests]


class FakeAioCall:
    """A ``grpc.aio`` stream call: ``await read()``; waits for ever once its script is done."""

    def __init__(self, script: list[object]) -> None:
        self.script = script
        self.cancelled = asyncio.Event()

    async def read(self) -> object:
        if not self.script:
            await self.cancelled.wait()
        if self.cancelled.is_set():
            raise rpc_error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return grpc.aio.EOF if item is END else item

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


class FakeCall:
    """A blocking stream call: ``next(call)``; blocks once its script is done until cancelled."""

    def __init__(self, script: list[object]) -> None:
        self.script = script
        self.cancelled = threading.Event()

    def __iter__(self) -> FakeCall:
        return self

    def __next__(self) -> object:
        if not self.script:
            self.cancelled.wait(10.0)
        if self.cancelled.is_set():
            raise rpc_error(grpc.StatusCode.CANCELLED, "Locally cancelled by application!")
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        if item is END:
            raise StopIteration
        return item

    def cancel(self) -> bool:
        self.cancelled.set()
        return True


def make_watch(
    streams: Streams, after_cursor: str = "", policy: RetryPolicy = FAST
) -> AsyncEventWatch | EventWatch:
    request = StreamInvoiceEventsRequest(after_cursor=after_cursor)
    kind = AsyncEventWatch if streams.kind == "async" else EventWatch
    return kind(streams.open, request, policy, rand=lambda: 0.0)


async def take(watch: AsyncEventWatch | EventWatch, count: int) -> list[InvoiceEvent]:
    """The next ``count`` events; the blocking watch is driven in a thread."""
    if isinstance(watch, AsyncEventWatch):
        return [await asyncio.wait_for(anext(watch), 10.0) for _ in range(count)]
    blocking = watch
    return await asyncio.wait_for(
        asyncio.to_thread(lambda: [next(blocking) for _ in range(count)]), 10.0
    )


async def iterate(watch: AsyncEventWatch | EventWatch) -> list[InvoiceEvent]:
    """Every event until the iteration stops (or fails)."""
    if isinstance(watch, AsyncEventWatch):
        return [item async for item in watch]
    blocking = watch
    return await asyncio.to_thread(lambda: list(blocking))


async def close(watch: AsyncEventWatch | EventWatch) -> None:
    if isinstance(watch, AsyncEventWatch):
        await watch.aclose()
    else:
        watch.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_watch_resumes_after_its_last_cursor_across_broken_streams(kind: str) -> None:
    unavailable = rpc_error(grpc.StatusCode.UNAVAILABLE, "server shutting down")
    streams = Streams(
        kind,
        [
            [event("c1", 1), heartbeat("c2"), unavailable],
            [END],  # ended before any message: a failure too, resumed from the same cursor
            [event("c3", 3), END],
            [heartbeat("c4"), event("c5", 5)],
        ],
    )
    watch = make_watch(streams, after_cursor="c0")

    events = await take(watch, 3)

    assert [e.cursor for e in events] == ["c1", "c3", "c5"]
    assert [e.order.tg_payment_id for e in events] == [1, 3, 5]
    assert streams.after_cursors == ["c0", "c2", "c2", "c3"]
    assert watch.cursor == "c5"
    assert watch.reconnects == 3
    assert not watch.closed
    assert repr(watch) == f"{type(watch).__name__}(cursor='c5', reconnects=3)"
    await close(watch)
    assert watch.closed
    assert streams.calls[-1].cancelled.is_set()
    assert await iterate(watch) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_a_watch_ends_with_the_error_it_must_not_retry(kind: str) -> None:
    expired = rpc_error(grpc.StatusCode.OUT_OF_RANGE, "cursor expired", reason="CURSOR_EXPIRED")
    streams = Streams(kind, [[event("c1"), expired]])
    watch = make_watch(streams)

    with pytest.raises(PortexPayError) as caught:
        await iterate(watch)

    assert caught.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.reason == "CURSOR_EXPIRED"
    assert caught.value.__cause__ is expired
    assert watch.closed
    assert watch.cursor == "c1"
    assert watch.reconnects == 0
    assert await iterate(watch) == []  # stopped for good: no new stream
    assert len(streams.requests) == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_a_bounded_policy_counts_failures_in_a_row_ended_streams_too(kind: str) -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.001, max_backoff=0.001)
    unavailable = rpc_error(grpc.StatusCode.UNAVAILABLE, "down")
    streams = Streams(kind, [[unavailable], [event("c1"), END], [unavailable], [END]])
    watch = make_watch(streams, policy=policy)

    with pytest.raises(PortexPayError) as caught:
        await iterate(watch)

    # The event resets the count: END, UNAVAILABLE, END are three failures in a row.
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert "ended" in caught.value.message
    assert streams.after_cursors == ["", "", "c1", "c1"]
    assert watch.reconnects == 3
    assert watch.closed


@pytest.mark.parametrize("kind", KINDS)
async def test_an_interrupted_wait_drops_the_stream_and_the_next_iteration_resumes(
    kind: str,
) -> None:
    streams = Streams(kind, [[event("c1"), Interrupt()], [event("c2")]])
    watch = make_watch(streams)

    assert [e.cursor for e in await take(watch, 1)] == ["c1"]
    with pytest.raises(Interrupt):
        await take(watch, 1)
    assert streams.calls[0].cancelled.is_set()
    assert not watch.closed

    assert [e.cursor for e in await take(watch, 1)] == ["c2"]
    assert streams.after_cursors == ["", "c1"]
    assert watch.reconnects == 0  # an interruption is not a broken stream
    await close(watch)


@pytest.mark.parametrize("kind", KINDS)
async def test_closing_from_elsewhere_stops_a_waiting_iteration(kind: str) -> None:
    streams = Streams(kind, [[event("c1")]])  # then the stream stays open, silent
    watch = make_watch(streams)
    seen: list[InvoiceEvent] = []
    first = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def consume() -> None:
        if isinstance(watch, AsyncEventWatch):
            async for item in watch:
                seen.append(item)
                first.set()
            return
        blocking = watch

        def run() -> None:
            for item in blocking:
                seen.append(item)
                loop.call_soon_threadsafe(first.set)

        await asyncio.to_thread(run)

    consumer = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10.0)
    await asyncio.sleep(0.01)  # the consumer now waits in the silent stream
    await close(watch)
    await asyncio.wait_for(consumer, 10.0)  # ends without an error

    assert [e.cursor for e in seen] == ["c1"]
    assert watch.closed
    assert streams.calls[0].cancelled.is_set()
    assert len(streams.requests) == 1


async def test_cancelling_the_task_that_waits_ends_the_connection_only() -> None:
    streams = Streams("async", [[event("c1")], [event("c2")]])
    watch = make_watch(streams)
    assert isinstance(watch, AsyncEventWatch)
    assert [e.cursor for e in await take(watch, 1)] == ["c1"]

    waiting = asyncio.create_task(anext(watch))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert streams.calls[0].cancelled.is_set()
    assert not watch.closed

    assert [e.cursor for e in await take(watch, 1)] == ["c2"]
    assert streams.after_cursors == ["", "c1"]
    await watch.aclose()


def test_the_watches_take_the_same_arguments() -> None:
    def signature(kind: type[Any]) -> Callable[..., Any]:
        init: Callable[..., Any] = kind.__init__
        return init

    assert signature(AsyncEventWatch).__annotations__ == signature(EventWatch).__annotations__
