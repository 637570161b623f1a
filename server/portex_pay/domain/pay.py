"""Pay's input: validation by Telegram's rules and ours, the idempotency fingerprint, and the
signed invoice payload that ties a Telegram checkout back to our order.

Telegram's createInvoiceLink rules (Bot API, "createInvoiceLink"): title 1-32 characters,
description 1-255 characters, payload 1-128 bytes, currency XTR with exactly one price for Stars.

The invoice payload is signed with the current key of a key ring (`PayloadKeys`) and names that
key by an id, so the secret can be rotated: payloads signed with a retired key, still in the ring,
keep verifying (an open invoice, a subscription's renewals, which carry its first invoice's
payload for as long as it lives) until the operator removes that key.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.metadata import metadata_violations
from portex_pay.domain.subscription import max_amount_for, period_problem
from portex_pay.domain.text import free_text_problem, single_line_problem

TITLE_MAX_CHARS = 32
DESCRIPTION_MAX_CHARS = 255
LABEL_MAX_CHARS = 64
APP_PAYLOAD_MAX_BYTES = 4096
URL_MAX_CHARS = 2048
REQUEST_ID_MAX_CHARS = 128
INVOICE_PAYLOAD_MAX_BYTES = 128  # Telegram's limit on createInvoiceLink's `payload`
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # whole string: fullmatch, not `$`
PAYLOAD_KEY_MIN_CHARS = 32  # PORTEX_PAYLOAD_SECRET's and each retired secret's least length
PAYLOAD_KEY_ID_CHARS = 6  # 36 bits: two keys of one ring sharing an id is a 1 in 2^36 accident
_PAYLOAD_KEY_ID_CONTEXT = b"portex-payload-key"
# What sign_invoice_payload makes (`v2.<key id>.`) and what it made before key ids (`v1.`, signed
# by whichever key was current then): ASCII digits only (str.isdigit() also takes "²" and "٣"), a
# 128-bit MAC in unpadded base64url.
_SIGNED_PAYLOAD = re.compile(
    r"(?:v1|v2\.([A-Za-z0-9_-]{6}))\.([0-9]{1,19})\.([0-9]{1,19})\.[A-Za-z0-9_-]{22}", re.ASCII
)
INT64_MAX = 2**63 - 1  # PostgreSQL bigint: every id and amount we store


@dataclass(frozen=True, slots=True)
class PayCommand:
    """A validated Pay request: everything that defines the order (not the idempotency key)."""

    tg_use_id: int
    amount: int
    label: str
    title: str
    description: str
    payload: str | None = None
    photo_url: str | None = None
    photo_size: int | None = None
    photo_width: int | None = None
    photo_height: int | None = None
    callback_url: str | None = None
    # The application's key-value data (domain/metadata.py); empty when it gave none.
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Seconds per period of a subscription (domain/subscription.py); None: a one-off order.
    subscription_period: int | None = None

    def fingerprint(self) -> bytes:
        """A digest of the fields, to tell a retry (same fields) from a reused key. Metadata and
        a subscription period count only when there are some: a command without them digests
        exactly as before they existed, so a retry of a Pay whose key was stored then is still a
        retry."""
        fields: dict[str, Any] = asdict(self)
        if self.subscription_period is None:
            del fields["subscription_period"]
        if not self.metadata:
            del fields["metadata"]
        else:
            fields["metadata"] = dict(self.metadata)
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).digest()


def _absolute_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # urlsplit refuses e.g. an unclosed "[" or an NFKC-unsafe host
        return False


# Which character rule (domain/text.py) applies to each of Pay's text fields.
PAY_FREE_TEXT_FIELDS = ("description", "payload")
PAY_SINGLE_LINE_FIELDS = ("label", "title", "photo_url", "callback_url", "request_id")


def _character_violations(command: PayCommand, request_id: str) -> dict[str, FieldViolation]:
    """Pay's text fields that carry a refused character, by field."""
    bad: dict[str, FieldViolation] = {}
    for field in PAY_FREE_TEXT_FIELDS + PAY_SINGLE_LINE_FIELDS:
        value = request_id if field == "request_id" else getattr(command, field)
        if value is None:
            continue
        if field in PAY_FREE_TEXT_FIELDS:
            problem = free_text_problem(value)
        else:
            problem = single_line_problem(value)
        if problem is not None:
            bad[field] = FieldViolation(field, problem)
    return bad


