"""ListOrders' filter (domain/order_filter.py): what each comparison parses to, what it selects,
and an error naming the 1-based position and the reason for everything else."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portex_pay.domain.errors import InvalidArgument
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.order_filter import (
    MAX_COMPARISONS,
    MAX_FILTER_CHARS,
    Comparison,
    FilterField,
    Operator,
    OrderFilter,
    Value,
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


def compared(field: FilterField, op: Operator, value: Value, key: str | None = None) -> Comparison:
    return Comparison(field, op, value, key)


LABEL, CREATE, PAID_TIME = FilterField.LABEL, FilterField.CREATE_TIME, FilterField.PAID_TIME
EQ, NE, LT, LE, GT, GE = (Operator(op) for op in ("=", "!=", "<", "<=", ">", ">="))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("   ", ()),
        ("tg_use_id = 42", (compared(FilterField.TG_USE_ID, EQ, 42),)),
        ("tg_use_id!=42", (compared(FilterField.TG_USE_ID, NE, 42),)),
        ("state = PAID", (compared(FilterField.STATE, EQ, OrderState.PAID),)),
        ('label = "gems"', (compared(LABEL, EQ, "gems"),)),
        ('label != "a \\"b\\" \\\\ c"', (compared(LABEL, NE, 'a "b" \\ c'),)),
        ('create_time >= "2026-12-03T10:00:00Z"', (compared(CREATE, GE, T),)),
        ('create_time < "2026-12-03T13:30:00+03:30"', (compared(CREATE, LT, T),)),
        ('paid_time <= "2026-12-03t10:00:00z"', (compared(PAID_TIME, LE, T),)),
        (
            'paid_time > "2026-12-03T10:00:00.123456789Z"',
            (compared(PAID_TIME, GT, T + timedelta(microseconds=123456)),),
        ),
        ("fulfilled = false", (compared(FilterField.FULFILLED, EQ, False),)),
        ('metadata.sku = "A-1"', (compared(FilterField.METADATA, EQ, "A-1", "sku"),)),
        ('metadata."gift card" != ""', (compared(FilterField.METADATA, NE, "", "gift card"),)),
        (
            'state = PAID AND fulfilled = false AND paid_time < "2026-12-03T10:00:00Z"',
            (
                compared(FilterField.STATE, EQ, OrderState.PAID),
                compared(FilterField.FULFILLED, EQ, False),
                compared(PAID_TIME, LT, T),
            ),
        ),
        (
            'label="x"AND tg_use_id=1',
            (compared(LABEL, EQ, "x"), compared(FilterField.TG_USE_ID, EQ, 1)),
        ),
    ],
)
def test_a_filter_parses_to_its_comparisons(text: str, expected: tuple[Comparison, ...]) -> None:
    assert parse_order_filter(text) == OrderFilter(expected)


FIELDS = (
    "tg_use_id, state, label, create_time, paid_time, fulfilled, subscription_state, metadata.KEY"
)
USER_ID = "tg_use_id takes a whole number from 1 to 9223372036854775807"
TIME = 'takes an RFC 3339 time in double quotes, e.g. "2026-12-03T10:00:00Z"'
KEY = 'expected a key after metadata: metadata.KEY or metadata."any key"'
ESCAPE = 'a backslash in a string escapes only \\" and \\\\'
REFUSED = "control characters and lone surrogates are not allowed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tg_use_id =", "position 12: expected a value after '='"),
        ("tg_use_id = 42 AND state =", "position 27: expected a value after '='"),
        ("tg_use_id = = 4", "position 13: expected a value after '='"),
        ("tg_use_id = 42 and state = PAID", "position 16: write AND in upper case, not and"),
        (
            "state = PAID OR state = FAILED",
            "position 14: OR is not supported: comparisons can only be joined by AND",
        ),
        ("NOT state = PAID", "position 1: NOT is not supported, only AND"),
        (
            "tg_use_id = 1 tg_use_id = 2",
            "position 15: expected AND between comparisons, found 'tg_use_id'",
        ),
        ("tg_use_id = 1 AND", "position 18: expected a comparison after AND"),
        ("= 1", f"position 1: expected a field ({FIELDS}), found '='"),
        ("amount = 5", f"position 1: unknown field 'amount' (fields: {FIELDS})"),
        ("state PAID", "position 7: expected an operator (=, !=, <, <=, >, >=) after state"),
        ("state < PAID", "position 7: state takes = or !=, not <"),
        ("fulfilled != true", "position 11: fulfilled takes =, not !="),
        ('label: "x"', "position 6: the has-operator ':' is not supported; use ="),
        ("tg_use_id = 0", f"position 13: {USER_ID}"),
        ("tg_use_id = -4", f"position 13: {USER_ID}"),
        ("tg_use_id = 9223372036854775808", f"position 13: {USER_ID}"),
        ('tg_use_id = "42"', f"position 13: {USER_ID}"),
        (
            "state = paid",
            "position 9: state takes one of PENDING, PAID, CANCELLED, EXPIRED, FAILED, REFUNDED",
        ),
        ("fulfilled = yes", "position 13: fulfilled takes true or false"),
        ("label = gems", "position 9: label takes a string in double quotes"),
        ('create_time > "2026-02-30T00:00:00Z"', f"position 15: create_time {TIME}"),
        ('paid_time > "2026-12-03"', f"position 13: paid_time {TIME}"),
        ('paid_time > "0001-01-01T00:00:00+01:00"', f"position 13: paid_time {TIME}"),
        ('create_time > "2026-12-03T10:00:00+24:00"', f"position 15: create_time {TIME}"),
        ('metadata = "x"', f"position 10: {KEY}"),
        ('metadata.= "x"', f"position 10: {KEY}"),
        ('metadata."" = "x"', "position 10: a metadata key has 1-40 characters"),
        ('metadata.sku < "x"', "position 14: metadata.KEY takes = or !=, not <"),
        ('label = "gems', "position 9: a string is not closed (a double quote is missing)"),
        ('label = "a\\nb"', f"position 11: {ESCAPE} (unexpected character 'n')"),
        ('label = "a\\', f"position 11: {ESCAPE} (at the end)"),
        ("(state = PAID)", "position 1: unexpected character '('"),
        ("state = PAID\u00a0", "position 13: unexpected character U+00A0"),
        ('label = "x\x00y"', f"position 11: {REFUSED} (found U+0000)"),
        ("state = PAID\n", f"position 13: {REFUSED} (found U+000A)"),
        ('label = "\ud800"', f"position 10: {REFUSED} (found U+D800)"),
    ],
)
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


def order(state: OrderState = OrderState.PENDING, **changes: Any) -> Order:
    return replace(make_order(7, uuid4(), state), **changes)


def selects(text: str, order: Order, now: datetime = NOW) -> bool:
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


OPERATORS = ("<", "<=", ">", ">=")


def test_time_ranges_select_paid_orders_only_for_paid_time() -> None:
    unpaid, paid = order(), order(OrderState.PAID, paid_at=T)
    for op in OPERATORS:
        assert not selects(f'paid_time {op} "2026-12-03T10:00:00Z"', unpaid)
    answers = [selects(f'paid_time {op} "2026-12-03T10:00:00Z"', paid) for op in OPERATORS]
    assert answers == [False, True, False, True]
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
