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
suffices. Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from portex_pay.domain.order import SDK_STATUS, OrderState

SIGNATURE_HEADER = "Portex-Signature"
EVENT_ID_HEADER = "Portex-Event-Id"
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


def sign_callback(secret: str, timestamp: int, body: bytes) -> str:
    """The `Portex-Signature` header value for `body` sent at `timestamp` (unix seconds)."""
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


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
    "callback_body",
    "callback_order",
    "sign_callback",
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
