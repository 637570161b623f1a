"""The accounting export's pure parts: times as text, and the columns the README documents."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from portex_pay.domain.timestamps import format_rfc3339, parse_rfc3339
from portex_pay.service.export import KINDS, ORDER_COLUMNS


@pytest.mark.parametrize(
    ("text", "instant"),
    [
        ("2026-12-03T10:00:00Z", datetime(2026, 12, 3, 10, tzinfo=UTC)),
        ("2026-12-03t10:00:00z", datetime(2026, 12, 3, 10, tzinfo=UTC)),
        ("2026-12-03 12:00:00+02:00", datetime(2026, 12, 3, 10, tzinfo=UTC)),
        ("2026-12-03T10:00:00.5-01:30", datetime(2026, 12, 3, 11, 30, 0, 500000, tzinfo=UTC)),
        # RFC 3339 allows any number of fraction digits; Python keeps microseconds.
        ("2026-12-03T10:00:00.1234567Z", datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=UTC)),
        (" 2026-12-03T10:00:00Z\n", datetime(2026, 12, 3, 10, tzinfo=UTC)),
    ],
)
def test_rfc3339_times_are_read_with_their_offset(text: str, instant: datetime) -> None:
    assert parse_rfc3339(text) == instant


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-12-03T10:00:00", "with its offset"),
        ("2026-12-03", "with its offset"),
        ("20261203T100000Z", "not an RFC 3339 time"),
        ("2026-W49-3T10:00:00Z", "not an RFC 3339 time"),
        ("2026-02-30T10:00:00Z", "not a valid time"),
        ("2026-12-03T24:00:00Z", "not a valid time"),
        ("2026-12-03T10:00:60Z", "not a valid time"),
        ("", "not an RFC 3339 time"),
    ],
)
def test_anything_else_is_refused_saying_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_rfc3339(text)


def test_times_are_written_in_utc_with_z_and_microseconds_only_when_there_are_any() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert format_rfc3339(datetime(2026, 12, 3, 12, tzinfo=plus_two)) == "2026-12-03T10:00:00Z"
    written = format_rfc3339(datetime(2026, 12, 3, 10, 0, 0, 250000, tzinfo=UTC))
    assert written == "2026-12-03T10:00:00.250000Z"
    assert parse_rfc3339(written) == datetime(2026, 12, 3, 10, 0, 0, 250000, tzinfo=UTC)


def test_the_readme_documents_every_column_of_every_kind_in_order() -> None:
    """The README's column table of each kind lists the kind's columns: name, type and meaning,
    in the order they are written."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    for name, kind in KINDS.items():
        section = readme.split(f"Columns of `--what {name}`", 1)[1].split("\n\n", 2)[1]
        rows = [
            [cell.strip().replace("`", "") for cell in line.strip("|").split("|")]
            for line in section.splitlines()[2:]
            if re.match(r"\| `", line)
        ]
        assert rows == [[c.name, c.type, c.meaning] for c in kind.columns], name
    assert KINDS["orders"].columns == ORDER_COLUMNS
