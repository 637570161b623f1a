"""ListOrders' filter (domain/order_filter.py): what each comparison parses to, what it selects,
and an error naming the 1-based position and the reason for everything else."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portex_pay.domain.errors import InvalidArgument
from portex_pay.domain.order import OrderState
from portex_pay.domain.order_filter import (
    MAX_COMPARISONS,
    MAX_FILTER_CHARS,
    Comparison,
    FilterField,
    Operator,
    OrderFilter,
    parse_order_filter,
)
from tests.unit.fakes import NOW, make_order

T = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def problem(text: str) -> str:
    """The one violation's description a bad filter gets."""
    with pytest.raises(InvalidArgument) as raised:
        parse_order_filter(text)
    (violation,) = raised.value.violations
    assert violation.field == "filter"
    return violation.description


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("   ", ()),
        ("tg_use_id = 42", (Comparison(FilterField.TG_USE_ID, Operator.EQ, 42),)),
        ("tg_use_id!=42", (Comparison(FilterField.TG_USE_ID, Operator.NE, 42),)),
        ("state = PAID", (Comparison(FilterField.STATE, Operator.EQ, OrderState.PAID),)),
        ('label = "gems"', (Comparison(FilterField.LABEL, Operator.EQ, "gems"),)),
        ('label != "a \\"b\\" \\\\ c"', (Comparison(FilterField.LABEL, Operator.NE, 'a "b" \\ c'),)),
        ('create_time >= "2026-12-03T10:00:00Z"', (Comparison(FilterField.CREATE_TIME, Operator.GE, T),)),
        ('create_time < "2026-12-03T13:30:00+03:30"', (Comparison(FilterField.CREATE_TIME, Operator.LT, T),)),
        ('paid_time <= "2026-12-03t10:00:00z"', (Comparison(FilterField.PAID_TIME, Operator.LE, T),)),
        (
            'paid_time > "2026-12-03T10:00:00.123456789Z"',
            (Comparison(FilterField.PAID_TIME, Operator.GT, T + timedelta(microseconds=123456)),),
        ),
        ("fulfilled = false", (Comparison(FilterField.FULFILLED, Operator.EQ, False),)),
        ('metadata.sku = "A-1"', (Comparison(FilterField.METADATA, Operator.EQ, "A-1", "sku"),)),
        (
            'metadata."gift card" != ""',
            (Comparison(FilterField.METADATA, Operator.NE, "", "gift card"),),
        ),
        (
            'state = PAID AND fulfilled = false AND paid_time < "2026-12-03T10:00:00Z"',
            (
                Comparison(FilterField.STATE, Operator.EQ, OrderState.PAID),
                Comparison(FilterField.FULFILLED, Operator.EQ, False),
                Comparison(FilterField.PAID_TIME, Operator.LT, T),
            ),
        ),
        (
            'label="x"AND tg_use_id=1',
            (
                Comparison(FilterField.LABEL, Operator.EQ, "x"),
                Comparison(FilterField.TG_USE_ID, Operator.EQ, 1),
            ),
        ),
    ],
)  # fmt: skip
def test_a_filter_parses_to_its_comparisons(text: str, expected: tuple[Comparison, ...]) -> None:
    assert parse_order_filter(text) == OrderFilter(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tg_use_id =", "position 12: expected a value after '='"),
        ("tg_use_id = 42 AND state =", "position 27: expected a value after '='"),
        ("tg_use_id = = 4", "position 13: expected a value after '='"),
        ("tg_use_id = 42 and state = PAID", "position 16: write AND in upper case, not and"),
        ("state = PAID OR state = FAILED", "position 14: OR is not supported: comparisons can only be joined by AND"),
        ("NOT state = PAID", "position 1: NOT is not supported, only AND"),
        ("tg_use_id = 1 tg_use_id = 2", "position 15: expected AND between comparisons, found 'tg_use_id'"),
        ("tg_use_id = 1 AND", "position 18: expected a comparison after AND"),
        ("= 1", "position 1: expected a field (tg_use_id, state, label, create_time, paid_time, fulfilled, metadata.KEY), found '='"),
        ("amount = 5", "position 1: unknown field 'amount' (fields: tg_use_id, state, label, create_time, paid_time, fulfilled, metadata.KEY)"),
        ("state PAID", "position 7: expected an operator (=, !=, <, <=, >, >=) after state"),
        ("state < PAID", "position 7: state takes = or !=, not <"),
        ("fulfilled != true", "position 11: fulfilled takes =, not !="),
        ("label: \"x\"", "position 6: the has-operator ':' is not supported; use ="),
        ("tg_use_id = 0", "position 13: tg_use_id takes a whole number from 1 to 9223372036854775807"),
        ("tg_use_id = -4", "position 13: tg_use_id takes a whole number from 1 to 9223372036854775807"),
        ("tg_use_id = 9223372036854775808", "position 13: tg_use_id takes a whole number from 1 to 9223372036854775807"),
        ('tg_use_id = "42"', "position 13: tg_use_id takes a whole number from 1 to 9223372036854775807"),
        ("state = paid", "position 9: state takes one of PENDING, PAID, CANCELLED, EXPIRED, FAILED, REFUNDED"),
        ("fulfilled = yes", "position 13: fulfilled takes true or false"),
        ("label = gems", "position 9: label takes a string in double quotes"),
        ('create_time > "2026-02-30T00:00:00Z"', 'position 15: create_time takes an RFC 3339 time in double quotes, e.g. "2026-12-03T10:00:00Z"'),
        ('paid_time > "2026-12-03"', 'position 13: paid_time takes an RFC 3339 time in double quotes, e.g. "2026-12-03T10:00:00Z"'),
        ('paid_time > "0001-01-01T00:00:00+01:00"', 'position 13: paid_time takes an RFC 3339 time in double quotes, e.g. "2026-12-03T10:00:00Z"'),
        ('create_time > "2026-12-03T10:00:00+24:00"', 'position 15: create_time takes an RFC 3339 time in double quotes, e.g. "2026-12-03T10:00:00Z"'),
        ('metadata = "x"', 'position 10: expected a key after metadata: metadata.KEY or metadata."any key"'),
        ("metadata.= \"x\"", 'position 10: expected a key after metadata: metadata.KEY or metadata."any key"'),
        ('metadata."" = "x"', "position 10: a metadata key has 1-40 characters"),
        ('metadata.sku < "x"', "position 14: metadata.KEY takes = or !=, not <"),
        ('label = "gems', "position 9: a string is not closed (a double quote is missing)"),
        ('label = "a\\nb"', "position 11: a backslash in a string escapes only \\\" and \\\\ (unexpected character 'n')"),
        ('label = "a\\', "position 11: a backslash in a string escapes only \\\" and \\\\ (at the end)"),
        ("(state = PAID)", "position 1: unexpected character '('"),
        ("state = PAID\u00a0", "position 13: unexpected character U+00A0"),
        ('label = "x\x00y"', "position 11: control characters and lone surrogates are not allowed (found U+0000)"),
        ("state = PAID\n", "position 13: control characters and lone surrogates are not allowed (found U+000A)"),
        ('label = "\ud800"', "position 10: control characters and lone surrogates are not allowed (found U+D800)"),
    ],
)  # fmt: skip
def test_a_bad_filter_names_the_position_and_the_reason(text: str, expected: str) -> None:
    assert problem(text) == expected


