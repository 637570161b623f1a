"""The EventStore port's contract (service/ports.py), on the fake and on PostgreSQL: what the
event stream and ListEvents (service/stream.py) rely on. Events are read in stream order, strictly
after a cursor, so that reading on from the last cursor neither skips nor repeats; a read stops
below the oldest unit of work still open, so an event that commits late is never passed over;
an event rolled back is never read; `now()` divides what is readable from what comes later;
another application's events are not read; pruning says how far it reached."""

from __future__ import annotations

from uuid import UUID

import pytest

from portex_pay.domain.events import START, Cursor, EventType
from tests.contract.backend import Backend
from tests.contract.steps import announced, events_of, new_order, unleased


class Boom(Exception):
    """A failure inside a unit of work."""


async def write(backend: Backend, application_id: UUID, kind: str) -> None:
    """An event of its own (as the ledger writes an anomaly), committed at once."""
    async with backend.payments.transaction() as tx:
        await tx.events.add(application_id, None, EventType.PAYMENT_ANOMALY, {"kind": kind})


async def test_events_are_read_in_order_strictly_after_the_cursor(backend: Backend) -> None:
    app = await backend.add_application(None)
    for n in range(5):
        await write(backend, app, f"e{n}")
    events = await backend.events.read_after(START, limit=100, application_id=app)
    assert [event.data["kind"] for event in events] == ["e0", "e1", "e2", "e3", "e4"]
    cursors = [event.cursor for event in events]
    assert cursors == sorted(cursors) and len(set(cursors)) == 5
    assert all(event.application_id == app for event in events)
    assert all(event.occurred_at.tzinfo is not None for event in events)
    after = await backend.events.read_after(cursors[1], limit=100, application_id=app)
    assert after == events[2:]
    assert await backend.events.read_after(cursors[-1], limit=100, application_id=app) == []


async def test_reading_on_from_the_last_cursor_neither_skips_nor_repeats(
    backend: Backend,
) -> None:
    app = await backend.add_application(None)
    for n in range(7):
        await write(backend, app, f"e{n}")
    read: list[str] = []
    cursor = START
    while page := await backend.events.read_after(cursor, limit=3, application_id=app):
        assert len(page) <= 3
        read += [event.data["kind"] for event in page]
        cursor = page[-1].cursor
    assert read == [f"e{n}" for n in range(7)]


async def test_reads_are_scoped_to_an_application_and_an_order(backend: Backend) -> None:
    app, other = await backend.add_application(None), await backend.add_application(None)
    first = await new_order(backend, app)
    second = await new_order(backend, app)
    await write(backend, other, "theirs")
    assert [e.tg_payment_id for e in await events_of(backend, app)] == [
        first.tg_payment_id,
        second.tg_payment_id,
    ]
    mine = await backend.events.read_after(START, limit=100, tg_payment_id=second.tg_payment_id)
    assert [(e.type, e.tg_payment_id) for e in mine] == [("order.created", second.tg_payment_id)]
    theirs = await backend.events.read_after(
        START, limit=100, application_id=other, tg_payment_id=first.tg_payment_id
    )
    assert theirs == []
    everyone = await backend.events.read_after(START, limit=100)
    assert {event.application_id for event in everyone} == {app, other}


async def test_now_lies_after_every_readable_event_and_before_every_later_one(
    backend: Backend,
) -> None:
    app = await backend.add_application(None)
    await write(backend, app, "before")
    now = await backend.events.now()
    (before,) = await events_of(backend, app)
    assert before.cursor <= now
    await write(backend, app, "after")
    assert [e.data["kind"] for e in await backend.events.read_after(now, limit=10)] == ["after"]
    assert await backend.events.now() >= now


async def test_an_open_unit_of_work_holds_back_its_events_and_all_after_them(
    backend: Backend,
) -> None:
    """A reader must never pass an event that commits late: nothing is read beyond the oldest
    unit of work still open, and once it commits, its events come first."""
    app = await backend.add_application(None)
    await write(backend, app, "early")
    async with backend.payments.transaction() as slow:
        await slow.events.add(app, None, EventType.PAYMENT_ANOMALY, {"kind": "slow"})
        await write(backend, app, "quick")
        readable = [e.data["kind"] for e in await events_of(backend, app)]
        assert readable == ["early"]
        now = await backend.events.now()
        assert [e.data["kind"] for e in await backend.events.read_after(now, limit=10)] == []
    assert [e.data["kind"] for e in await events_of(backend, app)] == ["early", "slow", "quick"]
    assert [e.data["kind"] for e in await backend.events.read_after(now, limit=10)] == [
        "slow",
        "quick",
    ]


async def test_the_events_of_a_unit_of_work_that_raises_are_never_read(backend: Backend) -> None:
    app = await backend.add_application(None)
    with pytest.raises(Boom):
        async with backend.payments.transaction() as tx:
            await tx.events.add(app, None, EventType.PAYMENT_ANOMALY, {"kind": "lost"})
            await write(backend, app, "kept")
            raise Boom
    assert [e.data["kind"] for e in await events_of(backend, app)] == ["kept"]


async def test_an_order_event_carries_the_order_after_its_change(backend: Backend) -> None:
    app = await backend.add_application(None)
    order = await new_order(backend, app)
    linked = await backend.orders.record_invoice_link(order.tg_payment_id, "https://t.me/$a")
    cancelled = await backend.orders.cancel(app, order.tg_payment_id)
    assert linked is not None and cancelled is not None
    events = await events_of(backend, app)
    assert [(e.type, e.tg_payment_id) for e in events] == [
        ("order.created", order.tg_payment_id),
        ("order.invoice_created", order.tg_payment_id),
        ("order.cancelled", order.tg_payment_id),
    ]
    assert [announced(e) for e in events] == [unleased(order), linked, cancelled]
    assert "invoice_lease_until" not in events[0].data["order"]


async def test_pruning_says_how_far_it_reached(backend: Backend) -> None:
    app = await backend.add_application(None)
    assert await backend.events.pruned_up_to() is None
    for n in range(3):
        await write(backend, app, f"e{n}")
    last = (await events_of(backend, app))[-1].cursor
    assert await backend.prune_events() == 3
    pruned = await backend.events.pruned_up_to()
    assert pruned == last
    assert await events_of(backend, app) == []
    await write(backend, app, "later")
    (later,) = await backend.events.read_after(pruned or Cursor(0, 0), limit=10)
    assert later.data["kind"] == "later" and later.cursor > last
