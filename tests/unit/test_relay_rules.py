"""The relay's rules: which update kinds the app's bot asked for, which updates it receives
(kinds newer than this code included), and what portex-pay asks Telegram for (the union)."""

from __future__ import annotations

import pytest

from portex_pay.domain.relay import (
    MAX_ALLOWED_UPDATES,
    OWN_KINDS,
    InvalidAllowedUpdates,
    parse_allowed_updates,
    telegram_allowed_updates,
    update_kind,
    wants,
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
        # A kind this code does not know may be one Telegram added since: kept, and sent on.
        (["no_such_kind", "poll"], ("no_such_kind", "poll")),
        (
            ["subscription", "stopped_message_generation"],
            ("stopped_message_generation", "subscription"),
        ),
        (["future_kind_x"], ("future_kind_x",)),
        (["Message", "CALLBACK_QUERY"], ("callback_query", "message")),  # any case, as Telegram
        # Names that cannot be an Update field are ignored, as Telegram ignores unknown names;
        # nothing else left: the default set.
        (["", "1x", "a b", "message\n", "<script>", "x" * 65, "ümlaut", "poll"], ("poll",)),
        (["", "-"], ()),
        (["message"] * 1000, ("message",)),
    ],
)
def test_allowed_updates_parse_as_telegram_defines_them(given: object, parsed: object) -> None:
    assert parse_allowed_updates(given) == parsed


@pytest.mark.parametrize(
    "given",
    [
        "message",
        "{}",
        '"message"',
        [1],
        {"a": 1},
        "[",
        5,
        [None],
        [["message"]],
        "[" * 1000 + "]" * 1000,  # json.loads: RecursionError
        "[" * 100_000,
        "1" * 5000,  # past int's digit limit: ValueError
        "\x00",
        "NaN",
        b"[]",
    ],
)
def test_allowed_updates_that_are_not_an_array_of_strings_are_refused(given: object) -> None:
    with pytest.raises(InvalidAllowedUpdates):
        parse_allowed_updates(given)


def test_a_name_that_is_no_identifier_is_ignored_not_an_error() -> None:
    assert parse_allowed_updates('["\\udcff", "poll"]') == ("poll",)  # a lone surrogate
    assert parse_allowed_updates(["\udcff", "\x00"]) == ()


def test_allowed_updates_are_bounded() -> None:
    most = [f"kind_{n}" for n in range(MAX_ALLOWED_UPDATES)]
    assert parse_allowed_updates(most) == tuple(sorted(most))
    with pytest.raises(InvalidAllowedUpdates):
        parse_allowed_updates([*most, "one_more"])
    with pytest.raises(InvalidAllowedUpdates):
        parse_allowed_updates(["message"] * 1025)


def test_telegram_is_asked_for_the_union() -> None:
    assert telegram_allowed_updates(None) == list(OWN_KINDS)  # no relay: ours only
    assert telegram_allowed_updates(("callback_query",)) == [
        "callback_query",
        "message",
        "pre_checkout_query",
        "subscription",  # Bot API 10.2: a subscription's changes
    ]
    # The bot takes Telegram's default set: so does portex-pay ([]), rather than the kinds it
    # knows, so that a kind newer than this code still comes.
    assert telegram_allowed_updates(()) == []
    assert set(telegram_allowed_updates(("chat_member",))) == {"chat_member", *OWN_KINDS}
    assert telegram_allowed_updates(("future_kind_x",)) == ["future_kind_x", *OWN_KINDS]


@pytest.mark.parametrize(
    ("allowed", "kind", "wanted"),
    [
        (None, "message", True),
        ((), "callback_query", True),
        ((), "chat_member", False),  # Telegram's default set leaves these three out
        ((), "message_reaction", False),
        ((), "message_reaction_count", False),
        ((), "subscription", True),
        ((), "future_kind_x", True),  # a kind newer than this code is in the default set
        (("chat_member",), "chat_member", True),
        (("callback_query",), "message", False),
        (("future_kind_x",), "future_kind_x", True),
        (("message",), "future_kind_x", False),
        (None, None, False),  # no kind: nobody's
        ((), "", False),
    ],
)
def test_which_updates_the_bot_receives(
    allowed: tuple[str, ...] | None, kind: str | None, wanted: bool
) -> None:
    assert wants(allowed, kind) is wanted


def test_the_kind_of_an_update_is_its_field_beside_update_id() -> None:
    assert update_kind({"update_id": 1, "callback_query": {}}) == "callback_query"
    assert update_kind({"update_id": 1, "message": {"successful_payment": {}}}) == "message"
    assert update_kind({"update_id": 1, "subscription": {}}) == "subscription"
    # A kind this code does not know: the update's one field besides update_id.
    assert update_kind({"update_id": 1, "something_new": {}}) == "something_new"
    assert update_kind({"something_new": {}, "update_id": 1}) == "something_new"
    # A known kind wins over an unknown extra field; two unknown fields, or a field that cannot
    # be a kind, name none.
    assert update_kind({"update_id": 1, "extra": 1, "poll": {}}) == "poll"
    assert update_kind({"update_id": 1, "a_new": {}, "b_new": {}}) is None
    assert update_kind({"update_id": 1, "Not A Kind": {}}) is None
    assert update_kind({"update_id": 1}) is None
    assert update_kind([1]) is None
