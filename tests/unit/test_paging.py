"""Page sizes and page tokens (domain/paging.py): a token gives back the position it was made
with, for the filters it was made for; anything else is INVALID_ARGUMENT on `page_token`, never
an error of another kind."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from portex_pay.domain.errors import InvalidArgument
from portex_pay.domain.paging import (
    decode_page_token,
    encode_page_token,
    from_micros,
    micros,
    page_size,
    position_time,
)

FILTERS = {"state": "failed", "created_from": datetime(2026, 12, 1, tzinfo=UTC)}
SHAPE = (int, str)


def raw_token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def refused(token: str, filters: dict[str, object] = FILTERS) -> str:
    with pytest.raises(InvalidArgument) as raised:
        decode_page_token(token, filters, SHAPE)
    (violation,) = raised.value.violations
    assert violation.field == "page_token"
    return violation.description


def test_a_token_gives_back_its_position_for_its_filters() -> None:
    position = (micros(datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC)), "charge-é-1")
    token = encode_page_token(position, FILTERS)
    assert token.isascii() and "=" not in token
    assert decode_page_token(token, dict(reversed(FILTERS.items())), SHAPE) == position


def test_a_token_with_other_filters_is_refused_as_such() -> None:
    token = encode_page_token((1, "a"), FILTERS)
    assert "other filters" in refused(token, {**FILTERS, "state": "pending"})
    assert "other filters" in refused(token, {})


@pytest.mark.parametrize(
    "token",
    [
        "not base64!",
        "é",
        "A" * 3000,
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        raw_token({"v": 1}),
        raw_token([2, "x", [1, "a"]]),  # another version
        raw_token([1, "x", [1]]),  # another shape
        raw_token([1, "x", [True, "a"]]),  # a bool is no position
        raw_token([1, "x", [1.5, "a"]]),
        raw_token([1, "x", [2**63, "a"]]),  # beyond bigint
        raw_token([1, "x", [1, ""]]),
        raw_token([1, "x", [1, "nul\u0000"]]),  # PostgreSQL cannot hold it
        raw_token([1, "x", [1, "\ud800"]]),  # a lone surrogate
        raw_token([1, 7, [1, "a"]]),
    ],
)
def test_anything_else_is_not_a_page_token(token: str) -> None:
    assert "not a page token" in refused(token)


def test_page_sizes_default_to_100_and_stop_at_1000() -> None:
    assert (page_size(0), page_size(1), page_size(1000)) == (100, 1, 1000)
    for bad in (-1, 1001):
        with pytest.raises(InvalidArgument) as raised:
            page_size(bad)
        assert raised.value.violations[0].field == "page_size"


def test_times_go_into_a_position_exactly() -> None:
    for moment in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 12, 3, 10, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ):
        assert from_micros(micros(moment)) == moment
    with pytest.raises(OverflowError):
        from_micros(2**62)


def test_a_position_too_far_from_the_epoch_for_a_time_is_not_a_token() -> None:
    """A token of the right shape whose position is no time: INVALID_ARGUMENT, not a 5xx."""
    assert position_time(micros(datetime(2026, 12, 3, tzinfo=UTC))) == datetime(
        2026, 12, 3, tzinfo=UTC
    )
    with pytest.raises(InvalidArgument) as refused:
        position_time(10**18)
    assert [v.field for v in refused.value.violations] == ["page_token"]
