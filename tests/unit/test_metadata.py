"""Metadata (domain/metadata.py): Stripe's limits with one field violation per bad entry, its place
in Pay's validation and idempotency fingerprint, and the catalog item's metadata on edge orders."""

from __future__ import annotations

from dataclasses import replace

import pytest

from portex_pay.domain.catalog import CatalogItem, PricingMode, priced, validate_item
from portex_pay.domain.errors import FieldViolation
from portex_pay.domain.metadata import metadata_violations
from portex_pay.domain.pay import PayCommand, text_violations, validate_pay

COMMAND = PayCommand(
    tg_use_id=42,
    amount=5,
    label="item",
    title="Book",
    description="Magic book",
    payload="p",
    callback_url="https://x.test/cb",
)


def test_the_limits_themselves_are_allowed() -> None:
    metadata = {f"k{n:02d}" + "x" * 37: "v" * 500 for n in range(50)}
    assert all(len(key) == 40 for key in metadata)
    assert metadata_violations(metadata) == []
    assert metadata_violations({"empty value": "", "ключ": "значение ✨"}) == []


def test_more_than_50_keys_is_one_violation_on_the_map() -> None:
    metadata = {f"k{n}": "\x00" for n in range(51)}
    assert metadata_violations(metadata) == [
        FieldViolation("metadata", "must have at most 50 keys (found 51)")
    ]


@pytest.mark.parametrize(
    ("key", "value", "field", "description"),
    [
        ("", "v", "metadata[]", "the key must be 1-40 characters"),
        ("k" * 41, "v", "metadata[" + "k" * 40 + "…]", "the key must be 1-40 characters"),
        ("a\nb", "v", "metadata[a\\u000ab]", "the key must be a single line without control "
         "characters (found U+000A at index 1)"),
        ("\ud800", "v", "metadata[\\ud800]", "the key must be valid Unicode text (found a lone "
         "surrogate U+D800 at index 0)"),
        ("sku", "v" * 501, "metadata[sku]", "the value must be at most 500 characters"),
        ("sku", "a\tb", "metadata[sku]", "the value must be a single line without control "
         "characters (found U+0009 at index 1)"),
        ("sku", "\x00", "metadata[sku]", "the value must be a single line without control "
         "characters (found U+0000 at index 0)"),
    ],
)  # fmt: skip
def test_each_bad_entry_is_a_violation_named_by_its_key(
    key: str, value: str, field: str, description: str
) -> None:
    assert metadata_violations({key: value, "good": "fine"}) == [FieldViolation(field, description)]


def test_every_bad_entry_is_reported_and_under_the_given_field() -> None:
    bad = {"a": "x" * 501, "b": "ok", "c": "\x7f"}
    assert [v.field for v in metadata_violations(bad, "item.metadata")] == [
        "item.metadata[a]",
        "item.metadata[c]",
    ]


def test_pay_reports_metadata_beside_its_other_fields() -> None:
    command = replace(COMMAND, amount=0, metadata={"sku": "v" * 501})
    assert [v.field for v in validate_pay(command, "", max_amount=100)] == [
        "amount",
        "metadata[sku]",
    ]
    # Refused before any lookup, as the other text fields are (jsonb cannot hold U+0000).
    assert [v.field for v in text_violations(replace(COMMAND, metadata={"k": "\x00"}))] == [
        "metadata[k]"
    ]


def test_a_fingerprint_without_metadata_is_the_one_stored_before_metadata_existed() -> None:
    """Pinned: the digest an idempotency key stored before this change holds for this command,
    so a retry of it is still a retry (and not IDEMPOTENCY_KEY_REUSED)."""
    assert COMMAND.fingerprint().hex() == (
        "bde101a32cea9a78efc6891e35448cee09eadfb5c106e31bd42394032daa9fa0"
    )
    assert replace(COMMAND, metadata={}).fingerprint() == COMMAND.fingerprint()


def test_metadata_is_part_of_the_fingerprint_in_any_key_order() -> None:
    with_metadata = replace(COMMAND, metadata={"a": "1", "b": "2"})
    assert with_metadata.fingerprint() != COMMAND.fingerprint()
    assert (
        with_metadata.fingerprint() == replace(COMMAND, metadata={"b": "2", "a": "1"}).fingerprint()
    )
    assert (
        with_metadata.fingerprint() != replace(COMMAND, metadata={"a": "1", "b": "3"}).fingerprint()
    )


def test_a_catalog_item_is_checked_by_the_same_rules() -> None:
    item = CatalogItem(key="gems", amount=5, metadata={"sku": "\x00", "ok": "y"})
    assert validate_item(item, max_amount=100) == [
        FieldViolation(
            "metadata[sku]",
            "the value must be a single line without control characters (found U+0000 at index 0)",
        )
    ]


def test_an_edge_order_takes_the_items_metadata_in_catalog_pricing_only() -> None:
    item = CatalogItem(key="item", amount=5, metadata={"sku": "GEM-100"})
    browser = replace(COMMAND, amount=0)
    assert priced(browser, item, PricingMode.CATALOG).metadata == {"sku": "GEM-100"}
    assert priced(browser, None, PricingMode.OPEN).metadata == {}


def test_ten_bad_entries_are_named_and_the_rest_counted() -> None:
    """So that an error with the most bad entries still fits a gRPC status trailer."""
    bad = {f"k{n:02d}": "v" * 501 for n in range(12)}
    found = metadata_violations({"good": "v", **bad})
    assert [v.field for v in found] == [f"metadata[k{n:02d}]" for n in range(10)] + ["metadata"]
    assert found[-1].description == "2 more entries break these rules (not named here)"


def test_a_key_of_refused_characters_is_shown_escaped_and_cut_to_40() -> None:
    (found,) = metadata_violations({"\x01" * 10: "v"})
    assert found.field == "metadata[" + ("\\u0001" * 7)[:40] + "…]"
