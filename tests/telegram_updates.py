"""Telegram updates as the Bot API sends them, built for tests (one builder per kind)."""

from __future__ import annotations

from typing import Any


def successful_payment(
    *,
    payer: int,
    payload: str,
    charge_id: str,
    total_amount: object = 5,
    update_id: int | None = None,
) -> dict[str, Any]:
    """A successful_payment message update; without `update_id` when the caller (the fake
    Bot API's delivery) numbers it. `total_amount` may be of a wrong type on purpose."""
    update: dict[str, Any] = {
        "message": {
            "message_id": update_id or 1,
            "date": 0,
            "chat": {"id": payer, "type": "private"},
            "from": {"id": payer, "is_bot": False, "first_name": "Payer"},
            "successful_payment": {
                "currency": "XTR",
                "total_amount": total_amount,
                "invoice_payload": payload,
                "telegram_payment_charge_id": charge_id,
                "provider_payment_charge_id": "",
            },
        }
    }
    if update_id is not None:
        update["update_id"] = update_id
    return update


def pre_checkout_query(
    *, update_id: int, payer: int, payload: str, total_amount: int
) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "pre_checkout_query": {
            "id": f"q{update_id}",
            "from": {"id": payer, "is_bot": False, "first_name": "Payer"},
            "currency": "XTR",
            "total_amount": total_amount,
            "invoice_payload": payload,
        },
    }
