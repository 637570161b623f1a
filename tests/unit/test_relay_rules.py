"""The relay's rules: which update kinds the app's bot asked for, and what portex-pay asks
Telegram for (the union)."""

from __future__ import annotations

import pytest

from portex_pay.domain.relay import (
    DEFAULT_KINDS,
    OWN_KINDS,
    InvalidAllowedUpdates,
    parse_allowed_updates,
    telegram_allowed_updates,
    update_kind,
)


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        (None, None),  # not given: the previous setting stays
        ("", None),
        ([], ()),  # empty: Telegram's default set
        ("[]", ()),
        (["message", "callback_query"], ("callback_query", "message")),
        ('["callback_query","callback_query"]', ("callback_query",)),
        (["no_such_kind", "poll"], ("poll",)),  # unknown names are ignored, as Telegram does
    ],
)
def test_allowed_updates_parse_as_telegram_defines_them(given: object, parsed: object) -> None:
    assert parse_allowed_updates(given) == parsed


@pytest.mark.parametrize("given", ["message", "{}", '"message"', [1], {"a": 1}, "[", 5])
def test_allowed_updates_that_are_not_an_array_of_strings_are_refused(given: object) -> None:
    with pytest.raises(InvalidAllowedUpdates):
        parse_allowed_updates(given)


def test_telegram_is_asked_for_the_union() -> None:
    assert telegram_allowed_updates(None) == list(OWN_KINDS)  # no relay: ours only
    assert telegram_allowed_updates(("callback_query",)) == [
        "callback_query",
        "message",
        "pre_checkout_query",
    ]
    everything = telegram_allowed_updates(())  # the bot takes Telegram's default set
    assert set(everything) == DEFAULT_KINDS and "chat_member" not in everything
    assert set(telegram_allowed_updates(("chat_member",))) == {"chat_member", *OWN_KINDS}


def test_the_kind_of_an_update_is_its_field_beside_update_id() -> None:
    assert update_kind({"update_id": 1, "callback_query": {}}) == "callback_query"
    assert update_kind({"update_id": 1, "message": {"successful_payment": {}}}) == "message"
    assert update_kind({"update_id": 1, "something_new": {}}) is None
    assert update_kind([1]) is None
