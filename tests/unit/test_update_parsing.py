"""The update parser and the payload check never raise anything but their declared error; an
update is read once into everything its handling needs, malformed or not."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portex_pay.domain.pay import PayloadKeys, sign_invoice_payload, verify_invoice_payload
from portex_pay.domain.updates import (
    Chat,
    Command,
    MalformedUpdate,
    PreCheckoutQuery,
    SignedPayload,
    SuccessfulPayment,
    parse_update,
    read_update,
)
from tests.telegram_updates import pre_checkout_query, successful_payment

SECRET = b"s" * 32
KEYS = PayloadKeys(SECRET)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(st.text())
def test_verify_invoice_payload_never_raises_on_any_string(payload: str) -> None:
    assert verify_invoice_payload(KEYS, payload) is None or payload.startswith("v2.")


def test_a_non_ascii_payload_is_simply_not_ours() -> None:
    genuine = sign_invoice_payload(SECRET, 7, 4)
    assert verify_invoice_payload(KEYS, genuine) == (7, 4)
    for forged in ("v1.7.4.é", "v1.٣.4." + genuine.rsplit(".", 1)[1], genuine + "\n"):
        assert verify_invoice_payload(KEYS, forged) is None


@given(json_values)
def test_parse_update_raises_only_malformed_update(value: object) -> None:
    with contextlib.suppress(MalformedUpdate):
        parse_update(value)


def _payment(**changes: object) -> dict[str, object]:
    payment: dict[str, object] = {
        "currency": "XTR",
        "total_amount": 5,
        "invoice_payload": "p",
        "telegram_payment_charge_id": "stx1",
    }
    payment.update(changes)
    return {"update_id": 1, "message": {"from": {"id": 9}, "successful_payment": payment}}


def test_money_is_never_coerced() -> None:
    assert isinstance(parse_update(_payment()), SuccessfulPayment)
    for amount in ("5", 5.9, 5.0, True, 2**63, 0, -5):
        try:
            parse_update(_payment(total_amount=amount))
        except MalformedUpdate:
            continue
        raise AssertionError(f"total_amount {amount!r} was accepted")


def test_ids_beyond_64_bits_and_nul_are_malformed() -> None:
    update = _payment()
    update["message"]["from"]["id"] = 2**64  # type: ignore[index]
    for bad in (update, _payment(telegram_payment_charge_id="st\x00x"), json.loads('{"a":1}')):
        try:
            parse_update(bad)
        except MalformedUpdate:
            continue
        raise AssertionError(f"{bad!r} was accepted")


@given(json_values)
def test_read_update_never_raises(value: object) -> None:
    read = read_update(value, KEYS)
    assert (read.content is None) == (read.malformed is not None)


def test_a_checkout_of_ours_is_read_with_its_signed_payload() -> None:
    update = pre_checkout_query(
        update_id=3, payer=9, payload=sign_invoice_payload(SECRET, 7, 50), total_amount=50
    )
    read = read_update(update, KEYS)
    assert isinstance(read.content, PreCheckoutQuery)
    assert (read.update_id, read.kind, read.record_kind) == (
        3,
        "pre_checkout_query",
        "pre_checkout_query",
    )
    assert (read.signed, read.query_id) == (SignedPayload(7, 50), "q3")
    assert read_update(update, PayloadKeys(b"another secret" * 3)).signed is None


def test_a_payment_of_another_invoice_is_read_unsigned_with_its_chat() -> None:
    update = successful_payment(payer=9, payload="own-sale-1", charge_id="stx-1", update_id=4)
    read = read_update(update, KEYS)
    assert isinstance(read.content, SuccessfulPayment)
    assert (read.kind, read.record_kind, read.signed) == ("message", "successful_payment", None)
    assert (read.chat, read.reply_chat_id()) == (Chat(9, "private"), 9)


def test_a_malformed_checkout_keeps_what_declines_and_records_it() -> None:
    update = pre_checkout_query(update_id=5, payer=9, payload="p", total_amount=50)
    update["pre_checkout_query"]["total_amount"] = "50"
    read = read_update(update, KEYS)
    assert (read.content, read.malformed) == (None, "'total_amount' is not a JSON integer")
    assert (read.update_id, read.record_kind, read.query_id) == (5, "pre_checkout_query", "q5")


def _message(text: object, chat: object) -> dict[str, object]:
    return {"update_id": 1, "message": {"message_id": 1, "text": text, "chat": chat}}


def test_a_bot_command_is_read_with_its_addressee() -> None:
    private = {"id": 5, "type": "private"}
    assert read_update(_message("/PaySupport@Shop_Bot now", private), KEYS).command == Command(
        "paysupport", "Shop_Bot"
    )
    assert read_update(_message("/terms", private), KEYS).command == Command("terms", None)
    assert read_update(_message("/terms@", private), KEYS).command == Command("terms", None)
    for text in ("terms", "", "  ", 5, None):
        assert read_update(_message(text, private), KEYS).command is None


def test_a_chat_without_a_usable_id_has_no_reply_chat() -> None:
    read = read_update(_message("/terms", {"id": "5", "type": "private"}), KEYS)
    assert read.chat == Chat(None, "private")
    with pytest.raises(MalformedUpdate):
        read.reply_chat_id()
