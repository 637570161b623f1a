"""Telegram Mini App identity: verifying `Telegram.WebApp.initData`.

The Portex SDK sends the Mini App's `initData` (a query string such as
`query_id=...&user=%7B...%7D&auth_date=1700000000&signature=...&hash=...`) in the
`X-Tg-InitData` header. Telegram signs it, so unlike `initDataUnsafe` it cannot be forged; this
module checks that signature and returns who the user is. See
https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app.

Two signatures are understood:

- `hash` (HMAC, needs the bot token): the data-check-string is every field except `hash`, sorted by
  key, as `key=value` lines joined by `\\n` (values URL-decoded; `signature`, when present, stays in
  it). `secret = HMAC_SHA256(key=b"WebAppData", msg=bot_token)` and the data is genuine when
  `hex(HMAC_SHA256(key=secret, msg=data_check_string)) == hash`.
- `signature` (Ed25519, "third-party use", needs only the bot id): Telegram's Ed25519 signature,
  unpadded base64url, over `f"{bot_id}:WebAppData\\n"` followed by the sorted `key=value` lines of
  every field except `hash` and `signature`. Telegram's public keys are `PRODUCTION_PUBLIC_KEY`
  and `TEST_PUBLIC_KEY`; which one (if any) is trusted is the caller's choice.

Acceptance rule of `verify_init_data`, in this order:

1. Syntax (`INIT_DATA_MISSING` / `INIT_DATA_MALFORMED`): a non-empty ASCII string (Telegram
   percent-encodes the rest) of at most `MAX_INIT_DATA_BYTES` characters that parses strictly as
   a query string (percent-escapes must decode as UTF-8), with keys of `[A-Za-z0-9_]`, no key
   twice, no value holding a line feed (it would make the data-check-string ambiguous), and with
   `hash` (64 lowercase hex digits), `auth_date` (decimal unix seconds) and `user` present.
2. Authenticity (`INIT_DATA_INVALID`): the HMAC `hash` matches for the bot token; or, only when an
   `ed25519_public_key` is configured, the `signature` verifies under that key for `bot_id`.
   Either is enough (the HMAC is tried first). The HMAC covers every field but `hash` (so also
   `signature`), the Ed25519 signature every field but `hash` and `signature`: any added, removed
   or changed field invalidates them. A `signature` that is not the canonical unpadded base64url
   of 64 bytes (86 characters) never verifies. A `hash` is required even on the Ed25519 path
   (Telegram always sends one), but there only its format is checked.
3. Content (`INIT_DATA_MALFORMED`), only for authenticated data: `user` is a JSON object with an
   integer `id` in 1..2**63-1 (not a bool), a string `first_name` and, when present, strings
   `last_name`, `username`, `language_code`, `photo_url` and booleans `is_premium`,
   `allows_write_to_pm`. Other keys are ignored.
4. Freshness: `INIT_DATA_FROM_FUTURE` when `auth_date` is more than `future_skew` after `now`;
   `INIT_DATA_EXPIRED` when it is more than `max_age` before `now` (both bounds inclusive: exactly
   `max_age` old, or exactly `future_skew` ahead, is accepted).

The init data is a bearer credential for the user's identity for up to `max_age`: nothing here logs
it, and no error message or attribute ever carries any of it. Errors are raised outside the
`except` blocks that detected them, so not even the exception context holds a parser's message
(which may quote the input). Pure functions, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, urlencode

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

INIT_DATA_HEADER: Final = "X-Tg-InitData"

PRODUCTION_PUBLIC_KEY: Final = bytes.fromhex(
    "e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d"
)
TEST_PUBLIC_KEY: Final = bytes.fromhex(
    "40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec"
)

DEFAULT_MAX_AGE: Final = timedelta(hours=24)
# Clocks of Telegram's servers and ours differ a little; more than this is not a clock problem.
DEFAULT_FUTURE_SKEW: Final = timedelta(seconds=60)
# Real initData is well under 1 KiB (a user with a photo_url, a chat, a signature and a hash).
MAX_INIT_DATA_BYTES: Final = 4096
_MAX_FIELDS: Final = 64

MISSING: Final = "INIT_DATA_MISSING"
MALFORMED: Final = "INIT_DATA_MALFORMED"
INVALID: Final = "INIT_DATA_INVALID"
EXPIRED: Final = "INIT_DATA_EXPIRED"
FROM_FUTURE: Final = "INIT_DATA_FROM_FUTURE"

InitDataReason = Literal[
    "INIT_DATA_MISSING",
    "INIT_DATA_MALFORMED",
    "INIT_DATA_INVALID",
    "INIT_DATA_EXPIRED",
    "INIT_DATA_FROM_FUTURE",
]
VerificationMethod = Literal["hmac", "ed25519"]

_MESSAGES: Final[Mapping[str, str]] = {
    MISSING: "init data is missing",
    MALFORMED: "init data is malformed",
    INVALID: "init data signature is invalid",
    EXPIRED: "init data has expired",
    FROM_FUTURE: "init data is dated in the future",
}

_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
_HASH = re.compile(r"[0-9a-f]{64}")
_AUTH_DATE = re.compile(r"[0-9]{1,12}")
# 64 signature bytes are 86 unpadded base64url characters.
_SIGNATURE = re.compile(r"[A-Za-z0-9_-]{86}")
_MAX_USER_ID: Final = 2**63 - 1
_MAX_AUTH_DATE: Final = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp())
_OPTIONAL_USER_STRINGS = ("last_name", "username", "language_code", "photo_url")
_OPTIONAL_USER_FLAGS = ("is_premium", "allows_write_to_pm")


class InitDataError(Exception):
    """initData was refused. `reason` is one of the stable `INIT_DATA_*` codes; the message is a
    fixed sentence per reason and never contains any part of the input."""

    def __init__(self, reason: InitDataReason) -> None:
        self.reason: InitDataReason = reason
        self.message = _MESSAGES[reason]
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"InitDataError({self.reason!r})"

    def __reduce__(self) -> tuple[type[InitDataError], tuple[InitDataReason]]:
        return (type(self), (self.reason,))


@dataclass(frozen=True, slots=True)
class TelegramUser:
    id: int
    first_name: str
    last_name: str | None = None
    username: str | None = None
    language_code: str | None = None
    is_premium: bool = False
    photo_url: str | None = None
    allows_write_to_pm: bool = False


@dataclass(frozen=True, slots=True)
class VerifiedInitData:
    user: TelegramUser
    auth_date: datetime  # UTC
    query_id: str | None
    chat_type: str | None
    chat_instance: str | None
    start_param: str | None
    method: VerificationMethod


def verify_init_data(
    init_data: str | None,
    *,
    bot_token: str | None,
    bot_id: int,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
    future_skew: timedelta = DEFAULT_FUTURE_SKEW,
    ed25519_public_key: bytes | None = None,
) -> VerifiedInitData:
    """Verify `init_data` (the `X-Tg-InitData` header; None when absent) and return its user.

    Raises `InitDataError` for anything wrong with `init_data` (see the module docstring for the
    exact rule). Raises `ValueError` for a wrong configuration: no usable way to verify (neither a
    non-empty `bot_token` nor an `ed25519_public_key`), a public key that is not 32 bytes, a naive
    `now` or a negative `max_age`/`future_skew`. An empty `bot_token` disables the HMAC check (an
    HMAC keyed by "" is forgeable by anyone).
    """
    _check_clock(now, max_age, future_skew)
    verified = authenticate_init_data(
        init_data, bot_token=bot_token, bot_id=bot_id, ed25519_public_key=ed25519_public_key
    )
    check_freshness(verified, now=now, max_age=max_age, future_skew=future_skew)
    return verified


def authenticate_init_data(
    init_data: str | None,
    *,
    bot_token: str | None,
    bot_id: int,
    ed25519_public_key: bytes | None = None,
) -> VerifiedInitData:
    """Steps 1-3 of `verify_init_data` (syntax, authenticity, content), not freshness. The answer
    depends on the arguments alone, so a caller may remember it for the same arguments, provided
    it calls `check_freshness` on every use. Raises like `verify_init_data`."""
    public_key = _check_keys(bot_token, ed25519_public_key)
    fields = _parse(init_data)

    method: VerificationMethod | None = None
    if bot_token and hmac.compare_digest(_hmac_hash(fields, bot_token), fields["hash"]):
        method = "hmac"
    elif public_key is not None and _ed25519_valid(fields, bot_id, public_key):
        method = "ed25519"
    if method is None:
        raise InitDataError(INVALID)

    user = _parse_user(fields["user"])
    auth_date = int(fields["auth_date"])
    if auth_date > _MAX_AUTH_DATE:
        raise InitDataError(FROM_FUTURE)  # past what a datetime holds: later than any `now`
    return VerifiedInitData(
        user=user,
        auth_date=datetime.fromtimestamp(auth_date, UTC),
        query_id=fields.get("query_id"),
        chat_type=fields.get("chat_type"),
        chat_instance=fields.get("chat_instance"),
        start_param=fields.get("start_param"),
        method=method,
    )


def check_freshness(
    verified: VerifiedInitData,
    *,
    now: datetime,
    max_age: timedelta = DEFAULT_MAX_AGE,
    future_skew: timedelta = DEFAULT_FUTURE_SKEW,
) -> None:
    """Step 4 of `verify_init_data`: INIT_DATA_FROM_FUTURE or INIT_DATA_EXPIRED at `now`."""
    _check_clock(now, max_age, future_skew)
    age = now.timestamp() - verified.auth_date.timestamp()
    if -age > future_skew.total_seconds():
        raise InitDataError(FROM_FUTURE)
    if age > max_age.total_seconds():
        raise InitDataError(EXPIRED)


def init_data_fields(
    user: Mapping[str, Any], *, auth_date: datetime, query_id: str | None = None
) -> dict[str, str]:
    """The usual unsigned fields of a Mini App launch: `query_id` (when given), `user` (compact
    JSON, as Telegram serialises it) and `auth_date` (unix seconds of the aware `auth_date`)."""
    if auth_date.tzinfo is None:
        raise ValueError("auth_date must be timezone-aware")
    fields: dict[str, str] = {}
    if query_id is not None:
        fields["query_id"] = query_id
    fields["user"] = json.dumps(dict(user), ensure_ascii=False, separators=(",", ":"))
    fields["auth_date"] = str(int(auth_date.timestamp()))
    return fields


def sign_init_data(fields: Mapping[str, str], *, bot_token: str) -> str:
    """`fields` plus the HMAC `hash` for `bot_token`, as the query string Telegram would hand the
    Mini App. An existing `hash` in `fields` is replaced; a `signature` is kept and covered."""
    unsigned = {key: value for key, value in fields.items() if key != "hash"}
    return _encode({**unsigned, "hash": _hmac_hash(unsigned, bot_token)})


def sign_init_data_ed25519(
    fields: Mapping[str, str],
    *,
    bot_id: int,
    private_key: Ed25519PrivateKey,
    bot_token: str | None = None,
) -> str:
    """`fields` plus an Ed25519 `signature` for `bot_id` by `private_key` (and, when `bot_token` is
    given, the HMAC `hash` over everything including the signature, as Telegram sends both).
    Existing `hash`/`signature` fields are replaced."""
    unsigned = {key: value for key, value in fields.items() if key not in ("hash", "signature")}
    raw = private_key.sign(_ed25519_message(unsigned, bot_id))
    signed = {**unsigned, "signature": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    if bot_token is None:
        return _encode(signed)
    return _encode({**signed, "hash": _hmac_hash(signed, bot_token)})


# --- internals -----------------------------------------------------------------------------------


def _check_clock(now: datetime, max_age: timedelta, future_skew: timedelta) -> None:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if max_age < timedelta(0) or future_skew < timedelta(0):
        raise ValueError("max_age and future_skew must not be negative")


def _check_keys(bot_token: str | None, ed25519_public_key: bytes | None) -> Ed25519PublicKey | None:
    if not bot_token and ed25519_public_key is None:
        raise ValueError("initData cannot be verified without a bot token or a public key")
    if ed25519_public_key is None:
        return None
    if len(ed25519_public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return _public_key(ed25519_public_key)


@functools.lru_cache(maxsize=16)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    # Building the key object is a measurable share of a request; there are only a few keys.
    return Ed25519PublicKey.from_public_bytes(raw)


def _parse(init_data: str | None) -> dict[str, str]:
    if not init_data:
        raise InitDataError(MISSING)
    # Telegram percent-encodes everything that is not ASCII; so is what fits in a header.
    if len(init_data) > MAX_INIT_DATA_BYTES or not init_data.isascii():
        raise InitDataError(MALFORMED)
    pairs: list[tuple[str, str]] | None
    try:
        pairs = parse_qsl(
            init_data,
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=_MAX_FIELDS,
        )
    except ValueError:  # includes UnicodeDecodeError; its message may quote the input
        pairs = None
    if pairs is None:
        raise InitDataError(MALFORMED)
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields or not _KEY.fullmatch(key) or "\n" in value:
            raise InitDataError(MALFORMED)
        fields[key] = value
    if not all(required in fields for required in ("hash", "auth_date", "user")):
        raise InitDataError(MALFORMED)
    if not _HASH.fullmatch(fields["hash"]) or not _AUTH_DATE.fullmatch(fields["auth_date"]):
        raise InitDataError(MALFORMED)
    return fields


def _check_lines(fields: Mapping[str, str], excluded: tuple[str, ...]) -> str:
    return "\n".join(
        f"{key}={value}" for key, value in sorted(fields.items()) if key not in excluded
    )


@functools.lru_cache(maxsize=1024)
def _hmac_secret(bot_token: str) -> bytes:
    # The same secret for every request of a bot: derived once (a bounded cache, per process).
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def _hmac_hash(fields: Mapping[str, str], bot_token: str) -> str:
    secret = _hmac_secret(bot_token)
    data_check_string = _check_lines(fields, ("hash",))
    return hmac.new(secret, data_check_string.encode(), hashlib.sha256).hexdigest()


def _ed25519_message(fields: Mapping[str, str], bot_id: int) -> bytes:
    return f"{bot_id}:WebAppData\n{_check_lines(fields, ('hash', 'signature'))}".encode()


def _ed25519_valid(fields: Mapping[str, str], bot_id: int, public_key: Ed25519PublicKey) -> bool:
    signature = fields.get("signature")
    if signature is None or not _SIGNATURE.fullmatch(signature):
        return False
    try:
        raw = base64.urlsafe_b64decode(signature + "==")
    except (binascii.Error, ValueError):
        return False
    # 86 characters can carry stray low bits; only the canonical encoding of 64 bytes counts.
    if len(raw) != 64 or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != signature:
        return False
    try:
        public_key.verify(raw, _ed25519_message(fields, bot_id))
    except InvalidSignature:
        return False
    return True


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _no_constants(_name: str) -> Any:
    raise ValueError("not JSON")  # NaN, Infinity, -Infinity


def _parse_user(raw: str) -> TelegramUser:
    data: Any
    try:
        data = json.loads(raw, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise InitDataError(MALFORMED)
    user_id = data.get("id")
    first_name = data.get("first_name")
    if (
        type(user_id) is not int
        or not 0 < user_id <= _MAX_USER_ID
        or not isinstance(first_name, str)
        or any(not isinstance(data.get(k, ""), str) for k in _OPTIONAL_USER_STRINGS)
        or any(not isinstance(data.get(k, False), bool) for k in _OPTIONAL_USER_FLAGS)
    ):
        raise InitDataError(MALFORMED)
    return TelegramUser(
        id=user_id,
        first_name=first_name,
        last_name=data.get("last_name"),
        username=data.get("username"),
        language_code=data.get("language_code"),
        is_premium=data.get("is_premium", False),
        photo_url=data.get("photo_url"),
        allows_write_to_pm=data.get("allows_write_to_pm", False),
    )


def _encode(fields: Mapping[str, str]) -> str:
    # Percent-encode everything but unreserved characters, as Telegram's clients do.
    return urlencode(list(fields.items()), quote_via=quote, safe="")


__all__ = [
    "DEFAULT_FUTURE_SKEW",
    "DEFAULT_MAX_AGE",
    "EXPIRED",
    "FROM_FUTURE",
    "INIT_DATA_HEADER",
    "INVALID",
    "MALFORMED",
    "MAX_INIT_DATA_BYTES",
    "MISSING",
    "PRODUCTION_PUBLIC_KEY",
    "TEST_PUBLIC_KEY",
    "InitDataError",
    "InitDataReason",
    "TelegramUser",
    "VerificationMethod",
    "VerifiedInitData",
    "authenticate_init_data",
    "check_freshness",
    "init_data_fields",
    "sign_init_data",
    "sign_init_data_ed25519",
    "verify_init_data",
]
