"""An application's key-value data on an order or a catalog item (Pay's and CatalogItem's
`metadata`): Stripe's limits, at most 50 keys, a key 1-40 characters, a value at most 500
characters, and the single-line character rules of domain/text.py for keys and values (an empty
value is allowed, as Stripe allows it).

Every bad entry gets its own field violation, named `<field>[<key>]` (e.g. `metadata[colour]`,
`item.metadata[colour]` in SetCatalogItem), and a map with too many keys one violation on
`<field>` alone (its entries are then not judged one by one: the caller must cut the map first).
An error must fit in gRPC's status trailer (8 KiB before clients start refusing it), so at most
10 bad entries are named, in the order received, and one more violation on `<field>` counts the
rest. A key that cannot be shown as it is (too long, or with a refused character) is shown as its
first 40 characters with refused characters as `\\uXXXX` escapes, cut to 40 and marked `…`.
"""

from __future__ import annotations

from collections.abc import Mapping

from portex_pay.domain.errors import FieldViolation
from portex_pay.domain.text import single_line_problem

MAX_KEYS = 50
KEY_MAX_CHARS = 40
VALUE_MAX_CHARS = 500
MAX_NAMED_ENTRIES = 10  # bad entries named one by one; the rest are counted


def _shown_key(key: str) -> str:
    """The key as a field path shows it: as it is when it is a valid key, else its first 40
    characters with every refused character escaped (and an ellipsis when cut)."""
    if 0 < len(key) <= KEY_MAX_CHARS and single_line_problem(key) is None:
        return key
    escaped = "".join(
        f"\\u{ord(char):04x}" if single_line_problem(char) is not None else char
        for char in key[:KEY_MAX_CHARS]
    )
    if len(key) > KEY_MAX_CHARS or len(escaped) > KEY_MAX_CHARS:
        return escaped[:KEY_MAX_CHARS] + "…"
    return escaped


def _entry_problem(key: str, value: str) -> str | None:
    """Why one entry is refused (a field violation's description), or None."""
    problem = single_line_problem(key)
    if problem is not None:
        return f"the key {problem}"
    if not 0 < len(key) <= KEY_MAX_CHARS:
        return f"the key must be 1-{KEY_MAX_CHARS} characters"
    problem = single_line_problem(value)
    if problem is not None:
        return f"the value {problem}"
    if len(value) > VALUE_MAX_CHARS:
        return f"the value must be at most {VALUE_MAX_CHARS} characters"
    return None


def metadata_violations(
    metadata: Mapping[str, str], field: str = "metadata"
) -> list[FieldViolation]:
    """Every rule `metadata` breaks: one violation per bad entry, or one for too many keys.
    Never raises. Checked before anything is stored or looked up: PostgreSQL's jsonb cannot hold
    U+0000 or a lone surrogate."""
    if len(metadata) > MAX_KEYS:
        return [FieldViolation(field, f"must have at most {MAX_KEYS} keys (found {len(metadata)})")]
    bad: list[FieldViolation] = []
    unnamed = 0
    for key, value in metadata.items():
        problem = _entry_problem(key, value)
        if problem is None:
            continue
        if len(bad) == MAX_NAMED_ENTRIES:
            unnamed += 1
        else:
            bad.append(FieldViolation(f"{field}[{_shown_key(key)}]", problem))
    if unnamed:
        bad.append(
            FieldViolation(field, f"{unnamed} more entries break these rules (not named here)")
        )
    return bad
