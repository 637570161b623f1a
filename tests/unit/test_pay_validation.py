"""Pay's validation: each rule on its own field, all violations reported at once."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from portex_pay.domain.errors import FieldViolation, InvalidArgument
from portex_pay.domain.payments import PayCommand, require_valid_pay, validate_pay

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