def test_a_filter_is_at_most_1000_characters() -> None:
    longest = 'label = "' + "x" * (MAX_FILTER_CHARS - 10) + '"'
    assert len(longest) == MAX_FILTER_CHARS
    parse_order_filter(longest)
    too_long = longest + " "
    assert problem(too_long) == "position 1001: a filter holds at most 1000 characters"


def test_a_filter_is_at_most_20_comparisons() -> None:
    terms = ["tg_use_id = 1"] * MAX_COMPARISONS
    assert len(parse_order_filter(" AND ".join(terms)).comparisons) == MAX_COMPARISONS
    text = " AND ".join([*terms, "tg_use_id = 1"])
    position = len(" AND ".join(terms)) + 2
    assert problem(text) == f"position {position}: a filter holds at most 20 comparisons"


# ---------------------------------------------------------------------------- what it selects


def order(state: OrderState = OrderState.PENDING, **changes: object):
    return replace(make_order(7, uuid4(), state), **changes)


def selects(text: str, order, now: datetime = NOW) -> bool:
    return parse_order_filter(text).matches(order, now)


@pytest.mark.parametrize("state", list(OrderState))
@pytest.mark.parametrize("past_expiry", [False, True])
def test_state_is_the_state_a_reader_sees(state: OrderState, past_expiry: bool) -> None:
    """By Order.state_at: an unpaid order past its expiry is EXPIRED, and nothing else."""
    subject = order(state)
    now = subject.expires_at + (timedelta(seconds=1) if past_expiry else -timedelta(seconds=1))
    seen = subject.state_at(now)
    for name in OrderState:
        assert selects(f"state = {name.name}", subject, now) is (name is seen)
        assert selects(f"state != {name.name}", subject, now) is (name is not seen)


