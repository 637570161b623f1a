"""Watching events with the Python client: `watch`, `list_events` and `portex-pay-watch`.

Against real servers: the in-process service, and `portex-pay serve` processes where a server must
die, stop or beat its heart fast. Every expectation about which events arrive is checked against
the `events` table itself (event ids in stream order), so a duplicate, a gap or a heartbeat handed
to the caller shows up as a difference from the table. Events are produced through the in-process
service, which shares the database with every server process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.app import PortexApp
from portex_pay_client import (
    RETENTION_START,
    AsyncEventWatch,
    AsyncPaymentClient,
    InvoiceEvent,
    PaymentClient,
    PortexPayError,
    RetryPolicy,
)
from tests.conftest import TestApp, free_port
from tests.e2e.conftest import ServerFactory
from tests.integration.helpers import eventually, pay_request

pytestmark = pytest.mark.e2e

# Reconnects quickly and (for any test) forever.
FAST = RetryPolicy(max_attempts=10_000, initial_backoff=0.02, max_backoff=0.2)
# gRPC's own reconnection backoff, shortened alike for servers that come back within a second.
FAST_CHANNEL = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 200)]
PAY_EVENTS = ["order.created", "order.invoice_created"]
WAIT = 15.0  # seconds: the most any awaited event may take; far more than any of them needs


async def table_events(service: PortexApp, app: TestApp) -> list[tuple[str, str]]:
    """(event id, type) of every event of the application, in stream order."""
    rows = await service.pool.fetch(
        "SELECT id, type FROM events WHERE application_id = $1::uuid ORDER BY xid, id", app.id
    )
    return [(str(row["id"]), row["type"]) for row in rows]


def seen(events: list[InvoiceEvent]) -> list[tuple[str, str]]:
    return [(event.event_id, event.type) for event in events]


async def pay(stub: Any, app: TestApp, **fields: Any) -> int:
    response = await stub.Pay(pay_request(**fields), metadata=app.metadata, timeout=10)
    return int(response.tg_payment_id)


async def take(events: AsyncEventWatch, count: int, timeout: float = WAIT) -> list[InvoiceEvent]:
    async def collect() -> list[InvoiceEvent]:
        return [await anext(events) for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout)


async def heartbeats_elapse(target: str, app: TestApp, count: int = 2) -> None:
    """Returns once `count` heartbeats have reached another stream of the app opened now: by
    then every idle stream of the same server has had at least `count - 1` heartbeats."""
    async with grpc.aio.insecure_channel(target) as channel:
        stream = payment_pb2_grpc.PaymentServiceStub(channel).StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(types=["no.such.type"]),
            metadata=app.metadata,
        )
        beats = 0
        while beats < count:
            message = await asyncio.wait_for(stream.read(), WAIT)
            assert isinstance(message, payment_pb2.InvoiceEvent)
            beats += message.heartbeat
        stream.cancel()


@pytest.fixture
async def client(service: PortexApp, app: TestApp) -> AsyncIterator[AsyncPaymentClient]:
    async with AsyncPaymentClient(f"127.0.0.1:{service.grpc_port}", app.api_key) as client:
        yield client


# --- what a watch yields --------------------------------------------------------------------


async def test_watch_yields_every_event_once_in_stream_order_and_never_a_heartbeat(
    start_server: ServerFactory, service: PortexApp, stub: Any, app: TestApp
) -> None:
    # Heartbeats every 50 ms: a watch that let one through would yield a message with no event.
    server = await start_server(PORTEX_STREAM_HEARTBEAT="0.05")
    order = await pay(stub, app)  # before the watch: caught up from the table
    async with (
        AsyncPaymentClient(server.target, app.api_key) as watcher,
        watcher.watch(start=RETENTION_START, retry=FAST) as events,
    ):
        first = await take(events, 2)
        await heartbeats_elapse(server.target, app)  # the watch's stream has had some too
        second_order = await pay(stub, app)  # while watching: delivered live
        second = await take(events, 2)
        # Nothing more than the table holds: the next event is the next order's first.
        third_order = await pay(stub, app)
        third = await take(events, 1)

    # The first five of the six events of three Pays.
    assert seen(first + second + third) == (await table_events(service, app))[:5]
    assert [event.type for event in first + second] == PAY_EVENTS * 2
    assert [event.order.tg_payment_id for event in first + second + third] == [
        order,
        order,
        second_order,
        second_order,
        third_order,
    ]
    assert not any(event.heartbeat for event in first + second + third)
    assert events.cursor == third[-1].cursor


async def test_watch_yields_only_the_types_asked_for(
    client: AsyncPaymentClient, service: PortexApp, stub: Any, app: TestApp
) -> None:
    orders = [await pay(stub, app), await pay(stub, app)]
    async with client.watch(
        types=["order.invoice_created"], start=RETENTION_START, retry=FAST
    ) as events:
        caught_up = await take(events, 2)
        orders.append(await pay(stub, app))
        live = await take(events, 1)

    expected = await table_events(service, app)
    assert seen(caught_up + live) == [e for e in expected if e[1] == "order.invoice_created"]
    assert [event.order.tg_payment_id for event in caught_up + live] == orders


async def test_heartbeats_move_the_cursor_past_filtered_out_events_without_being_yielded(
    start_server: ServerFactory, client: AsyncPaymentClient, stub: Any, app: TestApp
) -> None:
    server = await start_server(PORTEX_STREAM_HEARTBEAT="0.05")
    async with (
        AsyncPaymentClient(server.target, app.api_key) as watcher,
        watcher.watch(types=["order.created"], start=RETENTION_START, retry=FAST) as events,
    ):
        order = await pay(stub, app)
        [created] = await take(events, 1)
        # The order's next event, order.invoice_created, is filtered out; the heartbeats after it
        # carry its position.
        listed = await client.list_events(start=RETENTION_START)
        assert [event.type for event in listed.events] == PAY_EVENTS
        invoice_created = listed.events[-1]
        waiting = asyncio.create_task(anext(events))
        try:

            async def moved() -> bool:
                return events.cursor == invoice_created.cursor

            await eventually(
                moved, what="a heartbeat at order.invoice_created's position", timeout=WAIT
            )
            assert not waiting.done(), "a heartbeat or a filtered-out event was yielded"
        finally:
            waiting.cancel()
        assert created.order.tg_payment_id == order
        assert created.cursor != invoice_created.cursor

    # That position is a place to resume from: right after order.invoice_created.
    async with client.watch(after_cursor=events.cursor, retry=FAST) as resumed:
        next_order = await pay(stub, app)
        [first] = await take(resumed, 1)
    assert (first.type, first.order.tg_payment_id) == ("order.created", next_order)


# --- resuming -------------------------------------------------------------------------------


async def test_a_watch_resumes_after_its_server_is_killed_without_a_gap_or_a_duplicate(
    start_server: ServerFactory, service: PortexApp, stub: Any, app: TestApp
) -> None:
    server = await start_server()
    await pay(stub, app)
    await pay(stub, app)
    async with (
        AsyncPaymentClient(server.target, app.api_key, options=FAST_CHANNEL) as watcher,
        watcher.watch(start=RETENTION_START, retry=FAST) as events,
    ):
        before = await take(events, 4)
        # Waiting for the next events through the crash, the silence and the restart.
        after_task = asyncio.create_task(take(events, 6, timeout=2 * WAIT))
        server.signal(signal.SIGKILL)
        await server.wait_exit()
        await pay(stub, app)  # while no server of the watch is up
        await pay(stub, app)
        await start_server(PORTEX_GRPC_ADDR=server.target)  # the same address, a new process
        await pay(stub, app)  # once it is up again
        after = await after_task

    assert seen(before + after) == await table_events(service, app)
    assert len(before + after) == 10
    assert events.reconnects >= 1


async def test_a_watch_resumes_on_another_replica_as_soon_as_its_server_begins_shutting_down(
    start_server: ServerFactory, service: PortexApp, stub: Any, app: TestApp
) -> None:
    # A grace period far longer than the test may take: the stream must not wait for it.
    stopping = await start_server(PORTEX_SHUTDOWN_GRACE="60")
    replica = await start_server()
    # pick_first: the first address while it answers, then the next.
    target = f"ipv4:{stopping.target},{replica.target}"
    await pay(stub, app)
    async with (
        AsyncPaymentClient(target, app.api_key, options=FAST_CHANNEL) as watcher,
        watcher.watch(start=RETENTION_START, retry=FAST) as events,
    ):
        before = await take(events, 2)
        assert events.reconnects == 0
        after_task = asyncio.create_task(take(events, 4, timeout=10.0))
        stopping.signal(signal.SIGTERM)
        await pay(stub, app)
        await pay(stub, app)
        after = await after_task
        assert await stopping.wait_exit() == 0

    assert seen(before + after) == await table_events(service, app)
    assert events.reconnects >= 1


async def test_an_expired_cursor_raises_out_of_range_at_once(
    client: AsyncPaymentClient, service: PortexApp, stub: Any, app: TestApp
) -> None:
    await pay(stub, app)
    [*_, last] = (await client.list_events(start=RETENTION_START)).events
    saved = await service.pool.fetchrow(
        "SELECT pruned_xid::text AS xid, pruned_id FROM event_log_state"
    )
    assert saved is not None
    # Pruning "reached" far beyond every event written so far.
    await service.pool.execute(
        "UPDATE event_log_state SET pruned_xid = '999999999'::xid8, pruned_id = 999999999"
    )
    try:
        events = client.watch(after_cursor=last.cursor, retry=FAST)
        with pytest.raises(PortexPayError) as caught:
            await take(events, 1, timeout=5.0)
    finally:
        await service.pool.execute(
            "UPDATE event_log_state SET pruned_xid = $1::text::xid8, pruned_id = $2",
            saved["xid"],
            saved["pruned_id"],
        )
    assert caught.value.code == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.reason == "CURSOR_EXPIRED"
    assert events.reconnects == 0
    assert events.closed
    with pytest.raises(StopAsyncIteration):
        await anext(events)


async def test_a_watch_with_a_bounded_policy_gives_up_after_that_many_failures_in_a_row(
    app: TestApp,
) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    async with AsyncPaymentClient(nobody, app.api_key) as client:
        events = client.watch(retry=policy)
        with pytest.raises(PortexPayError) as caught:
            await take(events, 1, timeout=10.0)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert events.reconnects == 2  # three attempts in all


# --- list_events and the blocking client ------------------------------------------------------


async def test_list_events_pages_through_every_event_with_next_page_tokens(
    client: AsyncPaymentClient, service: PortexApp, stub: Any, app: TestApp
) -> None:
    await pay(stub, app)
    await pay(stub, app)
    expected = await table_events(service, app)
    assert len(expected) == 4
    pages: list[payment_pb2.ListEventsResponse] = []

    async def listed_all() -> bool:
        # An event whose transaction has just committed can stay below the read horizon a moment.
        pages.clear()
        page = await client.list_events(page_size=1)
        pages.append(page)
        while page.next_page_token:
            page = await client.list_events(page_size=1, page_token=page.next_page_token)
            pages.append(page)
        return len(pages) == len(expected) + 1

    await eventually(listed_all, what="every event to be listed", timeout=WAIT)
    assert seen([event for page in pages for event in page.events]) == expected
    assert [len(page.events) for page in pages] == [1, 1, 1, 1, 0]
    assert all(page.next_page_token for page in pages[:-1])


async def test_the_blocking_client_lists_and_watches_the_same_events(
    service: PortexApp, stub: Any, app: TestApp
) -> None:
    await pay(stub, app)
    target = f"127.0.0.1:{service.grpc_port}"

    def blocking() -> tuple[list[InvoiceEvent], list[InvoiceEvent], str]:
        with PaymentClient(target, app.api_key) as client:
            listed = list(client.list_events(types=PAY_EVENTS).events)
            with client.watch(start="RETENTION_START", retry=FAST) as events:
                watched = [next(events), next(events)]
            return listed, watched, events.cursor

    listed, watched, cursor = await asyncio.wait_for(asyncio.to_thread(blocking), WAIT)
    expected = await table_events(service, app)
    assert seen(listed) == seen(watched) == expected
    assert cursor == watched[-1].cursor


# --- portex-pay-watch -----------------------------------------------------------------------


async def run_cli(service: PortexApp, app: TestApp, *args: str) -> asyncio.subprocess.Process:
    command = Path(sys.executable).with_name("portex-pay-watch")
    assert command.exists(), "the portex-pay-watch console script is not installed"
    return await asyncio.create_subprocess_exec(
        str(command),
        "--target",
        f"127.0.0.1:{service.grpc_port}",
        *args,
        env={**os.environ, "PORTEX_API_KEY": app.api_key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def read_json_lines(process: asyncio.subprocess.Process, count: int) -> list[dict[str, Any]]:
    assert process.stdout is not None
    lines = [await asyncio.wait_for(process.stdout.readline(), WAIT) for _ in range(count)]
    return [json.loads(line) for line in lines]


async def stop_cli(process: asyncio.subprocess.Process) -> tuple[int, list[str]]:
    """SIGTERM, then the exit status and the stderr lines."""
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), WAIT)
    return int(process.returncode or 0), stderr.decode().splitlines()


async def test_the_cli_prints_events_as_json_lines_and_exits_0_on_sigterm_with_the_cursor(
    service: PortexApp, stub: Any, app: TestApp
) -> None:
    order = await pay(stub, app)
    process = await run_cli(service, app, "--from-start")
    try:
        printed = await read_json_lines(process, 2)
    finally:
        status, stderr = await stop_cli(process)

    assert [(line["eventId"], line["type"]) for line in printed] == await table_events(service, app)
    assert [line["order"]["tgPaymentId"] for line in printed] == [str(order)] * 2
    assert "heartbeat" not in printed[0]
    assert status == 0
    assert stderr[-1] == printed[-1]["cursor"]


async def test_the_cli_resumes_right_after_the_cursor_it_printed(
    service: PortexApp, stub: Any, app: TestApp
) -> None:
    await pay(stub, app)
    first = await run_cli(service, app, "--from-start", "--type", "order.created")
    try:
        await read_json_lines(first, 1)
    finally:
        _, stderr = await stop_cli(first)
    cursor = stderr[-1]

    second = await run_cli(service, app, "--after", cursor, "--type", "order.created")
    try:
        order = await pay(stub, app)
        [printed] = await read_json_lines(second, 1)
    finally:
        status, _ = await stop_cli(second)
    assert (printed["type"], printed["order"]["tgPaymentId"]) == ("order.created", str(order))
    assert status == 0
