"""StreamInvoiceEvents and ListEvents against the in-process server and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.app import PortexApp
from tests.conftest import TestApp, make_settings
from tests.integration.helpers import details, eventually, pay_request

Event = payment_pb2.InvoiceEvent


class Reader:
    """Reads a stream in the background into a list, skipping heartbeats."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.events: list[Event] = []
        self.heartbeats = 0
        self.arrived = asyncio.Condition()
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.call:
            async with self.arrived:
                if message.heartbeat:
                    self.heartbeats += 1
                else:
                    self.events.append(message)
                self.arrived.notify_all()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Event]:
        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: len(self.events) >= count)
        return self.events

    def close(self) -> None:
        self.call.cancel()
        self.task.cancel()


@pytest.fixture
async def open_stream(stub) -> AsyncIterator[Any]:
    readers: list[Reader] = []

    async def start(app: TestApp, **request: Any) -> Reader:
        call = stub.StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(**request), metadata=app.metadata
        )
        reader = Reader(call)
        readers.append(reader)
        # The stream has subscribed once the server sent its initial metadata.
        await call.initial_metadata()
        return reader

    yield start
    for reader in readers:
        reader.close()


async def _await_subscribed(service: PortexApp, count: int) -> None:
    hub = service.hub
    assert hub is not None
    await eventually(lambda: hub.subscriber_count >= count, what=f"{count} subscribers")


async def _table_events(service: PortexApp, app: TestApp) -> list[tuple[str, str]]:
    rows = await service.pool.fetch(
        "SELECT id, type FROM events WHERE application_id = $1::uuid ORDER BY xid, id", app.id
    )
    return [(str(r["id"]), r["type"]) for r in rows]


async def test_a_subscriber_sees_a_pay_as_it_happens_in_order(stub, service, app, open_stream):
    reader = await open_stream(app)
    await _await_subscribed(service, 1)
    paid = await stub.Pay(pay_request(), metadata=app.metadata)
    events = await reader.wait_for(2)
    assert [(e.type, e.order.tg_payment_id) for e in events] == [
        ("order.created", paid.tg_payment_id),
        ("order.invoice_created", paid.tg_payment_id),
    ]
    assert events[1].order.tg_payment_url == paid.tg_payment_url
    assert [(e.event_id, e.type) for e in events] == await _table_events(service, app)
    assert events[0].cursor != events[1].cursor


async def test_an_application_sees_only_its_own_events(stub, service, make_app, open_stream):
    mine, other = await make_app(), await make_app()
    reader = await open_stream(mine)
    await _await_subscribed(service, 1)
    await stub.Pay(pay_request(), metadata=other.metadata)
    await stub.Pay(pay_request(), metadata=mine.metadata)
    events = await reader.wait_for(2)
    assert {e.order.application_id for e in events} == {mine.id}


