"""Telegram updates handled by the UpdateProcessor (service/updates.py) on in-memory fakes of its
ports: pre-checkout answers within their budget, payments recorded once, buyer messages, and the
updates that cannot be processed (dead letters, retries of an outage)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any
from uuid import UUID, uuid4

import pytest
from structlog.testing import capture_logs

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.pay import PayloadKeys, sign_invoice_payload
from portex_pay.service.outage import StoreUnavailable
from portex_pay.service.relay import RelayService
from portex_pay.service.updates import UpdateProcessor, UpdateRetry
from tests.telegram_updates import pre_checkout_query
from tests.telegram_updates import successful_payment as successful_payment_update
from tests.unit.fakes import (
    NOW,
    FakeDeadLetters,
    FakeTelegram,
    InMemoryPayments,
    InMemoryRelay,
    make_order,
)

SECRET = b"s" * 32
APP = uuid4()
BOT = Bot(777, "777:token", "shop_bot")
APPLICATION = Application(id=APP, name="shop", bot=BOT)
BUYER = 42


class Outage(InMemoryPayments):
    """A store that is down: every use of it fails as PostgreSQL being unreachable would."""

    async def checkout_context(
        self, bot_id: int, update_id: int, application_id: UUID, tg_payment_id: int
    ) -> tuple[bool, Order | None]:
        raise StoreUnavailable("connection refused")

    def transaction(self) -> Any:
        raise StoreUnavailable("connection refused")


def processor(
    payments: InMemoryPayments, telegram: FakeTelegram, letters: FakeDeadLetters, **options: Any
) -> UpdateProcessor:
    return UpdateProcessor(
        payments,
        letters,
        telegram,
        PayloadKeys(SECRET),
        decision_timeout=1.0,
        auto_refund=True,
        clock=lambda: NOW,
        **options,
    )


def pre_checkout(update_id: int, order_id: int, amount: int = 50, payload: str | None = None):
    return pre_checkout_query(
        update_id=update_id,
        payer=BUYER,
        payload=payload or sign_invoice_payload(SECRET, order_id, amount),
        total_amount=amount,
    )


def successful_payment(update_id: int, order_id: int, charge_id: str, amount: int = 50):
    return successful_payment_update(
        payer=BUYER,
        payload=sign_invoice_payload(SECRET, order_id, amount),
        charge_id=charge_id,
        total_amount=amount,
        update_id=update_id,
    )


@pytest.fixture
def parts():
    payments = InMemoryPayments()
    payments.state.orders[1] = make_order(1, APP, amount=50, tg_use_id=BUYER)
    return payments, FakeTelegram(), FakeDeadLetters()


async def test_a_checkout_of_our_payable_order_is_approved_once(parts) -> None:
    payments, telegram, letters = parts
    handle = processor(payments, telegram, letters).handle
    await handle(APPLICATION, pre_checkout(1, 1))
    await handle(APPLICATION, pre_checkout(1, 1))  # Telegram delivered it twice
    assert telegram.answers == [("q1", True, None)]
    assert payments.event_types() == ["checkout.approved"]


@pytest.mark.parametrize(
    ("update", "reason"),
    [
        (pre_checkout(2, 1, payload="v1.1.50.forged"), "PAYLOAD_INVALID"),
        (pre_checkout(3, 1, amount=49), "AMOUNT_MISMATCH"),
        (pre_checkout(4, 99), "ORDER_NOT_FOUND"),
    ],
)
async def test_a_checkout_that_does_not_match_is_declined_with_its_reason(
    parts, update, reason
) -> None:
    payments, telegram, letters = parts
    await processor(payments, telegram, letters).handle(APPLICATION, update)
    ((_, ok, message),) = telegram.answers
    assert not ok and message
    assert payments.state.events[-1][3]["reason"] == reason


async def test_a_store_outage_declines_the_checkout_rather_than_leaving_it_unanswered(
    parts,
) -> None:
    _, telegram, letters = parts
    await processor(Outage(), telegram, letters).handle(APPLICATION, pre_checkout(5, 1))
    assert telegram.answers == [
        ("q5", False, "Payments are temporarily unavailable. Please try again.")
    ]
    assert letters.letters == []


async def test_a_payment_pays_the_order_and_the_buyer_hears_of_it_when_asked(parts) -> None:
    payments, telegram, letters = parts
    quiet = processor(payments, telegram, letters)
    await quiet.handle(APPLICATION, successful_payment(6, 1, "ch-1"))
    assert payments.state.orders[1].state is OrderState.PAID
    assert telegram.messages == []  # buyer messages are off by default
    payments.state.orders[2] = make_order(2, APP, amount=50, tg_use_id=BUYER)
    talkative = replace(APPLICATION, buyer_messages=True)
    await quiet.handle(talkative, successful_payment(7, 2, "ch-2"))
    await quiet.handle(talkative, successful_payment(7, 2, "ch-2"))  # redelivered: once
    ((chat_id, text),) = telegram.messages
    assert chat_id == BUYER and "50 Stars" in text and "order 2" in text


async def test_a_malformed_update_is_dead_lettered_and_acknowledged(parts) -> None:
    payments, telegram, letters = parts
    update = {"update_id": 8, "pre_checkout_query": {"id": "q8"}}  # no payer, no amount
    await processor(payments, telegram, letters).handle(APPLICATION, update, b"raw bytes")
    (letter,) = letters.letters
    assert (letter.reason, letter.kind, letter.raw, letter.attempts) == (
        "MALFORMED_UPDATE",
        "pre_checkout_query",
        b"raw bytes",
        1,
    )
    assert letters.announced == [["update.dead_lettered"]]


async def test_an_outage_is_retried_and_dead_lettered_only_after_max_attempts(parts) -> None:
    _, telegram, letters = parts
    handle = processor(Outage(), telegram, letters, max_attempts=3).handle
    update = successful_payment(9, 1, "ch-9")
    for _ in range(2):
        with pytest.raises(UpdateRetry):
            await handle(APPLICATION, update)
    assert letters.letters == []
    await handle(APPLICATION, update)  # the third attempt gives up: acknowledged, kept
    (letter,) = letters.letters
    assert (letter.reason, letter.attempts) == ("RETRIES_EXHAUSTED", 3)
    # Telegram says someone paid: the dead letter is also a payment anomaly.
    assert letters.announced == [["update.dead_lettered", "payment.anomaly"]]


async def test_an_update_of_a_kind_newer_than_the_code_is_relayed_as_sent_or_left_alone(
    parts,
) -> None:
    """Relayed, as its bytes, to the app's bot when it asked for the kind; else acknowledged:
    never a dead letter, never an error."""
    payments, telegram, letters = parts
    store = InMemoryRelay()
    relay = RelayService(
        store, telegram, no_application, default_updates_mode="webhook", webhook_timeout=1.0
    )
    handle = processor(payments, telegram, letters, relay=relay).handle
    await store.enable(BOT.id, APP)
    await store.set_allowed_updates(BOT.id, ("future_kind_x", "message"))
    raw = '{"update_id": 9, "future_kind_x": {"text": "ωμέγα", "ratio": 1.50}}'.encode()
    with capture_logs() as logs:
        await handle(APPLICATION, json.loads(raw), raw=raw)
        await store.set_allowed_updates(BOT.id, ("message",))
        await handle(APPLICATION, {"update_id": 10, "future_kind_x": {}}, raw=b"{}")
        await handle(APPLICATION, {"update_id": 11, "another_kind": {}})  # polling: no raw
    assert store.updates[BOT.id] == {9: raw}
    assert letters.letters == [] and telegram.answers == [] and telegram.messages == []
    assert [entry for entry in logs if entry["log_level"] in ("warning", "error")] == []


async def test_the_default_set_takes_kinds_newer_than_the_code(parts) -> None:
    payments, telegram, letters = parts
    store = InMemoryRelay()
    relay = RelayService(
        store, telegram, no_application, default_updates_mode="webhook", webhook_timeout=1.0
    )
    await store.enable(BOT.id, APP)  # no allowed_updates: Telegram's default set
    update = {"update_id": 12, "future_kind_x": {}}
    await processor(payments, telegram, letters, relay=relay).handle(APPLICATION, update)
    assert store.updates[BOT.id] == {12: b'{"update_id": 12, "future_kind_x": {}}'}
    assert letters.letters == []


async def no_application(bot_id: int) -> Application | None:
    return None