def text_violations(command: PayCommand) -> list[FieldViolation]:
    """The text fields of `command` that carry a refused character (domain/text.py), one violation
    each, and every bad metadata entry. Checked before anything looks a field up: PostgreSQL
    cannot hold U+0000 and a lone surrogate cannot be sent to it at all, so such a value must be
    refused, not queried."""
    return [*_character_violations(command, "").values(), *metadata_violations(command.metadata)]


def require_valid_text(command: PayCommand) -> None:
    violations = text_violations(command)
    if violations:
        raise InvalidArgument(violations)


def validate_pay(command: PayCommand, request_id: str, *, max_amount: int) -> list[FieldViolation]:
    """Every rule Pay's input breaks, one violation per field, all at once. Never raises: any
    input gives violations. A text field with a refused character (domain/text.py) is reported
    for that, before its length or form."""
    bad: list[FieldViolation] = []
    characters = _character_violations(command, request_id)

    def check(field: str, ok: bool, description: str) -> None:
        if field in characters:
            bad.append(characters[field])
        elif not ok:
            bad.append(FieldViolation(field, description))

    check("tg_use_id", command.tg_use_id > 0, "must be a positive Telegram user id")
    max_amount = max_amount_for(command.subscription_period, max_amount)
    period = period_problem(command.subscription_period)
    check("subscription_period", period is None, period or "")
    check(
        "amount",
        0 < command.amount <= max_amount,
        f"must be a whole number of Stars from 1 to {max_amount}",
    )
    check(
        "label",
        len(command.label.strip()) > 0 and len(command.label) <= LABEL_MAX_CHARS,
        f"must be 1-{LABEL_MAX_CHARS} characters",
    )
    check(
        "title",
        len(command.title.strip()) > 0 and len(command.title) <= TITLE_MAX_CHARS,
        f"must be 1-{TITLE_MAX_CHARS} characters",
    )
    check(
        "description",
        len(command.description.strip()) > 0 and len(command.description) <= DESCRIPTION_MAX_CHARS,
        f"must be 1-{DESCRIPTION_MAX_CHARS} characters",
    )
    if command.payload is not None:
        # surrogatepass: a lone surrogate (already reported) must not make this raise.
        size = len(command.payload.encode("utf-8", "surrogatepass"))
        check(
            "payload",
            size <= APP_PAYLOAD_MAX_BYTES,
            f"must be at most {APP_PAYLOAD_MAX_BYTES} bytes of UTF-8",
        )
    for field in ("photo_url", "callback_url"):
        url = getattr(command, field)
        if url is not None:
            check(
                field,
                len(url) <= URL_MAX_CHARS and _absolute_http_url(url),
                f"must be an absolute http(s) URL of at most {URL_MAX_CHARS} characters",
            )
    for field in ("photo_size", "photo_width", "photo_height"):
        value = getattr(command, field)
        if value is not None:
            check(field, value >= 0, "must not be negative")
    if request_id:
        problem = request_id_problem(request_id)
        check("request_id", problem is None, problem or "")
    bad.extend(metadata_violations(command.metadata))
    return bad


def request_id_problem(request_id: str) -> str | None:
    """Why `request_id` cannot be an idempotency key (AIP-155: Pay's, AcknowledgeOrder's), as
    a field violation's description, or None."""
    problem = single_line_problem(request_id)
    if problem is None and _REQUEST_ID.fullmatch(request_id) is None:
        problem = f"must be 1-{REQUEST_ID_MAX_CHARS} printable ASCII characters without spaces"
    return problem