async def test_shared_serialization_still_serves_each_stream_only_what_it_asks_for(
    stub, service, make_app, open_stream
):
    # Each event is serialized once for all its subscribers (EncodedEvents): several streams of
    # two applications, some filtered, each get exactly the events the table holds for them.
    mine, other = await make_app(), await make_app()
    everything = {app.id: [await open_stream(app) for _ in range(3)] for app in (mine, other)}
    users = {mine.id: 501, other.id: 502}
    by_user = {app.id: await open_stream(app, tg_use_id=users[app.id]) for app in (mine, other)}
    by_type = {
        app.id: await open_stream(app, types=["order.invoice_created"]) for app in (mine, other)
    }
    await _await_subscribed(service, 10)
    for app in (mine, other, mine):
        await stub.Pay(pay_request(tg_use_id=users[app.id]), metadata=app.metadata)
        await stub.Pay(pay_request(tg_use_id=999), metadata=app.metadata)
    for app, count in ((mine, 8), (other, 4)):
        table = await _table_events(service, app)
        assert len(table) == count
        for reader in everything[app.id]:
            events = await reader.wait_for(count)
            assert [(e.event_id, e.type) for e in events] == table
            assert {e.order.application_id for e in events} == {app.id}
        mine_only = await by_user[app.id].wait_for(count // 2)
        assert {(e.order.application_id, e.order.tg_use_id) for e in mine_only} == {
            (app.id, users[app.id])
        }
        invoices = await by_type[app.id].wait_for(count // 2)
        assert [(e.event_id, e.type) for e in invoices] == [
            event for event in table if event[1] == "order.invoice_created"
        ]


async def test_resuming_from_a_cursor_yields_exactly_the_missed_events(stub, service, app):
    request = payment_pb2.ListEventsRequest(start=payment_pb2.RETENTION_START)
    for _ in range(3):
        await stub.Pay(pay_request(), metadata=app.metadata)
    listed = (await stub.ListEvents(request, metadata=app.metadata)).events
    assert len(listed) == 6
    # Disconnected after the second event; resume from its cursor.
    call = stub.StreamInvoiceEvents(
        payment_pb2.StreamInvoiceEventsRequest(after_cursor=listed[1].cursor),
        metadata=app.metadata,
    )
    resumed = []
    async for message in call:
        if not message.heartbeat:
            resumed.append(message.event_id)
        if len(resumed) == 4:
            break
    call.cancel()
    assert resumed == [e.event_id for e in listed[2:]]


async def test_filters_by_order_user_and_type(stub, service, app):
    first = await stub.Pay(pay_request(tg_use_id=31337), metadata=app.metadata)
    await stub.Pay(pay_request(tg_use_id=31338), metadata=app.metadata)
    start = payment_pb2.RETENTION_START

    async def listed(**filters: Any) -> list[tuple[int, str]]:
        page = await stub.ListEvents(
            payment_pb2.ListEventsRequest(start=start, **filters), metadata=app.metadata
        )
        return [(e.order.tg_payment_id, e.type) for e in page.events]

    assert await listed(tg_payment_id=first.tg_payment_id) == [
        (first.tg_payment_id, "order.created"),
        (first.tg_payment_id, "order.invoice_created"),
    ]
    assert await listed(tg_use_id=31337) == await listed(tg_payment_id=first.tg_payment_id)
    assert [t for _, t in await listed(types=["order.invoice_created"])] == [
        "order.invoice_created"
    ] * 2


async def test_list_events_pages_through_everything(stub, app):
    for _ in range(3):
        await stub.Pay(pay_request(), metadata=app.metadata)
    seen, token = [], ""
    for _ in range(10):
        page = await stub.ListEvents(
            payment_pb2.ListEventsRequest(
                start=payment_pb2.RETENTION_START, page_size=4, page_token=token
            ),
            metadata=app.metadata,
        )
        seen += [e.event_id for e in page.events]
        token = page.next_page_token
        if not token:
            break
    everything = await stub.ListEvents(
        payment_pb2.ListEventsRequest(start=payment_pb2.RETENTION_START), metadata=app.metadata
    )
    assert seen == [e.event_id for e in everything.events]
    assert len(seen) == 6


async def test_invoice_outcomes_carry_the_sdks_invoice_closed_result(stub, app):
    created = await stub.Pay(pay_request(), metadata=app.metadata)
    await stub.CancelOrder(
        payment_pb2.CancelOrderRequest(tg_payment_id=created.tg_payment_id), metadata=app.metadata
    )
    page = await stub.ListEvents(
        payment_pb2.ListEventsRequest(
            start=payment_pb2.RETENTION_START, tg_payment_id=created.tg_payment_id
        ),
        metadata=app.metadata,
    )
    cancelled = page.events[-1]
    assert cancelled.type == "order.cancelled"
    assert (cancelled.invoice_closed.order_id, cancelled.invoice_closed.status) == (
        created.tg_payment_id,
        "cancelled",
    )
    assert not page.events[0].HasField("invoice_closed")


async def test_an_idle_stream_gets_heartbeats_that_carry_its_position(
    stub, service, app, open_stream
):
    reader = await open_stream(app)
    await eventually(lambda: reader.heartbeats >= 2, what="two heartbeats")  # every 0.5 s
    assert reader.events == []


async def test_a_late_committing_transaction_is_not_skipped(
    stub, service, app, open_stream, database_url
):
    reader = await open_stream(app)
    await _await_subscribed(service, 1)
    slow = await asyncpg.connect(database_url)
    try:
        transaction = slow.transaction()
        await transaction.start()
        # Written first, committed last: its id is lower than the events that follow.
        await slow.execute(
            "INSERT INTO events (application_id, type, data) VALUES ($1::uuid, 'test.late', '{}')",
            app.id,
        )
        for _ in range(2):
            await stub.Pay(pay_request(), metadata=app.metadata)
        await asyncio.sleep(0.3)  # give a careless reader time to run ahead of the late row
        held_back = len(reader.events)
        await transaction.commit()
    finally:
        await slow.close()
    events = await reader.wait_for(5)
    assert held_back == 0  # nothing after the open transaction was delivered before it ended
    types = [e.type for e in events]
    assert "test.late" in types and len(types) == 5
    assert sorted(e.event_id for e in events) == sorted(
        i for i, _ in await _table_events(service, app)
    )


async def test_no_event_is_lost_when_the_listener_connection_is_killed(
    stub, service, app, open_stream
):
    assert service.hub is not None
    reader = await open_stream(app)
    await _await_subscribed(service, 1)
    before = service.listener.connects
    killed = await service.pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'portex-pay event listener' AND datname = current_database()"
    )
    assert killed >= 1
    paid = await stub.Pay(pay_request(), metadata=app.metadata)
    events = await reader.wait_for(2)
    assert [e.order.tg_payment_id for e in events] == [paid.tg_payment_id] * 2
    listener = service.listener
    await eventually(lambda: listener.connects != before, what="the listener LISTENs again")


async def test_an_expired_cursor_is_out_of_range_with_advice_to_relist(stub, service, app):
    await stub.Pay(pay_request(), metadata=app.metadata)
    page = await stub.ListEvents(
        payment_pb2.ListEventsRequest(start=payment_pb2.RETENTION_START), metadata=app.metadata
    )
    old = page.events[0]
    state = await service.pool.fetchrow("SELECT pruned_xid::text, pruned_id FROM event_log_state")
    await service.pool.execute(
        "UPDATE event_log_state SET pruned_xid = (SELECT xid FROM events WHERE id = $1), "
        "pruned_id = $1",
        int(page.events[-1].event_id),
    )
    try:
        call = stub.StreamInvoiceEvents(
            payment_pb2.StreamInvoiceEventsRequest(after_cursor=old.cursor), metadata=app.metadata
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
        assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert details(raised.value)["ErrorInfo"].reason == "CURSOR_EXPIRED"
    finally:
        await service.pool.execute(
            "UPDATE event_log_state SET pruned_xid = $1::text::xid8, pruned_id = $2",
            state["pruned_xid"],
            state["pruned_id"],
        )


async def test_a_malformed_cursor_is_invalid_argument(stub, app):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListEvents(
            payment_pb2.ListEventsRequest(after_cursor="not-a-cursor"), metadata=app.metadata
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_pruning_removes_old_events_and_records_the_horizon(empty_db: str):
    """On a database of its own: the horizon it records would expire other tests' cursors."""
    from portex_pay.adapters.postgres.events import EventLog
    from portex_pay.adapters.postgres.migrations import migrate
    from portex_pay.adapters.postgres.pool import create_pool
    from portex_pay.domain.events import Cursor

    pool = await create_pool(empty_db, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        app_id = await pool.fetchval(
            "INSERT INTO applications (name, webhook_secret, signing_secret) "
            "VALUES ('p', 's', 's') RETURNING id"
        )
        ids = [
            await pool.fetchval(
                "INSERT INTO events (application_id, type, data, occurred_at) "
                "VALUES ($1, 'test.event', '{}', now() - make_interval(days => $2)) RETURNING id",
                app_id,
                age,
            )
            for age in (400, 1)
        ]
        log = EventLog(pool)
        assert await log.pruned_up_to() is None
        assert await log.prune(365 * 86_400) == 1
        horizon = await log.pruned_up_to()
        assert horizon is not None and horizon.id == ids[0]
        remaining = await log.read_after(Cursor(0, 0), limit=10)
        assert [e.event_id for e in remaining] == [ids[1]]
    finally:
        await pool.close()


async def _bulk_events(service: PortexApp, app: TestApp, count: int) -> None:
    """`count` events in one transaction (one statement): the fastest writer there is."""
    await service.pool.execute(
        "INSERT INTO events (application_id, type, data) "
        "SELECT $1::uuid, 'test.bulk', jsonb_build_object('n', g) FROM generate_series(1, $2) g",
        app.id,
        count,
    )


async def test_a_slow_consumer_stays_bounded_and_delays_nobody(
    database_url, fake_telegram, make_app
):
    small = PortexApp(
        make_settings(database_url, fake_telegram.base_url, stream_buffer=8, stream_heartbeat=60)
    )
    await small.start()
    assert small.hub is not None
    app = await make_app()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{small.grpc_port}") as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            request = payment_pb2.StreamInvoiceEventsRequest()
            slow = stub.StreamInvoiceEvents(request, metadata=app.metadata)  # never read, yet
            fast = Reader(stub.StreamInvoiceEvents(request, metadata=app.metadata))
            await slow.initial_metadata()
            await fast.call.initial_metadata()
            await _await_subscribed(small, 2)

            started = time.monotonic()
            await _bulk_events(small, app, 2000)
            await fast.wait_for(2000, timeout=20)
            fast_took = time.monotonic() - started
            # The slow one overflowed and went back to reading the table, where it now waits on
            # gRPC flow control: nothing of the 2000 piles up in its queue.
            assert len(small.hub.queue_sizes()) == 2
            assert max(small.hub.queue_sizes()) <= 8

            # Once it reads, it catches up from the table: every event, in order, once.
            got = []
            async for message in slow:
                if not message.heartbeat:
                    got.append(message.event_id)
                if len(got) == 2000:
                    break
            slow.cancel()
            assert got == [e.event_id for e in fast.events]
            fast.close()
    finally:
        await small.stop()
    assert fast_took < 15


async def test_five_hundred_subscribers_all_receive_each_event(service, app):
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}") for _ in range(5)]
    readers: list[Reader] = []
    try:
        for index in range(500):
            stub = payment_pb2_grpc.PaymentServiceStub(channels[index % 5])
            readers.append(
                Reader(
                    stub.StreamInvoiceEvents(
                        payment_pb2.StreamInvoiceEventsRequest(), metadata=app.metadata
                    )
                )
            )
        await asyncio.gather(*(r.call.initial_metadata() for r in readers))
        await _await_subscribed(service, 500)
        await _bulk_events(service, app, 3)
        results = await asyncio.gather(*(r.wait_for(3, timeout=30) for r in readers))
        expected = [e.event_id for e in results[0]]
        assert len(expected) == 3
        assert all([e.event_id for e in events] == expected for events in results)
    finally:
        for reader in readers:
            reader.close()
        for channel in channels:
            await channel.close()


async def test_stream_order_compares_transaction_ids_as_numbers(empty_db: str):
    """xid 9 comes before xid 10 and 100 (as text it would not), so no event is reordered or
    skipped when transaction ids gain a digit."""
    from portex_pay.adapters.postgres.events import EventLog
    from portex_pay.adapters.postgres.migrations import migrate
    from portex_pay.adapters.postgres.pool import create_pool
    from portex_pay.domain.events import Cursor

    pool = await create_pool(empty_db, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        app_id = await pool.fetchval(
            "INSERT INTO applications (name, webhook_secret, signing_secret) "
            "VALUES ('order', 's', 's') RETURNING id"
        )
        for xid in (10, 9, 100):  # long-finished transaction ids: below any live horizon
            await pool.execute(
                "INSERT INTO events (xid, application_id, type) "
                "VALUES ($1::text::xid8, $2, 'test.xid')",
                str(xid),
                app_id,
            )
        log = EventLog(pool)
        everything = await log.read_after(Cursor(0, 0), limit=10)
        assert [e.cursor.xid for e in everything] == [9, 10, 100]
        after_first = await log.read_after(everything[0].cursor, limit=10)
        assert [e.cursor.xid for e in after_first] == [10, 100]
    finally:
        await pool.close()
