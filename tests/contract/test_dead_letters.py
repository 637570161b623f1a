"""The DeadLetters port's contract (service/ports.py), on the fake and on PostgreSQL: what the
update processor relies on when it gives up on an update. A letter is kept once per update (an
update the ledger processed is never dead-lettered afterwards) or, without an update id, once per
bot and body; it is announced by the events asked for, in that order, beside no order."""

from __future__ import annotations

from uuid import UUID

from portex_pay.domain.events import EventType
from portex_pay.domain.updates import DeadLetter
from tests.contract.backend import Backend
from tests.contract.steps import BOT_ID, event_types, events_of, new_update_id

ANNOUNCE = (EventType.UPDATE_DEAD_LETTERED, EventType.PAYMENT_ANOMALY)


def letter(
    application_id: UUID, update_id: int | None, raw: bytes = b'{"x": 1}', bot_id: int = BOT_ID
) -> DeadLetter:
    return DeadLetter(
        application_id=application_id,
        bot_id=bot_id,
        update_id=update_id,
        kind="successful_payment",
        raw=raw,
        error="MalformedUpdate: 'total_amount' is not a JSON integer",
        attempts=1,
        reason="MALFORMED_UPDATE",
    )


async def test_a_letter_is_kept_and_announced_as_asked(backend: Backend) -> None:
    app = await backend.add_application(None)
    update_id = new_update_id()
    letter_id = await backend.dead_letters.record(letter(app, update_id), ANNOUNCE)
    assert letter_id is not None
    events = await events_of(backend, app)
    assert [(event.type, event.tg_payment_id) for event in events] == [
        ("update.dead_lettered", None),
        ("payment.anomaly", None),
    ]
    expected = {
        "dead_letter_id": letter_id,
        "update_id": update_id,
        "kind": "successful_payment",
        "error": "MalformedUpdate: 'total_amount' is not a JSON integer",
        "reason": "MALFORMED_UPDATE",
    }
    assert [event.data for event in events] == [expected, expected]


async def test_an_update_is_dead_lettered_once(backend: Backend) -> None:
    app = await backend.add_application(None)
    update_id = new_update_id()
    assert await backend.dead_letters.record(letter(app, update_id), ANNOUNCE) is not None
    again = letter(app, update_id, raw=b'{"x": 2}')  # a later attempt, whatever its bytes
    assert await backend.dead_letters.record(again, ANNOUNCE) is None
    assert len(await event_types(backend, app)) == 2


async def test_an_update_the_ledger_processed_is_not_dead_lettered(backend: Backend) -> None:
    app = await backend.add_application(None)
    update_id = new_update_id()
    assert await backend.payments.claim(BOT_ID, update_id, "support_command")
    assert await backend.dead_letters.record(letter(app, update_id), ANNOUNCE) is None
    assert await event_types(backend, app) == []
    # ... and a dead-lettered update is not processed when it comes again.
    other = new_update_id()
    assert await backend.dead_letters.record(letter(app, other, raw=b"{}"), ANNOUNCE) is not None
    assert not await backend.payments.claim(BOT_ID, other, "support_command")


async def test_a_letter_without_an_update_id_is_kept_once_per_bot_and_body(
    backend: Backend,
) -> None:
    app = await backend.add_application(None)
    first = await backend.dead_letters.record(letter(app, None, b"garbage"), ANNOUNCE[:1])
    assert first is not None
    assert await backend.dead_letters.record(letter(app, None, b"garbage"), ANNOUNCE[:1]) is None
    other_body = await backend.dead_letters.record(letter(app, None, b"rubbish"), ANNOUNCE[:1])
    other_bot = await backend.dead_letters.record(
        letter(app, None, b"garbage", bot_id=BOT_ID + 1), ANNOUNCE[:1]
    )
    assert other_body is not None and other_bot is not None
    assert len({first, other_body, other_bot}) == 3
    assert await event_types(backend, app) == ["update.dead_lettered"] * 3
