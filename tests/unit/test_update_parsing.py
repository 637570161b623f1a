"""The update parser and the payload check never raise anything but their declared error."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given
from hypothesis import strategies as st

from portex_pay.domain.pay import sign_invoice_payload, verify_invoice_payload
from portex_pay.domain.updates import MalformedUpdate, SuccessfulPayment, parse_update

SECRET = b"s" * 32

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(st.text())
def test_verify_invoice_payload_never_raises_on_any_string(payload: str) -> None:
    assert verify_invoice_payload(SECRET, payload) is None or payload.startswith("v1.")


def test_a_non_ascii_payload_is_simply_not_ours() -> None:
    genuine = sign_invoice_payload(SECRET, 7, 4)
    assert verify_invoice_payload(SECRET, genuine) == (7, 4)
    for forged in ("v1.7.4.é", "v1.٣.4." + genuine.rsplit(".", 1)[1], genuine + "\n"):
        assert verify_invoice_payload(SECRET, forged) is None


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
