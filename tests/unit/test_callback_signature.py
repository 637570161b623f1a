"""Callback signatures (sign/verify, as a receiver would use them) and the callback body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
import standardwebhooks
import standardwebhooks.webhooks
from hypothesis import given
from hypothesis import strategies as st

from portex_pay.domain.callbacks import (
    callback_body,
    callback_headers,
    sign_callback,
    sign_standard_webhook,
    standard_webhooks_secret,
    verify_callback,
)
from portex_pay.domain.order import SDK_STATUS, OrderState

SECRET = "whsec-" + "s" * 40
BODY = b'{"event_id":"7","type":"order.paid"}'
NOW = 1_750_000_000


def test_the_header_is_t_and_a_hex_hmac_of_timestamp_dot_body() -> None:
    # Pins the documented scheme, computed independently of the implementation.
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_callback(SECRET, NOW, BODY) == f"t={NOW},v1={expected}"


@given(st.text(min_size=1), st.binary(), st.integers(min_value=0, max_value=2**40))
def test_a_signed_body_verifies(secret: str, body: bytes, timestamp: int) -> None:
    assert verify_callback(secret, sign_callback(secret, timestamp, body), body, now=timestamp)


@given(st.binary(min_size=1), st.data())
def test_a_tampered_body_is_refused(body: bytes, data: st.DataObject) -> None:
    header = sign_callback(SECRET, NOW, body)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    flipped = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    assert not verify_callback(SECRET, header, flipped, now=NOW)
    assert not verify_callback(SECRET, header, body + b" ", now=NOW)


def test_another_secret_is_refused() -> None:
    header = sign_callback(SECRET, NOW, BODY)
    assert not verify_callback(SECRET + "x", header, BODY, now=NOW)
    assert not verify_callback("", header, BODY, now=NOW)


def test_a_stale_or_future_timestamp_is_refused() -> None:
    header = sign_callback(SECRET, NOW, BODY)
    assert verify_callback(SECRET, header, BODY, now=NOW + 300)
    assert verify_callback(SECRET, header, BODY, now=NOW - 300)
    assert not verify_callback(SECRET, header, BODY, now=NOW + 301)
    assert not verify_callback(SECRET, header, BODY, now=NOW - 301)
    assert verify_callback(SECRET, header, BODY, now=NOW + 3600, tolerance=3600)


def test_a_replayed_signature_with_a_fresh_timestamp_is_refused() -> None:
    # The timestamp is signed: an attacker cannot refresh an old capture.
    old = sign_callback(SECRET, NOW - 3600, BODY)
    signature = old.split(",v1=")[1]
    assert not verify_callback(SECRET, f"t={NOW},v1={signature}", BODY, now=NOW)


def test_one_matching_v1_among_several_suffices_and_other_schemes_are_ignored() -> None:
    good = sign_callback(SECRET, NOW, BODY).split(",v1=")[1]
    assert verify_callback(SECRET, f"t={NOW},v1={'0' * 64},v1={good},v0=x", BODY, now=NOW)
    assert verify_callback(SECRET, f" t={NOW} , v1={good} ", BODY, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={NOW}",
        "v1=" + "0" * 64,
        f"t=,v1={'0' * 64}",
        f"t=-{NOW},v1={'0' * 64}",
        f"t={NOW}.5,v1={'0' * 64}",
        f"t=١٢٣,v1={'0' * 64}",  # non-ASCII digits are not a timestamp
        f"t={NOW},t={NOW},v1={'0' * 64}",
        f"t={NOW},v1=é",
    ],
)
def test_malformed_headers_are_refused(header: str) -> None:
    assert not verify_callback(SECRET, header, BODY, now=NOW)


def test_two_signed_timestamps_are_ambiguous_and_refused() -> None:
    header = sign_callback(SECRET, NOW, BODY)
    assert not verify_callback(SECRET, f"t={NOW - 1},{header}", BODY, now=NOW)


def _order_row(state: str, **overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "tg_payment_id": 12,
        "application_id": "0b8a8f2e-5a1c-4d7e-9f00-000000000001",
        "tg_use_id": 42,
        "amount": 5,
        "label": "item",
        "title": "Book",
        "description": "Magic book",
        "payload": None,
        "photo_url": None,
        "callback_url": "https://game.example/cb?token=receiver-secret",
        "state": state,
        "invoice_link": None,
        "failure_code": "TELEGRAM_UNAVAILABLE",
        "failure_reason": "timed out",
        "retry_after": None,
        "telegram_payment_charge_id": None,
        "created_at": "2025-01-02T03:04:05.123456+00:00",
        "invoice_lease_until": "2025-01-02T03:04:20+00:00",
    }
    row.update(overrides)
    return row


@pytest.mark.parametrize("state", list(OrderState))
def test_the_body_has_the_sdk_names_and_status_of_every_state(state: OrderState) -> None:
    occurred = datetime(2025, 1, 2, 5, 4, 5, 123456, tzinfo=timezone(timedelta(hours=2)))
    body = callback_body(
        event_id=2**60,
        event_type="order.created",
        occurred_at=occurred,
        tg_payment_id=12,
        order=_order_row(
            state.value,
            payload="p",
            invoice_link="https://t.me/$abc",
            metadata={"sku": "gems-100", "gift card": "да"},
            fulfilled_at="2025-01-02T05:10:00.5+02:00",
        ),
    )
    decoded = json.loads(body)
    assert decoded == {
        "event_id": str(2**60),
        "type": "order.created",
        "occurred_at": "2025-01-02T03:04:05.123456Z",
        "tg_payment_id": 12,
        "order": {
            "tg_payment_id": 12,
            "application_id": "0b8a8f2e-5a1c-4d7e-9f00-000000000001",
            "tg_use_id": 42,
            "amount": 5,
            "label": "item",
            "title": "Book",
            "description": "Magic book",
            "payload": "p",
            "status": SDK_STATUS[state][0],
            "status_description": SDK_STATUS[state][1],
            "state": state.value,
            "tg_payment_url": "https://t.me/$abc",
            "metadata": {"sku": "gems-100", "gift card": "да"},
            "fulfilled_time": "2025-01-02T03:10:00.500000Z",
        },
    }
    assert datetime.fromisoformat(decoded["occurred_at"]) == occurred.astimezone(UTC)


def test_absent_values_are_empty_strings_and_internal_columns_never_leave() -> None:
    body = callback_body(
        event_id=1,
        event_type="order.failed",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        tg_payment_id=12,
        order=_order_row("failed"),
    )
    order = json.loads(body)["order"]
    assert (order["payload"], order["tg_payment_url"]) == ("", "")
    for internal in ("invoice_lease_until", "failure_code", "callback_url", "retry_after"):
        assert internal not in order
    assert b"receiver-secret" not in body


def test_an_order_recorded_before_metadata_existed_has_empty_metadata() -> None:
    """Events written before migration 0007 carry order snapshots without the column."""
    body = callback_body(
        event_id=1,
        event_type="order.paid",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        tg_payment_id=12,
        order=_order_row("paid"),
    )
    assert json.loads(body)["order"]["metadata"] == {}
    assert json.loads(body)["order"]["fulfilled_time"] is None


def test_non_ascii_text_is_sent_as_utf8() -> None:
    body = callback_body(
        event_id=1,
        event_type="order.created",
        occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
        tg_payment_id=12,
        order=_order_row("pending", title="Книга ✨"),
    )
    assert "Книга ✨".encode() in body
    assert json.loads(body.decode("utf-8"))["order"]["title"] == "Книга ✨"


# Standard Webhooks: the reference library is the oracle, so a receiver using it verifies us.

OLD_SECRET = "previous-" + "o" * 40


def _standard_headers(secrets: tuple[str, ...], body: bytes) -> dict[str, str]:
    # The library checks the timestamp against its own clock (5 minutes either way).
    return callback_headers(secrets, 2**60, int(time.time()), body)


def test_the_standard_webhooks_headers_verify_with_the_reference_library() -> None:
    body = json.dumps({"event_id": "7", "title": "Книга ✨"}, ensure_ascii=False).encode()
    headers = _standard_headers((SECRET,), body)
    assert headers["webhook-id"] == headers["Portex-Event-Id"] == str(2**60)
    assert headers["webhook-timestamp"] == headers["Portex-Signature"].split(",")[0][2:]
    webhook = standardwebhooks.Webhook(standard_webhooks_secret(SECRET))
    assert webhook.verify(body, headers) == json.loads(body)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        webhook.verify(body + b" ", headers)
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(standard_webhooks_secret(SECRET + "x")).verify(body, headers)


def test_the_standard_signature_is_base64_hmac_of_id_dot_timestamp_dot_body() -> None:
    # Pins the documented scheme, computed independently of the implementation.
    digest = hmac.new(SECRET.encode(), f"7.{NOW}.".encode() + BODY, hashlib.sha256).digest()
    assert (
        sign_standard_webhook((SECRET,), "7", NOW, BODY)
        == "v1," + base64.b64encode(digest).decode()
    )
    assert standard_webhooks_secret(SECRET) == "whsec_" + base64.b64encode(SECRET.encode()).decode()


def test_during_an_overlap_both_secrets_verify_both_headers() -> None:
    headers = _standard_headers((SECRET, OLD_SECRET), BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        standardwebhooks.Webhook(standard_webhooks_secret(secret)).verify(
            BODY, headers, json_parse=False
        )
        assert verify_callback(secret, headers["Portex-Signature"], BODY, now=time.time())
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(standard_webhooks_secret("third-" + "t" * 40)).verify(
            BODY, headers
        )
    assert not verify_callback("third", headers["Portex-Signature"], BODY, now=time.time())
    # The current secret signs first: receivers that read only one signature read it.
    only_current = _standard_headers((SECRET,), BODY)
    assert headers["webhook-signature"].startswith(only_current["webhook-signature"])
