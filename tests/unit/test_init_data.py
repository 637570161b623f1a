"""Mini App initData verification: the HMAC `hash`, the Ed25519 `signature`, freshness, strict
parsing, and a cross-check against aiogram's independent implementation."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from aiogram.utils import web_app as aiogram_web_app
from aiogram.utils import web_app_signature as aiogram_signature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from portex_pay.domain.init_data import (
    DEFAULT_FUTURE_SKEW,
    DEFAULT_MAX_AGE,
    MAX_INIT_DATA_BYTES,
    PRODUCTION_PUBLIC_KEY,
    TEST_PUBLIC_KEY,
    InitDataError,
    TelegramUser,
    authenticate_init_data,
    check_freshness,
    init_data_fields,
    sign_init_data,
    sign_init_data_ed25519,
    verify_init_data,
)

BOT_ID = 7000000001
BOT_TOKEN = f"{BOT_ID}:AAE-test-token-for-portex-pay-unit-tests"
OTHER_TOKEN = "7000000002:AAE-another-bot-entirely-xxxxxxxxxxxxx"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USER: dict[str, Any] = {
    "id": 42,
    "first_name": "Ada",
    "last_name": "Lovelace",
    "username": "ada",
    "language_code": "en",
    "is_premium": True,
    "allows_write_to_pm": True,
    "photo_url": "https://t.me/i/userpic/320/ada.svg",
}
# Tests sign with their own key; Telegram's private keys are, of course, not available.
TEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
TEST_KEY_PUBLIC = TEST_KEY.public_key().public_bytes_raw()


def fields(user: dict[str, Any] | None = None, **extra: str) -> dict[str, str]:
    base = init_data_fields(USER if user is None else user, auth_date=NOW, query_id="AAHdF6IQ")
    return {**base, **extra}


def signed(**extra: str) -> str:
    return sign_init_data(fields(None, **extra), bot_token=BOT_TOKEN)


def ed_signed(*, bot_id: int = BOT_ID, token: str | None = OTHER_TOKEN, **extra: str) -> str:
    # The hash is made with a token this service does not have, so only the signature can pass.
    return sign_init_data_ed25519(
        fields(None, **extra), bot_id=bot_id, private_key=TEST_KEY, bot_token=token
    )


def verify(init_data: str | None, **overrides: Any) -> Any:
    options: dict[str, Any] = {"bot_token": BOT_TOKEN, "bot_id": BOT_ID, "now": NOW}
    options.update(overrides)
    return verify_init_data(init_data, **options)


def reason(init_data: str | None, **overrides: Any) -> str:
    with pytest.raises(InitDataError) as caught:
        verify(init_data, **overrides)
    return caught.value.reason


def pairs(init_data: str) -> list[tuple[str, str]]:
    return parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)


def encode(items: list[tuple[str, str]]) -> str:
    return urlencode(items, quote_via=quote, safe="")


def replace(init_data: str, key: str, value: str) -> str:
    return encode([(k, value if k == key else v) for k, v in pairs(init_data)])


# --- known answers from other implementations ----------------------------------------------------


def test_the_tma_js_documentation_vector_verifies() -> None:
    # From docs.telegram-mini-apps.com (@tma.js/init-data "Validating"); its token is a sample.
    init_data = (
        "query_id=AAHdF6IQAAAAAN0XohDhrOrc"
        "&user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%22%2C%22last_name%22"
        "%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22"
        "%2C%22is_premium%22%3Atrue%7D"
        "&auth_date=1662771648"
        "&hash=c501b71e775f74ce10e377dea85a7ea24ecd640b223ea86dfe453e0eaed2e2b2"
    )
    token = "5768337691:AAH5YkoiEuPk8-FZa32hStHTqXiLPtAEhx8"
    at = datetime.fromtimestamp(1662771648, UTC)
    result = verify_init_data(init_data, bot_token=token, bot_id=5768337691, now=at)
    assert result.method == "hmac"
    assert result.user == TelegramUser(
        id=279058397,
        first_name="Vladislav",
        last_name="Kibenko",
        username="vdkfrost",
        language_code="ru",
        is_premium=True,
    )
    assert result.query_id == "AAHdF6IQAAAAAN0XohDhrOrc"
    assert reason(init_data, bot_token=BOT_TOKEN, now=at) == "INIT_DATA_INVALID"


# aiogram's own test key pair and vector (tests/test_utils/test_web_app_signature.py); Ed25519 is
# deterministic, so our signer must reproduce its signature bit for bit.
AIOGRAM_PRIVATE = bytes.fromhex("c80e09dc60f5efcf2e1f8d0793358e0ea3371267bef0024588f7bf67cf48dfb9")
AIOGRAM_PUBLIC = bytes.fromhex("4112765021341e5415e772cd65903f6b94e3ea1c2ab669e6d3e18ee2db00da61")
AIOGRAM_VECTOR = (
    "auth_date=1650385342&user=%7B%22id%22%3A42%2C%22first_name%22%3A%22Test%22%7D&query_id=test"
    "&signature=JQ0JR2tjC65yq_jNZV0wuJVX6J-SWPMV0mprUXG34g-NvxL4RcF1Rz5n4VVo00VRghEUBf5t___uoeb1"
    "-jU_Cw"
)


def test_the_aiogram_ed25519_vector_is_reproduced_and_verifies() -> None:
    key = Ed25519PrivateKey.from_private_bytes(AIOGRAM_PRIVATE)
    unsigned = {"auth_date": "1650385342", "user": '{"id":42,"first_name":"Test"}'}
    unsigned["query_id"] = "test"
    assert sign_init_data_ed25519(unsigned, bot_id=42, private_key=key) == AIOGRAM_VECTOR
    # We always require a hash (Telegram always sends one); its value is not checked here.
    init_data = AIOGRAM_VECTOR + "&hash=" + "0" * 64
    at = datetime.fromtimestamp(1650385342, UTC)
    result = verify(init_data, bot_id=42, now=at, ed25519_public_key=AIOGRAM_PUBLIC)
    assert result.method == "ed25519"
    assert result.user.id == 42
    assert reason(init_data, bot_id=43, now=at, ed25519_public_key=AIOGRAM_PUBLIC) == (
        "INIT_DATA_INVALID"
    )


def test_the_hash_is_the_documented_hmac_computed_independently() -> None:
    init_data = signed(start_param="promo")
    items = dict(pairs(init_data))
    received = items.pop("hash")
    check = "\n".join(f"{k}={v}" for k, v in sorted(items.items()))
    secret = hmac.new(b"WebAppData", BOT_TOKEN.encode(), hashlib.sha256).digest()
    assert received == hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    assert check.startswith("auth_date=") and "\nstart_param=promo\n" in check


def test_the_signature_is_the_documented_ed25519_computed_independently() -> None:
    init_data = ed_signed()
    items = dict(pairs(init_data))
    signature = items.pop("signature")
    items.pop("hash")
    assert "=" not in signature and "+" not in signature and "/" not in signature
    message = f"{BOT_ID}:WebAppData\n" + "\n".join(f"{k}={v}" for k, v in sorted(items.items()))
    TEST_KEY.public_key().verify(base64.urlsafe_b64decode(signature + "=="), message.encode())


def test_telegrams_public_keys() -> None:
    assert PRODUCTION_PUBLIC_KEY.hex() == (
        "e7bf03a2fa4602af4580703d88dda5bb59f32ed8b02a56c187fe7d34caed242d"
    )
    assert TEST_PUBLIC_KEY.hex() == (
        "40055058a4ee38156a06562e52eece92a771bcd8346a8c4615cb7376eddf72ec"
    )
    assert timedelta(hours=24) == DEFAULT_MAX_AGE
    assert timedelta(seconds=60) == DEFAULT_FUTURE_SKEW


# --- HMAC ----------------------------------------------------------------------------------------


def test_a_valid_hash_is_accepted_and_the_user_parsed() -> None:
    init_data = signed(chat_type="private", chat_instance="-8817", start_param="promo")
    result = verify(init_data)
    assert result.method == "hmac"
    assert result.user == TelegramUser(
        id=42,
        first_name="Ada",
        last_name="Lovelace",
        username="ada",
        language_code="en",
        is_premium=True,
        photo_url="https://t.me/i/userpic/320/ada.svg",
        allows_write_to_pm=True,
    )
    assert result.auth_date == NOW and result.auth_date.tzinfo is UTC
    assert result.query_id == "AAHdF6IQ"
    assert (result.chat_type, result.chat_instance, result.start_param) == (
        "private",
        "-8817",
        "promo",
    )


def test_a_minimal_user_gets_the_defaults() -> None:
    result = verify(sign_init_data(fields({"id": 7, "first_name": ""}), bot_token=BOT_TOKEN))
    assert result.user == TelegramUser(id=7, first_name="")
    assert result.user.is_premium is False and result.user.allows_write_to_pm is False
    assert result.query_id == "AAHdF6IQ" and result.start_param is None


def test_unicode_and_reserved_characters_survive() -> None:
    user = {"id": 9, "first_name": 'Zoë & "Ω" =+%/?#', "last_name": "日本 🦊"}
    result = verify(sign_init_data(fields(user, start_param="a b+c"), bot_token=BOT_TOKEN))
    assert result.user.first_name == user["first_name"]
    assert result.user.last_name == user["last_name"]
    assert result.start_param == "a b+c"


def test_field_order_in_the_query_string_does_not_matter() -> None:
    items = pairs(signed(chat_type="sender"))
    assert verify(encode(list(reversed(items)))).user.id == 42


def _tamper_user(init_data: str) -> str:
    return replace(init_data, "user", json.dumps({**USER, "id": 43}, separators=(",", ":")))


def _flip_hash(init_data: str) -> str:
    digest = dict(pairs(init_data))["hash"]
    return replace(init_data, "hash", ("1" if digest[0] == "0" else "0") + digest[1:])


TAMPERINGS: dict[str, Callable[[str], str]] = {
    "user": _tamper_user,
    "auth_date": lambda d: replace(d, "auth_date", str(int(NOW.timestamp()) + 1)),
    "query_id": lambda d: replace(d, "query_id", "AAHdF6IR"),
    "hash": _flip_hash,
    "added field": lambda d: d + "&start_param=evil",
    "added blank field": lambda d: d + "&start_param=",
    "removed field": lambda d: encode([(k, v) for k, v in pairs(d) if k != "query_id"]),
    "signature covered by the hash": lambda d: replace(
        d, "signature", dict(pairs(d))["signature"][::-1]
    ),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_any_tampering_invalidates_the_hash(tamper: Any) -> None:
    init_data = sign_init_data_ed25519(
        fields(), bot_id=BOT_ID, private_key=TEST_KEY, bot_token=BOT_TOKEN
    )
    assert verify(init_data).method == "hmac"
    assert reason(tamper(init_data)) == "INIT_DATA_INVALID"


def test_data_signed_for_another_bot_is_invalid() -> None:
    init_data = sign_init_data(fields(), bot_token=OTHER_TOKEN)
    assert reason(init_data) == "INIT_DATA_INVALID"
    assert verify(init_data, bot_token=OTHER_TOKEN).user.id == 42


def test_an_empty_bot_token_never_verifies_a_hash() -> None:
    # HMAC keyed by the empty token is forgeable by anyone: an empty token disables the check.
    forged = sign_init_data(fields(), bot_token="")
    assert reason(forged, bot_token="", ed25519_public_key=TEST_KEY_PUBLIC) == "INIT_DATA_INVALID"
    with pytest.raises(ValueError):
        verify(forged, bot_token="")
    with pytest.raises(ValueError):
        verify(forged, bot_token=None)


# --- freshness -----------------------------------------------------------------------------------


def test_auth_date_boundaries() -> None:
    init_data = signed()
    assert verify(init_data, now=NOW + DEFAULT_MAX_AGE).user.id == 42
    assert reason(init_data, now=NOW + DEFAULT_MAX_AGE + timedelta(seconds=1)) == (
        "INIT_DATA_EXPIRED"
    )
    assert verify(init_data, now=NOW - DEFAULT_FUTURE_SKEW).user.id == 42
    assert reason(init_data, now=NOW - DEFAULT_FUTURE_SKEW - timedelta(seconds=1)) == (
        "INIT_DATA_FROM_FUTURE"
    )


def test_the_window_is_configurable() -> None:
    init_data = signed()
    later = NOW + timedelta(minutes=5, seconds=1)
    assert reason(init_data, now=later, max_age=timedelta(minutes=5)) == "INIT_DATA_EXPIRED"
    assert verify(init_data, now=later, max_age=timedelta(minutes=6)).user.id == 42
    earlier = NOW - timedelta(seconds=1)
    assert reason(init_data, now=earlier, future_skew=timedelta(0)) == "INIT_DATA_FROM_FUTURE"
    assert verify(init_data, now=NOW, max_age=timedelta(0), future_skew=timedelta(0)).user.id == 42


def test_now_in_another_timezone_is_the_same_instant() -> None:
    tokyo = NOW.astimezone(timezone(timedelta(hours=9)))
    assert verify(signed(), now=tokyo).auth_date == NOW


def test_ancient_and_far_future_auth_dates() -> None:
    assert reason(sign_init_data({**fields(), "auth_date": "0"}, bot_token=BOT_TOKEN)) == (
        "INIT_DATA_EXPIRED"
    )
    far = sign_init_data({**fields(), "auth_date": "999999999999"}, bot_token=BOT_TOKEN)
    assert reason(far) == "INIT_DATA_FROM_FUTURE"


def test_forged_data_is_invalid_before_it_is_stale() -> None:
    stale = sign_init_data(fields(), bot_token=OTHER_TOKEN)
    assert reason(stale, now=NOW + timedelta(days=30)) == "INIT_DATA_INVALID"


# --- missing and malformed -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_missing(value: str | None) -> None:
    assert reason(value) == "INIT_DATA_MISSING"


def _without(key: str) -> str:
    return encode([(k, v) for k, v in pairs(signed()) if k != key])


MALFORMED_INPUTS = {
    "plain text": "hello world",
    "no equals sign": "user&auth_date=1&hash=" + "0" * 64,
    "empty field": "auth_date=1&&user=x&hash=" + "0" * 64,
    "empty key": "=1&auth_date=1&user=x&hash=" + "0" * 64,
    "a url": "https://example.com/?a=1",
    "json": '{"user": {"id": 42}}',
    "duplicate key": signed() + "&query_id=again",
    "duplicate hash": signed() + "&hash=" + "0" * 64,
    "no hash": _without("hash"),
    "no auth_date": _without("auth_date"),
    "no user": _without("user"),
    "hash not hex": replace(signed(), "hash", "z" * 64),
    "hash uppercase": replace(signed(), "hash", dict(pairs(signed()))["hash"].upper()),
    "hash too short": replace(signed(), "hash", "0" * 63),
    "auth_date negative": replace(signed(), "auth_date", "-1"),
    "auth_date float": replace(signed(), "auth_date", "1.5"),
    "auth_date spaced": replace(signed(), "auth_date", " 1"),
    "auth_date unicode digits": replace(signed(), "auth_date", "١٢٣"),
    "auth_date too long": replace(signed(), "auth_date", "1" * 13),
    "key with dot": signed() + "&a.b=1",
    "non-ascii raw": signed() + "&x=é",
    "invalid utf-8 escape": signed() + "&x=%FF",
    "line feed in a value": signed() + "&x=a%0Ab",
    "over-long": signed() + "&x=" + "a" * MAX_INIT_DATA_BYTES,
    "too many fields": signed() + "".join(f"&k{i}=v" for i in range(80)),
}


@pytest.mark.parametrize("init_data", MALFORMED_INPUTS.values(), ids=MALFORMED_INPUTS.keys())
def test_malformed(init_data: str) -> None:
    assert reason(init_data) == "INIT_DATA_MALFORMED"
    assert reason(init_data, ed25519_public_key=TEST_KEY_PUBLIC) == "INIT_DATA_MALFORMED"


def test_the_size_cap_is_exactly_the_limit() -> None:
    room = MAX_INIT_DATA_BYTES - len(signed()) - len("&x=")
    at_limit = sign_init_data({**fields(), "x": "a" * room}, bot_token=BOT_TOKEN)
    assert len(at_limit) == MAX_INIT_DATA_BYTES
    assert verify(at_limit).user.id == 42
    over = sign_init_data({**fields(), "x": "a" * (room + 1)}, bot_token=BOT_TOKEN)
    assert reason(over) == "INIT_DATA_MALFORMED"


BAD_USERS = {
    "not json": "{id:42}",
    "json array": "[42]",
    "json string": '"42"',
    "truncated": '{"id":42,"first_name":"A"',
    "id 0": '{"id":0,"first_name":"A"}',
    "id negative": '{"id":-42,"first_name":"A"}',
    "id bool": '{"id":true,"first_name":"A"}',
    "id string": '{"id":"42","first_name":"A"}',
    "id float": '{"id":42.0,"first_name":"A"}',
    "id 2**63": f'{{"id":{2**63},"first_name":"A"}}',
    "id NaN": '{"id":NaN,"first_name":"A"}',
    "no id": '{"first_name":"A"}',
    "no first_name": '{"id":42}',
    "first_name not a string": '{"id":42,"first_name":7}',
    "username not a string": '{"id":42,"first_name":"A","username":null}',
    "is_premium not a bool": '{"id":42,"first_name":"A","is_premium":1}',
    "duplicate id": '{"id":1,"first_name":"A","id":42}',
}


@pytest.mark.parametrize("user", BAD_USERS.values(), ids=BAD_USERS.keys())
def test_a_bad_user_is_malformed_even_when_signed(user: str) -> None:
    init_data = sign_init_data({**fields(), "user": user}, bot_token=BOT_TOKEN)
    assert reason(init_data) == "INIT_DATA_MALFORMED"


def test_a_bad_user_in_forged_data_is_invalid() -> None:
    # The user JSON is only parsed once the data is known to come from Telegram.
    init_data = sign_init_data({**fields(), "user": "[42]"}, bot_token=OTHER_TOKEN)
    assert reason(init_data) == "INIT_DATA_INVALID"


def test_the_largest_user_id_is_accepted() -> None:
    user = {"id": 2**63 - 1, "first_name": "Max"}
    assert verify(sign_init_data(fields(user), bot_token=BOT_TOKEN)).user.id == 2**63 - 1


def test_unknown_user_keys_are_ignored() -> None:
    user = {**USER, "is_bot": False, "added_to_attachment_menu": True}
    assert verify(sign_init_data(fields(user), bot_token=BOT_TOKEN)).user.username == "ada"


def test_the_deepest_json_that_fits_is_harmless() -> None:
    # Each bracket costs 3 characters percent-encoded, so the size cap bounds the nesting far
    # below the recursion limit; deeper input is refused by size before any JSON parsing.
    depth = 600
    user = '{"id":42,"first_name":"A","x":' + "[" * depth + "]" * depth + "}"
    init_data = sign_init_data({**fields(), "user": user}, bot_token=BOT_TOKEN)
    assert len(init_data) <= MAX_INIT_DATA_BYTES
    assert verify(init_data).user.id == 42


# --- Ed25519 (third-party validation) ------------------------------------------------------------


def test_a_signature_is_accepted_only_with_its_public_key_configured() -> None:
    init_data = ed_signed()
    assert reason(init_data) == "INIT_DATA_INVALID"
    result = verify(init_data, ed25519_public_key=TEST_KEY_PUBLIC)
    assert result.method == "ed25519" and result.user.id == 42
    # No bot token at all: the third-party setting.
    assert verify(init_data, bot_token=None, ed25519_public_key=TEST_KEY_PUBLIC).user.id == 42
    for telegram_key in (PRODUCTION_PUBLIC_KEY, TEST_PUBLIC_KEY):
        assert reason(init_data, ed25519_public_key=telegram_key) == "INIT_DATA_INVALID"


def test_when_both_are_valid_the_hmac_is_reported() -> None:
    init_data = ed_signed(token=BOT_TOKEN)
    assert verify(init_data, ed25519_public_key=TEST_KEY_PUBLIC).method == "hmac"
    assert verify(init_data, bot_token=None, ed25519_public_key=TEST_KEY_PUBLIC).method == (
        "ed25519"
    )


def test_a_signature_for_another_bot_id_is_invalid() -> None:
    init_data = ed_signed(bot_id=BOT_ID + 1)
    assert reason(init_data, ed25519_public_key=TEST_KEY_PUBLIC) == "INIT_DATA_INVALID"


ED_TAMPERINGS = {
    k: v for k, v in TAMPERINGS.items() if k not in ("hash", "signature covered by the hash")
}
# aiogram parses without keep_blank_values, so it drops an added `key=` before checking; Telegram's
# rule ("all received fields") and we keep it. Not a disagreement on anything Telegram sends.
AIOGRAM_TAMPERINGS = {k: v for k, v in ED_TAMPERINGS.items() if k != "added blank field"}


@pytest.mark.parametrize("tamper", ED_TAMPERINGS.values(), ids=ED_TAMPERINGS.keys())
def test_any_tampering_invalidates_the_signature(tamper: Any) -> None:
    init_data = ed_signed()
    assert reason(tamper(init_data), ed25519_public_key=TEST_KEY_PUBLIC) == "INIT_DATA_INVALID"


def test_the_hash_is_not_covered_by_the_signature() -> None:
    # Documented: the signature covers every field but hash and signature; the hash only needs
    # its format (it is what a bot-token holder checks).
    init_data = _flip_hash(ed_signed())
    assert verify(init_data, ed25519_public_key=TEST_KEY_PUBLIC).method == "ed25519"


def _signature(init_data: str) -> str:
    return dict(pairs(init_data))["signature"]


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
BAD_SIGNATURES: dict[str, Callable[[str], str]] = {
    "padded": lambda s: s + "==",
    "standard base64 alphabet": lambda s: s.replace("-", "+").replace("_", "/") + "+/",
    "not base64": lambda s: "!" + s[1:],
    "truncated": lambda s: s[:-1],
    "extended": lambda s: s + "A",
    # The last of 86 characters carries 2 bits of the signature and 4 unused ones: the same
    # bytes, another string. Only the canonical encoding is accepted.
    "non-canonical last character": lambda s: s[:-1] + B64URL[B64URL.index(s[-1]) ^ 1],
    "empty": lambda s: "",
    "another message's signature": lambda s: _signature(ed_signed(start_param="x")),
}


@pytest.mark.parametrize("bad", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
def test_a_bad_signature_is_invalid(bad: Any) -> None:
    init_data = ed_signed()
    tampered = replace(init_data, "signature", bad(_signature(init_data)))
    assert reason(tampered, ed25519_public_key=TEST_KEY_PUBLIC) == "INIT_DATA_INVALID"


def test_no_signature_with_a_key_configured_is_invalid() -> None:
    init_data = sign_init_data(fields(), bot_token=OTHER_TOKEN)
    assert reason(init_data, ed25519_public_key=TEST_KEY_PUBLIC) == "INIT_DATA_INVALID"


# --- errors and configuration --------------------------------------------------------------------

MARKER = "Sup3rS3cretM4rker"
LEAKY_INPUTS = [
    f"{MARKER}",
    f"{MARKER}&&",
    f"a={MARKER}&a={MARKER}",
    f"%FF{MARKER}=1",
    signed(x=MARKER) + "&x=" + MARKER,
    sign_init_data({**fields(), "user": f'{{"id":"{MARKER}"}}'}, bot_token=BOT_TOKEN),
    sign_init_data({**fields(), "user": f"{{{MARKER}"}, bot_token=BOT_TOKEN),
    sign_init_data({**fields(), "auth_date": "1", "x": MARKER}, bot_token=BOT_TOKEN),
    sign_init_data(fields(start_param=MARKER), bot_token=OTHER_TOKEN),
    replace(ed_signed(start_param=MARKER), "signature", MARKER + "=="),
]


@pytest.mark.parametrize("init_data", LEAKY_INPUTS)
def test_errors_never_carry_the_input(init_data: str) -> None:
    with pytest.raises(InitDataError) as caught:
        verify(init_data, ed25519_public_key=TEST_KEY_PUBLIC)
    error = caught.value
    for text in (str(error), repr(error), repr(error.args), error.message, error.reason):
        assert MARKER not in text
        assert MARKER.lower() not in text.lower()
    # Not even in the chained exception a traceback would print.
    assert error.__context__ is None and error.__cause__ is None
    assert error.__traceback__ is not None


def test_error_shape() -> None:
    with pytest.raises(InitDataError) as caught:
        verify("nonsense")
    error = caught.value
    assert error.reason == "INIT_DATA_MALFORMED"
    assert str(error) == "init data is malformed"
    assert repr(error) == "InitDataError('INIT_DATA_MALFORMED')"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert isinstance(copy, InitDataError) and copy.reason == error.reason


def test_configuration_errors_are_value_errors() -> None:
    init_data = signed()
    with pytest.raises(ValueError):
        verify(init_data, now=datetime(2026, 3, 1, 12, 0))  # naive
    with pytest.raises(ValueError):
        verify(init_data, ed25519_public_key=b"short")
    with pytest.raises(ValueError):
        verify(init_data, max_age=timedelta(seconds=-1))
    with pytest.raises(ValueError):
        init_data_fields(USER, auth_date=datetime(2026, 3, 1, 12, 0))


def test_init_data_fields() -> None:
    assert init_data_fields({"id": 1, "first_name": "Ö"}, auth_date=NOW) == {
        "user": '{"id":1,"first_name":"Ö"}',
        "auth_date": str(int(NOW.timestamp())),
    }
    assert list(fields()) == ["query_id", "user", "auth_date"]


def test_signers_replace_existing_signatures() -> None:
    once = signed()
    twice = sign_init_data(dict(pairs(once)), bot_token=BOT_TOKEN)
    assert once == twice
    ed_once = ed_signed()
    assert (
        sign_init_data_ed25519(
            dict(pairs(ed_once)), bot_id=BOT_ID, private_key=TEST_KEY, bot_token=OTHER_TOKEN
        )
        == ed_once
    )
    assert list(dict(pairs(ed_once)))[-2:] == ["signature", "hash"]


# --- properties ----------------------------------------------------------------------------------

QUERYISH = st.text(alphabet="ab_=&%0123456789ABCDEF+hsu\n é", max_size=200)


@settings(max_examples=300)
@given(st.one_of(st.text(max_size=300), QUERYISH))
def test_arbitrary_text_raises_only_init_data_error(text: str) -> None:
    for key in (None, TEST_KEY_PUBLIC):
        try:
            verify(text, ed25519_public_key=key)
        except InitDataError as error:
            assert error.reason.startswith("INIT_DATA_")


@settings(max_examples=200)
@given(st.data())
def test_arbitrary_signed_fields_raise_only_init_data_error(data: st.DataObject) -> None:
    keys = st.sampled_from(["user", "auth_date", "query_id", "start_param", "signature", "x"])
    extra = data.draw(st.dictionaries(keys, st.text(max_size=60), max_size=4))
    init_data = sign_init_data({**fields(), **extra}, bot_token=BOT_TOKEN)
    with contextlib.suppress(InitDataError):
        verify(init_data, ed25519_public_key=TEST_KEY_PUBLIC)


NAMES = st.text(min_size=0, max_size=40)


@settings(max_examples=100)
@given(
    st.integers(min_value=1, max_value=2**63 - 1),
    NAMES,
    st.none() | NAMES,
    st.booleans(),
    st.none() | st.text(alphabet="abc =&%+\u00e9\u4e2d", max_size=20),
)
def test_signed_users_round_trip(
    user_id: int, first: str, last: str | None, premium: bool, start: str | None
) -> None:
    user: dict[str, Any] = {"id": user_id, "first_name": first, "is_premium": premium}
    if last is not None:
        user["last_name"] = last
    extra = {} if start is None else {"start_param": start}
    result = verify(sign_init_data(fields(user, **extra), bot_token=BOT_TOKEN))
    assert result.user == TelegramUser(
        id=user_id, first_name=first, last_name=last, is_premium=premium
    )
    assert result.start_param == start


# --- cross-check with aiogram --------------------------------------------------------------------


def test_aiogram_accepts_what_we_sign_with_the_bot_token() -> None:
    init_data = signed(chat_type="private", start_param="promo")
    assert aiogram_web_app.check_webapp_signature(BOT_TOKEN, init_data)
    parsed = aiogram_web_app.safe_parse_webapp_init_data(BOT_TOKEN, init_data)
    assert parsed.user is not None and parsed.user.id == 42
    assert parsed.user.first_name == "Ada" and parsed.user.is_premium is True
    assert parsed.query_id == "AAHdF6IQ" and parsed.start_param == "promo"
    assert parsed.auth_date == NOW
    assert not aiogram_web_app.check_webapp_signature(OTHER_TOKEN, init_data)


def test_aiogram_accepts_what_we_sign_with_ed25519() -> None:
    init_data = ed_signed(token=BOT_TOKEN)
    assert aiogram_signature.check_webapp_signature(BOT_ID, init_data, TEST_KEY_PUBLIC)
    assert aiogram_web_app.check_webapp_signature(BOT_TOKEN, init_data)  # hash covers signature
    assert not aiogram_signature.check_webapp_signature(BOT_ID + 1, init_data, TEST_KEY_PUBLIC)
    assert not aiogram_signature.check_webapp_signature(BOT_ID, init_data, PRODUCTION_PUBLIC_KEY)


@pytest.mark.parametrize("tamper", AIOGRAM_TAMPERINGS.values(), ids=AIOGRAM_TAMPERINGS.keys())
def test_tampered_data_is_refused_by_both(tamper: Any) -> None:
    init_data = tamper(ed_signed(token=BOT_TOKEN))
    assert not aiogram_web_app.check_webapp_signature(BOT_TOKEN, init_data)
    assert not aiogram_signature.check_webapp_signature(BOT_ID, init_data, TEST_KEY_PUBLIC)
    assert reason(init_data, ed25519_public_key=TEST_KEY_PUBLIC) == "INIT_DATA_INVALID"


@settings(max_examples=100)
@given(
    st.dictionaries(
        st.sampled_from(["query_id", "start_param", "chat_type", "chat_instance"]),
        st.text(
            alphabet=st.characters(codec="utf-8", exclude_characters="\n"),
            min_size=1,
            max_size=30,
        ),
    ),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_we_and_aiogram_agree_on_signed_data(extra: dict[str, str], user_id: int) -> None:
    user = {"id": user_id, "first_name": "Ada"}
    unsigned = {**init_data_fields(user, auth_date=NOW), **extra}
    init_data = sign_init_data_ed25519(
        unsigned, bot_id=BOT_ID, private_key=TEST_KEY, bot_token=BOT_TOKEN
    )
    if not init_data.isascii() or len(init_data) > MAX_INIT_DATA_BYTES:
        return
    ours = verify(init_data, bot_token=None, ed25519_public_key=TEST_KEY_PUBLIC)
    assert ours.user.id == user_id
    assert aiogram_signature.check_webapp_signature(BOT_ID, init_data, TEST_KEY_PUBLIC)
    assert aiogram_web_app.check_webapp_signature(BOT_TOKEN, init_data)
    assert verify(init_data).method == "hmac"


def test_authentication_and_freshness_apart_answer_as_verify_does() -> None:
    # What the edge remembers (authenticate) and what it checks on every use (freshness).
    for init_data in (signed(), ed_signed()):
        verified = authenticate_init_data(
            init_data, bot_token=BOT_TOKEN, bot_id=BOT_ID, ed25519_public_key=TEST_KEY_PUBLIC
        )
        assert verified == verify(init_data, ed25519_public_key=TEST_KEY_PUBLIC)
        check_freshness(verified, now=NOW + DEFAULT_MAX_AGE)
        with pytest.raises(InitDataError) as expired:
            check_freshness(verified, now=NOW + DEFAULT_MAX_AGE + timedelta(seconds=1))
        assert expired.value.reason == "INIT_DATA_EXPIRED"
        with pytest.raises(InitDataError) as early:
            check_freshness(verified, now=NOW - timedelta(seconds=61))
        assert early.value.reason == "INIT_DATA_FROM_FUTURE"
    with pytest.raises(InitDataError) as forged:
        authenticate_init_data(signed(), bot_token=OTHER_TOKEN, bot_id=BOT_ID)
    assert forged.value.reason == "INIT_DATA_INVALID"
