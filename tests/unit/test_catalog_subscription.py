"""A catalog item that sells a subscription: Pay's rules (the only period Telegram allows, and
Telegram's price bound of 10000 Stars whatever the server's PORTEX_MAX_AMOUNT), and the edge's
order for it carries the period; a browser's request never makes one (open pricing included)."""

from __future__ import annotations

import pytest

from portex_pay.domain.catalog import CatalogItem, PricingMode, priced, validate_item
from portex_pay.domain.pay import PayCommand

MONTH = 2592000
BROWSER = PayCommand(tg_use_id=7, amount=0, label="vip", title="t", description="d")


def fields_of(item: CatalogItem, max_amount: int) -> list[str]:
    return [violation.field for violation in validate_item(item, max_amount=max_amount)]


@pytest.mark.parametrize(
    ("period", "amount", "max_amount", "bad"),
    [
        (MONTH, 10_000, 100_000, []),
        (MONTH, 10_001, 100_000, ["amount"]),  # Telegram's bound, not the server's
        (None, 10_001, 100_000, []),
        (MONTH, 500, 100, []),  # as Pay: a subscription's bound is Telegram's
        (86_400, 5, 100_000, ["subscription_period"]),
        (0, 5, 100_000, ["subscription_period"]),
        (-MONTH, 0, 100_000, ["subscription_period", "amount"]),
    ],
)
def test_an_items_subscription_follows_pays_rules(
    period: int | None, amount: int, max_amount: int, bad: list[str]
) -> None:
    item = CatalogItem(key="vip", amount=amount, subscription_period=period)
    assert fields_of(item, max_amount) == bad


def test_the_period_message_is_pays() -> None:
    (violation,) = validate_item(
        CatalogItem(key="vip", amount=5, subscription_period=1), max_amount=10
    )
    assert violation.description == "must be 2592000 (30 days), the only period Telegram allows"


def test_the_edges_order_for_a_subscription_item_is_a_subscription() -> None:
    item = CatalogItem(key="vip", amount=50, subscription_period=MONTH, metadata={"tier": "vip"})
    command = priced(BROWSER, item, PricingMode.CATALOG)
    assert (command.amount, command.subscription_period) == (50, MONTH)
    assert dict(command.metadata) == {"tier": "vip"}
    one_off = priced(BROWSER, CatalogItem(key="vip", amount=50), PricingMode.CATALOG)
    assert one_off.subscription_period is None
    assert priced(BROWSER, item, PricingMode.OPEN).subscription_period is None