def require_valid_pay(command: PayCommand, request_id: str, *, max_amount: int) -> None:
    violations = validate_pay(command, request_id, max_amount=max_amount)
    if violations:
        raise InvalidArgument(violations)


@functools.lru_cache(maxsize=64)  # the ring's few keys, asked on every payload verified
def payload_key_id(key: bytes) -> str:
    """The id a payload names its signing key by: derived from the key, so every replica finds
    the same id without configuring one, and public (Telegram and the buyer see it) since a
    truncated hash of a 32-character secret tells nothing of it."""
    digest = hashlib.sha256(_PAYLOAD_KEY_ID_CONTEXT + key).digest()
    return base64.urlsafe_b64encode(digest).decode()[:PAYLOAD_KEY_ID_CHARS]


@dataclass(frozen=True, slots=True, repr=False)
class PayloadKeys:
    """The invoice payload keys: `current` signs every new payload; `retired` are earlier current
    keys, kept only to verify the payloads they signed while an open invoice or a live
    subscription may still carry one. A key left out of the ring no longer verifies anything."""

    current: bytes
    retired: tuple[bytes, ...] = ()

    def __repr__(self) -> str:
        # Never the keys themselves: a ring may end up in a log line or a traceback.
        retired = ", ".join(payload_key_id(key) for key in self.retired)
        return f"PayloadKeys(current={payload_key_id(self.current)}, retired=[{retired}])"

    def every_key(self) -> tuple[bytes, ...]:
        return (self.current, *self.retired)

    def with_id(self, key_id: str) -> list[bytes]:
        """The ring's keys whose id is `key_id` (one, or none; two only by a 2^-36 accident)."""
        return [key for key in self.every_key() if payload_key_id(key) == key_id]


def sign_invoice_payload(key: bytes, tg_payment_id: int, amount: int) -> str:
    """Our reference to the order, sent to Telegram as the invoice payload, signed with `key`
    (the ring's current key: `PayloadKeys.current`).

    `v2.<key id>.<order id>.<amount>.<mac>`: the MAC (HMAC-SHA256 of everything before it,
    truncated to 128 bits) lets a checkout with a forged or altered payload be refused before
    any database lookup; the key id says which key of the ring made it.
    """
    return _signed(key, f"v2.{payload_key_id(key)}.{tg_payment_id}.{amount}")


def _signed(key: bytes, message: str) -> str:
    mac = hmac.new(key, message.encode(), hashlib.sha256).digest()[:16]
    payload = f"{message}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert len(payload.encode()) <= INVOICE_PAYLOAD_MAX_BYTES
    return payload


def verify_invoice_payload(keys: PayloadKeys, payload: str) -> tuple[int, int] | None:
    """(order id, amount) when the payload is ours, untampered and signed by a key of the ring,
    else None. A `v2` payload is checked against the key its id names; a `v1` payload (made
    before key ids) against every key of the ring. Never raises: the payload comes from the
    user's Telegram client and may be any string."""
    match = _SIGNED_PAYLOAD.fullmatch(payload)
    if match is None:
        return None
    key_id, tg_payment_id, amount = match[1], int(match[2]), int(match[3])
    if tg_payment_id > INT64_MAX or amount > INT64_MAX:
        return None
    # The expected payload is rebuilt from the numbers read, so only the one canonical spelling
    # verifies ("007" or a non-canonical last base64 character does not).
    if key_id is None:
        candidates = [(key, f"v1.{tg_payment_id}.{amount}") for key in keys.every_key()]
    else:
        candidates = [
            (key, f"v2.{key_id}.{tg_payment_id}.{amount}") for key in keys.with_id(key_id)
        ]
    for key, message in candidates:
        if hmac.compare_digest(_signed(key, message).encode(), payload.encode()):
            return tg_payment_id, amount
    return None
