"""Points in time as text: RFC 3339 in, RFC 3339 in UTC out.

What people and files outside the service write (`portex-pay admin export --from`, and any other
place that takes a time as text) is read by one rule: RFC 3339 (`2026-12-03T10:00:00Z`,
`2026-12-03T12:00:00.5+02:00`), always with its UTC offset, since a time without one means
different instants on different machines. What the service writes for them is RFC 3339 in UTC
with a `Z` (microseconds when there are any), as protobuf's JSON mapping writes a Timestamp, so
that an export and a grpcurl answer show one instant alike.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 section 5.6 (date-time): the `T` may be written `t` or a space (its note), the
# fraction has any number of digits, the offset is `Z` or `±hh:mm`.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(text: str) -> datetime:
    """The instant `text` names, timezone-aware; ValueError saying what is wrong otherwise."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"not an RFC 3339 time with its offset (e.g. 2026-12-03T10:00:00Z): {text!r}"
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    # Python keeps microseconds: a finer fraction is cut to them (RFC 3339 allows any digits).
    micros = (fraction or ".0")[1:7].ljust(6, "0")
    normal = f"{year}-{month}-{day}T{hour}:{minute}:{second}.{micros}"
    normal += "+00:00" if offset in ("Z", "z") else offset
    try:
        return datetime.fromisoformat(normal)
    except ValueError as error:  # 2026-02-30, 25:00, a leap second (Python has none)
        raise ValueError(f"not a valid time: {text!r} ({error})") from None


def format_rfc3339(moment: datetime) -> str:
    """`moment` in UTC as RFC 3339: `2026-12-03T10:00:00Z`, `...T10:00:00.250000Z`."""
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"
