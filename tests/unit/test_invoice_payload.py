"""The invoice payload sent to Telegram: our signed reference to the order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from portex_pay.domain.pay import (
    INVOICE_PAYLOAD_MAX_BYTES,
    sign_invoice_payload,
    verify_invoice_payload,
)

SECRET = b"s" * 32
ids = st.integers(min_value=1, max_value=2**63 - 1)


@given(ids, ids)
def test_a_signed_payload_verifies_and_fits_telegrams_limit(order_id: int, amount: int) -> None:
    payload = sign_invoice_payload(SECRET, order_id, amount)
    assert len(payload.encode()) <= INVOICE_PAYLOAD_MAX_BYTES
    assert verify_invoice_payload(SECRET, payload) == (order_id, amount)


@given(ids, ids, ids)
def test_a_changed_amount_or_order_is_refused(order_id: int, amount: int, other: int) -> None:
    payload = sign_invoice_payload(SECRET, order_id, amount)
    head, _, mac = payload.rpartition(".")
    version, order, amount_text = head.split(".")
    if other != amount:
        assert verify_invoice_payload(SECRET, f"{version}.{order}.{other}.{mac}") is None
    if other != order_id:
        assert verify_invoice_payload(SECRET, f"{version}.{other}.{amount_text}.{mac}") is None


def test_another_secret_or_garbage_is_refused() -> None:
    payload = sign_invoice_payload(SECRET, 7, 5)
    assert verify_invoice_payload(b"t" * 32, payload) is None
    for garbage in ["", "v1", "v1.7.5", "v2.7.5.abc", "v1.x.5.abc", payload + "x"]:
        assert verify_invoice_payload(SECRET, garbage) is None
