"""Order callbacks on the wire: the JSON body POSTed to an order's `callback_url` and its signature.

Every event of an order that has a `callback_url` is POSTed there, at least once, as
`Content-Type: application/json` with the body
`{"event_id": "<decimal>", "type": "order.paid", "occurred_at": "<ISO-8601, UTC>",
"tg_payment_id": <int>, "order": {...}}`. `order` is the order as it was right after the change,
under the SDK's `OrderResult` names: `tg_payment_id`, `application_id`, `tg_use_id`, `amount`,
`label`, `title`, `description`, `payload` ("" when none), `status` (the SDK's number),
`status_description`, `state` (lowercase), `tg_payment_url` ("" until the link exists) and
`metadata` (the application's key-value data, `{}` when none). A retried
delivery carries the same body and the same `Portex-Event-Id: <event_id>` header, so receivers
de-duplicate on `event_id`. The request is signed like Stripe's webhooks:
`Portex-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<raw body>")>`, the key being the
application's signing secret (UTF-8) and `<raw body>` the exact bytes received. A receiver checks it
with `verify_callback` before parsing the JSON (re-serialising would change the bytes): the HMAC
must match (compared in constant time) and `t` must be within `tolerance` seconds of its clock,
which bounds replays. Every attempt is signed afresh, so `t` changes between retries while the body
does not. The header may carry several `v1=` values (room for a secret rotation); one match
suffices.

Every request also carries the Standard Webhooks 1.0 headers, so that a receiver can verify it
with a kept library (`standardwebhooks`, `svix`) instead of code of its own: `webhook-id` (the
event id, the same for every attempt), `webhook-timestamp` (the same unix seconds as `t`) and
`webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<raw body>")>`. Both schemes
use one key, the UTF-8 bytes of the signing secret; the libraries take it as
`whsec_<base64 of those bytes>` (`standard_webhooks_secret`). While a rotated-out secret is still
in its overlap, both headers carry a second signature made with it (current first), so a receiver
that has either secret verifies every delivery. Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from portex_pay.domain.fulfilment import parse_deadline
from portex_pay.domain.order import SDK_STATUS, OrderState

SIGNATURE_HEADER = "Portex-Signature"
EVENT_ID_HEADER = "Portex-Event-Id"
# Standard Webhooks 1.0 (https://www.standardwebhooks.com/), lowercase as the spec writes them.
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
STANDARD_KEY_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300.0

# Copied as they are from the order row (the event's `data.order`, i.e. to_jsonb of the row).
# An allow-list: internal columns (leases, failure codes, ...) never reach a receiver.
_ORDER_FIELDS = (
    "tg_payment_id",
    "application_id",
    "tg_use_id",
    "amount",
    "label",
    "title",
    "description",
)
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    message = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_callback(secret: str, timestamp: int, body: bytes, *older: str) -> str:
    """The `Portex-Signature` header value for `body` sent at `timestamp` (unix seconds), with
    one more `v1=` for each of the `older` secrets still in their overlap."""
    signatures = ",".join(f"v1={_digest(key, timestamp, body)}" for key in (secret, *older))
    return f"t={timestamp},{signatures}"


def standard_webhooks_secret(secret: str) -> str:
    """The signing secret as Standard Webhooks libraries take it: `whsec_` and the base64 of
    its UTF-8 bytes (the very key the HMACs use)."""
    return STANDARD_KEY_PREFIX + base64.b64encode(secret.encode()).decode()


def sign_standard_webhook(
    secrets: Sequence[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC>` for each secret, space-separated."""
    message = f"{message_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()
        for key in secrets
    )


