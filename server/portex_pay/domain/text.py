"""Which characters a text field of a request may carry.

Two kinds of field:

- free text (`description`, `payload`): any Unicode text except control characters; TAB, LF and
  CR are allowed (line breaks and indentation are text);
- single-line fields (labels, titles, names, identifiers, URLs, enumerated values, filters): no
  control character at all, TAB, LF and CR included, and no U+2028 / U+2029 (line and paragraph
  separators, line breaks for JavaScript and for Python's `splitlines`).

Refused in both: the C0 controls U+0000-U+001F (but TAB, LF, CR in free text), DEL U+007F, the C1
controls U+0080-U+009F (Unicode category Cc: they have no meaning in text, U+0000 cannot be
stored in PostgreSQL at all, and they corrupt terminals, logs and line-based formats), and lone
surrogates U+D800-U+DFFF (not characters: they cannot be encoded as UTF-8; protobuf never decodes
them, but other edges can). Format characters (category Cf: zero-width joiners for emoji and
scripts, bidirectional marks for right-to-left text) are allowed: they are part of ordinary text.

Descriptions name the first refused character by code point and 0-based index, never echoing the
value.

Text we do not refuse but must keep (a verified Telegram user's names: Telegram, not the browser,
chose them) goes through `storable_text`: NUL and lone surrogates, which PostgreSQL cannot hold and
protobuf cannot carry, become U+FFFD; everything else is kept as it is.
"""

from __future__ import annotations

import re

# Free text: C0 but TAB (09), LF (0A), CR (0D); DEL; C1; lone surrogates.
_FREE_TEXT_REFUSED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Single line: every C0, DEL, C1, U+2028, U+2029, lone surrogates.
_SINGLE_LINE_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# What PostgreSQL's text cannot hold (NUL) and UTF-8 cannot encode (lone surrogates).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT_CHARACTER = "\ufffd"


def _describe(value: str, index: int, *, single_line: bool) -> str:
    point = ord(value[index])
    where = f"U+{point:04X} at index {index}"
    if 0xD800 <= point <= 0xDFFF:
        return f"must be valid Unicode text (found a lone surrogate {where})"
    if single_line:
        return f"must be a single line without control characters (found {where})"
    return f"must not contain control characters other than TAB, LF and CR (found {where})"


def free_text_problem(value: str) -> str | None:
    """Why `value` cannot be a free-text field (a field violation's description), or None."""
    found = _FREE_TEXT_REFUSED.search(value)
    return None if found is None else _describe(value, found.start(), single_line=False)


def single_line_problem(value: str) -> str | None:
    """Why `value` cannot be a single-line field (a field violation's description), or None."""
    found = _SINGLE_LINE_REFUSED.search(value)
    return None if found is None else _describe(value, found.start(), single_line=True)


def is_storable(value: str) -> bool:
    """Whether PostgreSQL can hold `value` as text as it is (no NUL, no lone surrogate)."""
    return _UNSTORABLE.search(value) is None


def storable_text(value: str) -> str:
    """`value` with NUL and every lone surrogate replaced by U+FFFD, the rest unchanged."""
    return _UNSTORABLE.sub(REPLACEMENT_CHARACTER, value)
