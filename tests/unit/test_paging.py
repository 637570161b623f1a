"""List pages (domain/paging.py): the page size rule and page tokens that only this service makes,
bound to the filter they were made for."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.paging import (
    PageToken,
    from_micros,
    page_size,
    request_digest,
    to_micros,
)

AS_OF = datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC)
DIGEST = request_digest("orders", "state = PAID")
TOKEN = PageToken((to_micros(AS_OF) - 5, 2**62), AS_OF, DIGEST)


def violation(call) -> FieldViolation:
    with pytest.raises(InvalidArgument) as raised:
        call()
    (found,) = raised.value.violations
    return found


@pytest.mark.parametrize(("requested", "size"), [(0, 100), (1, 1), (1000, 1000)])
def test_a_page_size_is_taken_or_defaults_to_100(requested: int, size: int) -> None:
    assert page_size(requested) == size


@pytest.mark.parametrize("requested", [-1, 1001, -(2**31)])
def test_a_negative_or_too_large_page_size_is_invalid(requested: int) -> None:
    assert violation(lambda: page_size(requested)) == FieldViolation(
        "page_size", "must be from 1 to 1000 (0 or unset: 100)"
    )


def test_a_token_decodes_to_what_was_encoded() -> None:
    assert PageToken.decode(TOKEN.encode(), digest=DIGEST, arity=2) == TOKEN
    assert from_micros(to_micros(AS_OF)) == AS_OF


def test_a_token_sent_with_another_filter_is_refused() -> None:
    other = request_digest("orders", "state = PENDING")
    found = violation(lambda: PageToken.decode(TOKEN.encode(), digest=other, arity=2))
    assert found.field == "page_token"
    assert found.description.startswith("was made for another filter")


def encoded(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "x",
        TOKEN.encode() + "A",
        TOKEN.encode()[:-1],
        TOKEN.encode() + "==",
        "!" * 10,
        encoded(f"v1.1.2.3.{DIGEST}.x"),
        encoded(f"v1.1.3.{DIGEST}"),  # a position of one number, not two
        encoded(f"v1.01.2.3.{DIGEST}"),  # a leading zero: not the canonical spelling
        encoded(f"v1.1.{2**63}.3.{DIGEST}"),  # beyond a bigint
        encoded(f"v1.1.2.{10**18}.{DIGEST}"),  # a time beyond datetime's range
        encoded(f"v2.1.2.3.{DIGEST}"),
        encoded(f"v1.1.2.3.{DIGEST.upper()}"),
    ],
)
def test_anything_but_a_token_of_this_service_is_malformed(text: str) -> None:
    found = violation(lambda: PageToken.decode(text, digest=DIGEST, arity=2))
    assert found.field == "page_token"
    assert found.description.startswith("is not a page token of this list")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_any_text_is_a_token_or_invalid_argument(text: str) -> None:
    try:
        PageToken.decode(text, digest=DIGEST, arity=2)
    except InvalidArgument as error:
        assert [v.field for v in error.violations] == ["page_token"]


def test_a_position_too_far_from_the_epoch_for_a_time_is_malformed() -> None:
    """A token of the right shape whose position is no time: refused, not a server error."""
    far = PageToken((10**18, 1), AS_OF, DIGEST)
    decoded = PageToken.decode(far.encode(), digest=DIGEST, arity=2)
    found = violation(lambda: decoded.time_at(0))
    assert found.field == "page_token"
    assert decoded.time_at(1) == from_micros(1)
