"""EncodedEvents (api/grpc/convert.py): an event's InvoiceEvent is serialized once and the same
bytes are shared by every stream it goes to; the bytes are keyed by application and cursor, so an
entry never answers for another application's event; heartbeats are not kept; the cache is
bounded."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from portex.payment.v1 import payment_pb2
from portex_pay.api.grpc.convert import EncodedEvents, event_message
from portex_pay.domain.events import Cursor, Event, EventType

MINE, OTHER = uuid4(), uuid4()


def event(cursor: Cursor, application_id=MINE, event_type: str = EventType.ORDER_PAID) -> Event:
    return Event(
        cursor=cursor,
        application_id=application_id,
        tg_payment_id=7,
        type=event_type,
        data={},
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def test_an_event_is_serialized_once_for_every_stream() -> None:
    encoded = EncodedEvents()
    paid = event(Cursor(10, 1))
    first = encoded(paid.cursor, paid)
    assert first == event_message(paid.cursor, paid).SerializeToString()
    # Another subscriber, the same event (an equal copy, as a catch-up read returns it).
    assert encoded(paid.cursor, event(Cursor(10, 1))) is first


def test_the_bytes_of_one_application_never_answer_for_another() -> None:
    encoded = EncodedEvents()
    # The same position in two applications (cursors are unique in one database; the key does
    # not rely on it).
    mine = event(Cursor(10, 1), MINE, EventType.ORDER_PAID)
    other = event(Cursor(10, 1), OTHER, EventType.ORDER_CANCELLED)
    assert payment_pb2.InvoiceEvent.FromString(encoded(mine.cursor, mine)).type == "order.paid"
    decoded = payment_pb2.InvoiceEvent.FromString(encoded(other.cursor, other))
    assert decoded.type == "order.cancelled"
    assert decoded.invoice_closed.status == "cancelled"


def test_a_heartbeat_carries_its_cursor_and_is_not_kept() -> None:
    encoded = EncodedEvents(size=1)
    paid = event(Cursor(10, 1))
    kept = encoded(paid.cursor, paid)
    beat = payment_pb2.InvoiceEvent.FromString(encoded(Cursor(11, 2), None))
    assert beat.heartbeat and beat.cursor == Cursor(11, 2).encode()
    assert encoded(paid.cursor, paid) is kept  # the heartbeat took no room


def test_the_oldest_entries_make_room_beyond_the_size() -> None:
    encoded = EncodedEvents(size=2)
    events = [event(Cursor(10, n)) for n in range(3)]
    first, second, _ = (encoded(e.cursor, e) for e in events)
    assert encoded(events[1].cursor, events[1]) is second
    again = encoded(events[0].cursor, events[0])  # evicted: made again, equal
    assert again == first and again is not first
