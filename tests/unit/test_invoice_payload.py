"""The invoice payload sent to Telegram: our signed reference to the order, and the key ring that
lets its secret be rotated (a retired key verifies while it is configured, and only then)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from portex_pay.domain.pay import (
    INT64_MAX,
    INVOICE_PAYLOAD_MAX_BYTES,
    PayloadKeys,
    payload_key_id,
    sign_invoice_payload,
    verify_invoice_payload,
)

SECRET = b"s" * 32
KEY_A = b"a" * 32  # the key before a rotation
KEY_B = b"b" * 32  # the key after it
KEYS = PayloadKeys(SECRET)
ids = st.integers(min_value=1, max_value=INT64_MAX)
# Payloads that sign_invoice_payload made before key ids existed (its output then, kept verbatim:
# they are what open invoices and subscriptions of that time carry).
V1_BY_K = ("v1.123456789.250.vDcxJNpeYzGSnkghMdKmYA", (123456789, 250))
V1_BY_TEST_SECRET = (
    "v1.9223372036854775807.9223372036854775807.gypbRUMLfh_57lECVFxfyg",
    (INT64_MAX, INT64_MAX),
)
TEST_SECRET = b"test-payload-secret-" + b"x" * 32


@given(ids, ids)
def test_a_signed_payload_verifies_and_fits_telegrams_limit(order_id: int, amount: int) -> None:
    payload = sign_invoice_payload(SECRET, order_id, amount)
    assert len(payload.encode()) <= INVOICE_PAYLOAD_MAX_BYTES
    assert verify_invoice_payload(KEYS, payload) == (order_id, amount)


def test_the_largest_payload_names_its_key_and_fits_telegrams_limit() -> None:
    payload = sign_invoice_payload(SECRET, INT64_MAX, INT64_MAX)
    assert payload.startswith(f"v2.{payload_key_id(SECRET)}.{INT64_MAX}.{INT64_MAX}.")
    assert len(payload.encode()) == 72 <= INVOICE_PAYLOAD_MAX_BYTES


def test_a_key_id_is_short_public_text_derived_from_the_key() -> None:
    kid = payload_key_id(SECRET)
    assert re.fullmatch(r"[A-Za-z0-9_-]{6}", kid)
    assert payload_key_id(SECRET) == kid != payload_key_id(KEY_A)
    assert kid not in SECRET.decode()


@given(ids, ids, ids)
def test_a_changed_amount_or_order_is_refused(order_id: int, amount: int, other: int) -> None:
    payload = sign_invoice_payload(SECRET, order_id, amount)
    head, _, mac = payload.rpartition(".")
    version, kid, order, amount_text = head.split(".")
    if other != amount:
        assert verify_invoice_payload(KEYS, f"{version}.{kid}.{order}.{other}.{mac}") is None
    if other != order_id:
        assert verify_invoice_payload(KEYS, f"{version}.{kid}.{other}.{amount_text}.{mac}") is None


def test_another_secret_or_garbage_is_refused() -> None:
    payload = sign_invoice_payload(SECRET, 7, 5)
    assert verify_invoice_payload(PayloadKeys(b"t" * 32), payload) is None
    garbage = [
        "",
        "v1",
        "v2",
        "v1.7.5",
        "v2.7.5.abc",
        "v1.x.5.abc",
        payload + "x",
        "v3" + payload[2:],
    ]
    for text in garbage:
        assert verify_invoice_payload(KEYS, text) is None
    # Not canonical: a leading zero, or the version marker moved.
    version, kid, rest = payload.split(".", 2)
    assert verify_invoice_payload(KEYS, f"{version}.{kid}.0{rest}") is None
    assert verify_invoice_payload(KEYS, f"v1.{rest}") is None


def test_a_payload_signed_before_key_ids_verifies_against_any_key_of_the_ring() -> None:
    payload, reference = V1_BY_K
    k = b"k" * 32
    assert verify_invoice_payload(PayloadKeys(k), payload) == reference
    assert verify_invoice_payload(PayloadKeys(KEY_B, (KEY_A, k)), payload) == reference
    assert verify_invoice_payload(PayloadKeys(KEY_B, (KEY_A,)), payload) is None
    payload, reference = V1_BY_TEST_SECRET
    assert verify_invoice_payload(PayloadKeys(KEY_B, (TEST_SECRET,)), payload) == reference
    assert verify_invoice_payload(PayloadKeys(TEST_SECRET), payload[:-1] + "A") is None


def test_a_retired_key_verifies_while_configured_and_never_after() -> None:
    old = sign_invoice_payload(KEY_A, 42, 250)
    new = sign_invoice_payload(KEY_B, 43, 250)
    rotated = PayloadKeys(KEY_B, (KEY_A,))
    assert verify_invoice_payload(rotated, old) == (42, 250)
    assert verify_invoice_payload(rotated, new) == (43, 250)
    removed = PayloadKeys(KEY_B)
    assert verify_invoice_payload(removed, old) is None
    assert verify_invoice_payload(removed, new) == (43, 250)


def test_a_payload_naming_an_unknown_or_another_key_is_refused() -> None:
    payload = sign_invoice_payload(KEY_A, 42, 250)
    _, kid, rest = payload.split(".", 2)
    ring = PayloadKeys(KEY_B, (KEY_A,))
    # A's MAC under B's id: each key verifies only what names it.
    assert verify_invoice_payload(ring, f"v2.{payload_key_id(KEY_B)}.{rest}") is None
    unknown = "AAAAAA" if kid != "AAAAAA" else "BBBBBB"
    assert verify_invoice_payload(ring, f"v2.{unknown}.{rest}") is None


def test_the_rings_repr_names_key_ids_never_keys() -> None:
    text = repr(PayloadKeys(KEY_B, (KEY_A,)))
    assert payload_key_id(KEY_A) in text and payload_key_id(KEY_B) in text
    assert "aaaa" not in text and "bbbb" not in text


RING = PayloadKeys(KEY_B, (KEY_A, SECRET))


@given(st.text())
def test_verify_never_raises_on_any_string(payload: str) -> None:
    assert verify_invoice_payload(RING, payload) is None


@given(
    st.from_regex(r"\Av(?:1|2\.[A-Za-z0-9_-]{6})\.[0-9]{1,19}\.[0-9]{1,19}\.[A-Za-z0-9_-]{22}\Z")
)
def test_verify_never_raises_on_a_payload_of_our_form(payload: str) -> None:
    # Well-formed but forged (or beyond bigint): parsed, its MAC checked, refused.
    assert verify_invoice_payload(RING, payload) is None
