"""Pay's validation: each rule on its own field, all violations reported at once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.pay import PayCommand, require_valid_pay, validate_pay

VALID = PayCommand(tg_use_id=42, amount=5, label="item", title="Book", description="Magic book")


def violations(command: PayCommand, request_id: str = "", max_amount: int = 10_000) -> list[str]:
    return [v.field for v in validate_pay(command, request_id, max_amount=max_amount)]


def test_a_complete_valid_request_has_no_violations() -> None:
    full = dataclasses.replace(
        VALID,
        payload="p" * 4096,
        photo_url="https://example.com/p.png",
        photo_size=0,
        photo_width=640,
        photo_height=480,
        callback_url="http://callbacks.internal/portex",
    )
    assert violations(full, request_id="0f8fad5b-d9cb-469f-a165-70867728950e") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tg_use_id", 0),
        ("tg_use_id", -7),
        ("amount", 0),
        ("amount", -1),
        ("amount", 10_001),
        ("label", ""),
        ("label", "   "),
        ("label", "l" * 65),
        ("title", ""),
        ("title", "t" * 33),
        ("title", "é" * 33),
        ("description", ""),
        ("description", "d" * 256),
        ("payload", "p" * 4097),
        ("payload", "€" * 1366),  # 4098 bytes in UTF-8, 1366 characters
        ("photo_url", "/relative.png"),
        ("photo_url", "ftp://example.com/p.png"),
        ("photo_url", "https://"),
        ("photo_url", "https://example.com/" + "a" * 2048),
        ("callback_url", "not a url"),
        ("photo_size", -1),
        ("photo_width", -1),
        ("photo_height", -1),
    ],
)
def test_each_bad_field_is_reported_alone(field: str, value: Any) -> None:
    assert violations(dataclasses.replace(VALID, **{field: value})) == [field]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", 10_000),
        ("amount", 1),
        ("title", "t" * 32),
        ("title", "é" * 32),  # Telegram counts characters, not bytes
        ("description", "д" * 255),
        ("label", "l" * 64),
        ("payload", "€" * 1365),  # 4095 bytes
        ("payload", ""),
    ],
)
def test_values_on_the_boundary_are_accepted(field: str, value: Any) -> None:
    assert violations(dataclasses.replace(VALID, **{field: value})) == []


def test_the_maximum_amount_is_configurable() -> None:
    assert violations(dataclasses.replace(VALID, amount=51), max_amount=50) == ["amount"]
    assert violations(dataclasses.replace(VALID, amount=50), max_amount=50) == []


@pytest.mark.parametrize("request_id", ["has space", "x" * 129, "tab\t", "ключ"])
def test_a_malformed_request_id_is_refused(request_id: str) -> None:
    assert violations(VALID, request_id=request_id) == ["request_id"]


def test_every_violation_is_reported_at_once() -> None:
    bad = PayCommand(tg_use_id=0, amount=0, label="", title="", description="", photo_size=-1)
    with pytest.raises(InvalidArgument) as raised:
        require_valid_pay(bad, "bad id", max_amount=10)
    assert [v.field for v in raised.value.violations] == [
        "tg_use_id",
        "amount",
        "label",
        "title",
        "description",
        "photo_size",
        "request_id",
    ]
    assert all(isinstance(v, FieldViolation) and v.description for v in raised.value.violations)


def test_the_fingerprint_changes_with_any_field_and_only_then() -> None:
    assert VALID.fingerprint() == dataclasses.replace(VALID).fingerprint()
    changes: list[tuple[str, Any]] = [
        ("amount", 6),
        ("title", "Other"),
        ("payload", "x"),
        ("photo_size", 1),
    ]
    for field, value in changes:
        assert VALID.fingerprint() != dataclasses.replace(VALID, **{field: value}).fingerprint()


# --- Control characters (issue 7, defect 3): the rule of domain/text.py, per kind of field ------

# One representative per class of character, and whether each kind of field takes it.
CHARACTER_CLASSES: list[tuple[str, str, bool, bool]] = [
    # (name, character, accepted in free text, accepted in a single-line field)
    ("NUL", "\x00", False, False),
    ("C0 U+0001", "\x01", False, False),
    ("C0 U+0008 backspace", "\x08", False, False),
    ("TAB", "\t", True, False),
    ("LF", "\n", True, False),
    ("VT", "\x0b", False, False),
    ("FF", "\x0c", False, False),
    ("CR", "\r", True, False),
    ("C0 U+001B escape", "\x1b", False, False),
    ("C0 U+001F", "\x1f", False, False),
    ("DEL", "\x7f", False, False),
    ("C1 U+0080", "\x80", False, False),
    ("C1 U+0085 next line", "\x85", False, False),
    ("C1 U+009B CSI", "\x9b", False, False),
    ("C1 U+009F", "\x9f", False, False),
    ("lone high surrogate", "\ud800", False, False),
    ("lone low surrogate", "\udfff", False, False),
    ("U+2028 line separator", "\u2028", True, False),
    ("U+2029 paragraph separator", "\u2029", True, False),
    ("space", " ", True, True),
    ("U+00A0 no-break space", "\xa0", True, True),
    ("U+200D zero-width joiner", "\u200d", True, True),
    ("U+200F right-to-left mark", "\u200f", True, True),
    ("U+FEFF", "\ufeff", True, True),
    ("emoji", "\U0001f600", True, True),
]

# Each text field of Pay, with a valid value to put the character in the middle of.
FREE_TEXT_FIELDS = {"description": "Magic book", "payload": "app data"}
SINGLE_LINE_FIELDS = {
    "label": "item",
    "title": "Book",
    "photo_url": "https://example.com/p.png",
    "callback_url": "https://example.com/cb",
}


def _with(field: str, value: str) -> tuple[PayCommand, str]:
    """VALID with `value` in `field` (request_id is an argument of its own)."""
    if field == "request_id":
        return VALID, value
    changes: dict[str, Any] = {field: value}
    return dataclasses.replace(VALID, **changes), ""


def _table() -> list[Any]:
    cases = []
    for name, char, in_free_text, in_single_line in CHARACTER_CLASSES:
        for field, valid in {**FREE_TEXT_FIELDS, **SINGLE_LINE_FIELDS}.items():
            accepted = in_free_text if field in FREE_TEXT_FIELDS else in_single_line
            index = len(valid) - 2 if field.endswith("_url") else 2  # a URL's: in its path
            value = valid[:index] + char + valid[index:]
            cases.append(pytest.param(field, value, index, accepted, id=f"{field}-{name}"))
    return cases


@pytest.mark.parametrize(("field", "value", "index", "accepted"), _table())
def test_control_characters_are_refused_by_the_rule_of_their_field(
    field: str, value: str, index: int, accepted: bool
) -> None:
    command, request_id = _with(field, value)
    found = validate_pay(command, request_id, max_amount=10_000)
    if accepted:
        assert found == []
        return
    assert [v.field for v in found] == [field]
    description = found[0].description
    assert f"U+{ord(value[index]):04X} at index {index}" in description
    assert value not in description  # the value itself is never echoed


@pytest.mark.parametrize(
    "char", ["\x00", "\t", "\n", "\r", "\x7f", "\x85", "\u2028", "\ud800", " ", "é"]
)
def test_request_id_takes_printable_ascii_only(char: str) -> None:
    assert violations(VALID, request_id=f"ab{char}cd") == ["request_id"]


def test_a_trailing_newline_does_not_slip_past_the_request_id_rule() -> None:
    # `$` matches before a final "\n": the old pattern accepted "abc\n".
    assert violations(VALID, request_id="abc\n") == ["request_id"]


def test_a_control_character_is_reported_instead_of_the_fields_length() -> None:
    command = dataclasses.replace(VALID, title="t" * 40 + "\x00", payload="\x00" + "p" * 5000)
    found = {v.field: v.description for v in validate_pay(command, "", max_amount=10)}
    assert set(found) == {"title", "payload"}
    assert "U+0000" in found["title"] and "U+0000" in found["payload"]


def test_free_text_takes_line_breaks_and_tabs_single_line_fields_do_not() -> None:
    text = "Line one\r\n\tLine two\n"
    assert violations(dataclasses.replace(VALID, description=text, payload=text)) == []
    assert violations(dataclasses.replace(VALID, label="a\tb", title="a\nb")) == ["label", "title"]


@pytest.mark.parametrize(
    "url", ["http://[", "https://[::1", "http://[not-ipv6]/", "https://exa\uff03mple.com/"]
)
def test_urls_that_urlsplit_refuses_are_violations_not_errors(url: str) -> None:
    for field in ("photo_url", "callback_url"):
        changes: dict[str, Any] = {field: url}
        assert violations(dataclasses.replace(VALID, **changes)) == [field]


def test_a_lone_surrogate_in_the_payload_is_a_violation_not_an_error() -> None:
    command = dataclasses.replace(VALID, payload="\udc80" * 3000)
    assert violations(command) == ["payload"]


_ANY_TEXT = st.text(alphabet=st.characters(codec=None), max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    label=_ANY_TEXT,
    title=_ANY_TEXT,
    description=_ANY_TEXT,
    payload=st.none() | _ANY_TEXT,
    photo_url=st.none() | _ANY_TEXT | _ANY_TEXT.map(lambda t: "https://" + t),
    callback_url=st.none() | _ANY_TEXT | _ANY_TEXT.map(lambda t: "http://[" + t),
    request_id=_ANY_TEXT,
)
def test_validate_pay_never_raises_on_any_text(
    label: str,
    title: str,
    description: str,
    payload: str | None,
    photo_url: str | None,
    callback_url: str | None,
    request_id: str,
) -> None:
    command = PayCommand(
        tg_use_id=1,
        amount=1,
        label=label,
        title=title,
        description=description,
        payload=payload,
        photo_url=photo_url,
        callback_url=callback_url,
    )
    found = validate_pay(command, request_id, max_amount=10)
    fields = [v.field for v in found]
    assert len(fields) == len(set(fields))  # one violation per field
    # Whatever passes can be stored: no NUL, no lone surrogate, valid UTF-8 throughout.
    for field, value in {
        "label": label,
        "title": title,
        "description": description,
        "payload": payload,
        "photo_url": photo_url,
        "callback_url": callback_url,
        "request_id": request_id,
    }.items():
        if value and field not in fields:
            assert "\x00" not in value
            value.encode("utf-8")