def callback_headers(
    secrets: Sequence[str], event_id: int, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header of one attempt: `secrets` are the current signing secret first, then any
    rotated-out one still in its overlap."""
    message_id = str(event_id)
    return {
        "Content-Type": "application/json",
        EVENT_ID_HEADER: message_id,
        SIGNATURE_HEADER: sign_callback(secrets[0], timestamp, body, *secrets[1:]),
        WEBHOOK_ID_HEADER: message_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: sign_standard_webhook(secrets, message_id, timestamp, body),
    }


def verify_callback(
    secret: str,
    header: str,
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """True when `header` signs exactly `body` with `secret` and its `t` is within `tolerance`
    seconds of `now` (unix seconds). Malformed headers are simply not valid."""
    timestamp: int | None = None
    signatures: list[bytes] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            # One timestamp only: with two, which one was signed would be ambiguous.
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                return False
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.encode(errors="replace"))
        # Other schemes are ignored, so a future v2 can be added alongside v1.
    if timestamp is None or not signatures or abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, body).encode()
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)


def parse_overlap(text: str) -> timedelta:
    """How long a rotated-out signing secret keeps signing: `0` (not at all: for a secret that
    leaked) or a duration such as `24h` or `7d` (`parse_deadline`'s rules); ValueError else."""
    return timedelta(0) if text == "0" else parse_deadline(text)


def callback_order(order: Mapping[str, Any]) -> dict[str, Any]:
    """The order as a receiver sees it, from the order row an event recorded."""
    state = OrderState(order["state"])
    status, status_description = SDK_STATUS[state]
    shown = {name: order[name] for name in _ORDER_FIELDS}
    # The same conventions as QueryOrder: empty strings rather than absent values.
    shown["payload"] = order.get("payload") or ""
    shown["status"] = status
    shown["status_description"] = status_description
    shown["state"] = state.value
    shown["tg_payment_url"] = order.get("invoice_link") or ""
    # Events recorded before orders had metadata carry none.
    shown["metadata"] = order.get("metadata") or {}
    fulfilled = order.get("fulfilled_at")
    shown["fulfilled_time"] = None if fulfilled is None else _utc_text(_as_time(fulfilled))
    return shown


def _as_time(value: str | datetime) -> datetime:
    """A time of the recorded row: ISO 8601 text in an event's JSON snapshot."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _utc_text(moment: datetime) -> str:
    """A time as callbacks write it: RFC 3339 in UTC, with `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def callback_body(
    *,
    event_id: int,
    event_type: str,
    occurred_at: datetime,
    tg_payment_id: int | None,
    order: Mapping[str, Any] | None,
) -> bytes:
    """The exact bytes POSTed (and signed) for one event; the same for every attempt."""
    body = {
        # A string: event ids are 64-bit and JavaScript numbers are not.
        "event_id": str(event_id),
        "type": event_type,
        "occurred_at": _utc_text(occurred_at),
        "tg_payment_id": tg_payment_id,
        "order": None if order is None else callback_order(order),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "STANDARD_KEY_PREFIX",
    "WEBHOOK_ID_HEADER",
    "WEBHOOK_SIGNATURE_HEADER",
    "WEBHOOK_TIMESTAMP_HEADER",
    "callback_body",
    "callback_headers",
    "callback_order",
    "parse_overlap",
    "sign_callback",
    "sign_standard_webhook",
    "standard_webhooks_secret",
    "verify_callback",
]


@dataclass(frozen=True, slots=True)
class DueCallback:
    """One claimed delivery: where to send which event, and the key to sign it with."""

    event_id: int
    application_id: UUID
    url: str
    attempts: int  # failed attempts so far
    signing_secret: str = field(repr=False)  # a credential: kept out of reprs and logs
    event_type: str
    occurred_at: datetime
    tg_payment_id: int | None
    data: dict[str, Any]
    # The rotated-out secret while its overlap lasts (it signs too), else None.
    previous_signing_secret: str | None = field(default=None, repr=False)

    @property
    def signing_secrets(self) -> tuple[str, ...]:
        """The secrets that sign this attempt, the current one first."""
        previous = self.previous_signing_secret
        return (self.signing_secret,) if previous is None else (self.signing_secret, previous)


@dataclass(frozen=True, slots=True)
class FailedCallback:
    """A delivery given up after its last attempt, as an operator lists it."""

    event_id: int
    application_id: UUID
    event_type: str
    url: str
    attempts: int
    last_status: int | None  # the receiver's last HTTP status (None: no answer)
    last_error: str | None
    occurred_at: datetime  # when the event happened
    failed_at: datetime | None  # when it was given up (None: before migration 0013)
