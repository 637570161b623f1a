"""Star transactions as getStarTransactions lists them, read once: every partner kind, kinds
newer than the code kept raw, malformed input never raising, and the keyset page tokens of
ListStarTransactions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portex_pay.domain.checkout import Charge
from portex_pay.domain.star_ledger import (
    Direction,
    LedgerEntry,
    Match,
    Role,
    StarAmount,
    StarTransaction,
    Unreadable,
    read_star_amount,
    read_star_transaction,
)

DATE = 1_780_000_000
USER = {"id": 42, "is_bot": False, "first_name": "Ann"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


def transaction(side: str = "source", **partner: Any) -> dict[str, Any]:
    return {"id": "stx-1", "amount": 5, "date": DATE, side: partner}


def read(raw: object) -> StarTransaction:
    found = read_star_transaction(raw)
    assert isinstance(found, StarTransaction), found
    return found


@given(json_values)
def test_reading_never_raises_on_any_json_value(value: object) -> None:
    assert isinstance(read_star_transaction(value), StarTransaction | Unreadable)


@given(st.dictionaries(st.sampled_from(["id", "amount", "date", "source", "receiver",
                                        "nanostar_amount"]), json_values))  # fmt: skip
def test_reading_never_raises_on_any_transaction_shaped_object(value: dict[str, Any]) -> None:
    assert isinstance(read_star_transaction(value), StarTransaction | Unreadable)


def test_an_invoice_payment_is_read_with_every_user_field() -> None:
    raw = transaction(
        type="user",
        transaction_type="invoice_payment",
        user=USER,
        invoice_payload="v1.7.5.sig",
        subscription_period=2592000,
        affiliate={"affiliate_user": {"id": 77}, "commission_per_mille": 150, "amount": 1},
    )
    raw["nanostar_amount"] = 5
    t = read(raw)
    assert (t.id, t.direction, t.amount, t.nanostar_amount) == ("stx-1", Direction.INCOMING, 5, 5)
    assert t.date == datetime.fromtimestamp(DATE, UTC)
    assert (t.partner_type, t.transaction_type, t.partner_id) == ("user", "invoice_payment", 42)
    assert (t.invoice_payload, t.subscription_period) == ("v1.7.5.sig", 2592000)
    assert (t.commission_per_mille, t.affiliate_user_id, t.affiliate_chat_id) == (150, 77, None)
    assert t.role() is Role.ORDER_PAYMENT
    assert t.raw == raw


def test_an_invoice_payment_stands_for_the_successful_payment_no_update_brought() -> None:
    t = read(transaction(type="user", transaction_type="invoice_payment", user=USER,
                         invoice_payload="p"))  # fmt: skip
    payment = t.as_payment()
    assert payment is not None
    assert (payment.update_id, payment.telegram_payment_charge_id) == (None, "stx-1")
    assert payment.charge == Charge(
        payer_id=42, currency="XTR", total_amount=5, invoice_payload="p"
    )


@pytest.mark.parametrize(
    "partner",
    [
        {"type": "user", "transaction_type": "invoice_payment", "invoice_payload": "p"},  # no user
        {"type": "user", "transaction_type": "invoice_payment", "user": USER},  # no payload
        {"type": "user", "transaction_type": "invoice_payment", "user": {"id": "42"},
         "invoice_payload": "p"},
    ],
)  # fmt: skip
def test_an_invoice_payment_missing_its_payer_or_payload_is_kept_but_pays_nothing(
    partner: dict[str, Any],
) -> None:
    t = read(transaction(**partner))
    assert t.role() is Role.ORDER_PAYMENT and t.as_payment() is None


def test_paid_media_gifts_and_business_transfers_are_kept_with_their_fields() -> None:
    media = read(
        transaction(
            type="user",
            transaction_type="paid_media_payment",
            user=USER,
            paid_media=[{"type": "preview"}],
            paid_media_payload="pm",
        )
    )
    gift = read(
        transaction(
            "receiver",
            type="user",
            transaction_type="gift_purchase",
            user=USER,
            gift={"id": "g-1", "star_count": 15},
        )
    )
    transfer = read(transaction(type="user", transaction_type="business_account_transfer",
                                user=USER))  # fmt: skip
    assert (media.paid_media_payload, media.role()) == ("pm", Role.OTHER)
    assert (gift.gift_id, gift.direction, gift.role()) == ("g-1", Direction.OUTGOING, Role.OTHER)
    assert transfer.role() is Role.OTHER


def test_a_refund_goes_out_to_the_user_under_the_payments_id() -> None:
    refund = read(transaction("receiver", type="user", transaction_type="invoice_payment",
                              user=USER, invoice_payload="p"))  # fmt: skip
    assert (refund.key, refund.role()) == (("stx-1", Direction.OUTGOING), Role.ORDER_REFUND)
    assert refund.as_payment() is None


def test_before_bot_api_9_a_user_partner_had_no_transaction_type() -> None:
    payment = read(transaction(type="user", user=USER, invoice_payload="p"))
    refund = read(transaction("receiver", type="user", user=USER))
    assert (payment.role(), refund.role()) == (Role.ORDER_PAYMENT, Role.ORDER_REFUND)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"type": "pending"}, ("pending", None, None)),
        (
            {"type": "succeeded", "date": DATE + 60, "url": "https://fragment.com/tx/1"},
            ("succeeded", datetime.fromtimestamp(DATE + 60, UTC), "https://fragment.com/tx/1"),
        ),
        ({"type": "failed"}, ("failed", None, None)),
        (None, (None, None, None)),
    ],
)
def test_a_withdrawal_is_read_with_its_state(state: Any, expected: tuple[Any, ...]) -> None:
    t = read(transaction("receiver", type="fragment", withdrawal_state=state))
    assert (t.withdrawal_state, t.withdrawal_date, t.withdrawal_url) == expected
    assert (t.partner_type, t.role()) == ("fragment", Role.OTHER)


def test_the_other_partner_kinds_are_read() -> None:
    sponsor = {"id": 555, "is_bot": True, "first_name": "Sponsor"}
    affiliate = read(
        transaction(type="affiliate_program", sponsor_user=sponsor, commission_per_mille=200)
    )
    chat = read(transaction("receiver", type="chat", chat={"id": -100123}, gift={"id": "g-2"}))
    api = read(transaction("receiver", type="telegram_api", request_count=1000))
    ads = read(transaction("receiver", type="telegram_ads"))
    other = read(transaction(type="other"))
    assert (affiliate.partner_id, affiliate.commission_per_mille) == (555, 200)
    assert (chat.partner_id, chat.gift_id) == (-100123, "g-2")
    assert api.request_count == 1000
    assert [t.partner_type for t in (ads, other)] == ["telegram_ads", "other"]
    assert {t.role() for t in (affiliate, chat, api, ads, other)} == {Role.OTHER}


def test_a_partner_kind_newer_than_this_code_is_kept_raw() -> None:
    raw = transaction(type="stars_from_the_future", planet={"name": "Mars"})
    t = read(raw)
    assert (t.partner_type, t.partner_id, t.transaction_type, t.raw) == (
        "stars_from_the_future", None, None, raw,
    )  # fmt: skip


def test_text_postgresql_cannot_hold_is_kept_replaced_in_raw_and_left_out_of_fields() -> None:
    t = read(transaction(type="user", transaction_type="invoice_payment", user=USER,
                         invoice_payload="bad\x00payload"))  # fmt: skip
    assert t.invoice_payload is None
    assert t.raw["source"]["invoice_payload"] == "bad\ufffdpayload"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ([], "not a JSON object"),
        ({"amount": 1, "date": DATE, "source": {"type": "other"}}, "'id'"),
        ({"id": "a\x00", "amount": 1, "date": DATE, "source": {"type": "other"}}, "'id'"),
        ({"id": "a", "amount": 1, "date": DATE}, "not exactly one"),
        ({"id": "a", "amount": 1, "date": DATE, "source": {}, "receiver": {}}, "not exactly one"),
        ({"id": "a", "amount": "5", "date": DATE, "source": {"type": "other"}}, "'amount'"),
        ({"id": "a", "amount": True, "date": DATE, "source": {"type": "other"}}, "'amount'"),
        ({"id": "a", "amount": 1, "date": 2**70, "source": {"type": "other"}}, "'amount'"),
        ({"id": "a", "amount": 1, "nanostar_amount": 10**9, "date": DATE,
          "source": {"type": "other"}}, "'amount'"),
    ],
)  # fmt: skip
def test_a_transaction_without_a_usable_key_or_amount_is_unreadable(raw: Any, reason: str) -> None:
    found = read_star_transaction(raw)
    assert isinstance(found, Unreadable) and reason in found.reason


def test_an_entry_survives_its_event_data() -> None:
    t = read(transaction("receiver", type="fragment", withdrawal_state={
        "type": "succeeded", "date": DATE + 5, "url": "https://fragment.com/tx/2"}))  # fmt: skip
    entry = LedgerEntry(t, Match.UNMATCHED, 7)
    data = entry.event_data()
    assert (
        data["star_transaction"]["date"] == DATE
        and data["star_transaction"]["match"] == "unmatched"
    )
    assert LedgerEntry.from_event_data(data) == entry
    assert LedgerEntry.from_event_data({"order": {}}) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"amount": 7}, StarAmount(7, 0)),
        ({"amount": 7, "nanostar_amount": 5}, StarAmount(7, 5)),
        ({"amount": 0, "nanostar_amount": -5}, StarAmount(0, -5)),
        ({"amount": "7"}, None),
        ({"amount": 7, "nanostar_amount": 10**9}, None),
        ([], None),
    ],
)
def test_get_my_star_balance_is_read_as_a_star_amount(
    raw: Any, expected: StarAmount | None
) -> None:
    assert read_star_amount(raw) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_transaction_jsonb_could_not_hold_is_unreadable(bad: float) -> None:
    found = read_star_transaction(transaction(type="other", weird=bad))
    assert isinstance(found, Unreadable) and "strict JSON" in found.reason


def test_an_event_of_another_shape_carries_no_entry() -> None:
    for values in ({}, {"direction": "sideways", "date": 1, "match": "none"},
                   {"direction": "incoming", "date": 10**20, "match": "none"}):  # fmt: skip
        assert LedgerEntry.from_event_data({"star_transaction": values}) is None