def test_not_equal_selects_exactly_what_equal_does_not() -> None:
    """Also where a value is missing: an order never paid, a metadata key not set."""
    unpaid = order(metadata={"sku": "A"})
    paid = order(OrderState.PAID, paid_at=T, metadata={})
    for subject in (unpaid, paid):
        for text in ('paid_time = "2026-12-03T10:00:00Z"', 'metadata.sku = "A"', "tg_use_id = 42"):
            assert selects(text, subject) is not selects(text.replace(" = ", " != "), subject)
    assert selects('paid_time != "2026-12-03T10:00:00Z"', unpaid)
    assert selects('metadata.sku != "A"', paid)


def test_time_ranges_select_paid_orders_only_for_paid_time() -> None:
    unpaid, paid = order(), order(OrderState.PAID, paid_at=T)
    for op in ("<", "<=", ">", ">="):
        assert not selects(f'paid_time {op} "2026-12-03T10:00:00Z"', unpaid)
    assert [selects(f'paid_time {op} "2026-12-03T10:00:00Z"', paid) for op in ("<", "<=", ">", ">=")] == [
        False,
        True,
        False,
        True,
    ]  # fmt: skip
    assert selects(f'create_time = "{NOW.isoformat()}"', unpaid)
    assert selects('create_time < "2030-01-01T00:00:00Z"', unpaid)


def test_fulfilled_label_and_metadata_compare_the_fields() -> None:
    delivered = order(OrderState.PAID, fulfilled_at=T, label="gems", metadata={"gift card": "yes"})
    assert selects("fulfilled = true", delivered) and not selects("fulfilled = false", delivered)
    assert selects("fulfilled = false", order())
    assert selects('label = "gems" AND metadata."gift card" = "yes"', delivered)
    assert not selects('label = "gems" AND metadata."gift card" = "no"', delivered)
    assert selects("", delivered)


# ---------------------------------------------------------------------------- any text


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet='tg_usemdaAND=!<>." \\:-0123456789TZ', max_size=60),
        st.lists(
            st.sampled_from(
                [
                    "tg_use_id", "state", "label", "create_time", "paid_time", "fulfilled",
                    "metadata.", "metadata", "AND", "and", "OR", "=", "!=", "<", "<=", ">", ">=",
                    '"', '\\"', "PAID", "true", "42", '"2026-12-03T10:00:00Z"', " ", ":", "\x00",
                    "\ud800", "\u2028", "-", '"x"', "9" * 25,
                ]
            ),
            max_size=14,
        ).map("".join),
    )
)  # fmt: skip
def test_any_text_parses_or_names_a_position_inside_it(text: str) -> None:
    """Never an exception but InvalidArgument, and its position lies within the text (or just
    after its end)."""
    try:
        parse_order_filter(text)
    except InvalidArgument as error:
        (violation,) = error.violations
        found = re.fullmatch(r"position ([0-9]+): .+", violation.description, re.DOTALL)
        assert found is not None, violation.description
        assert 1 <= int(found[1]) <= min(len(text), MAX_FILTER_CHARS) + 1
