"""Refunds: what was asked, where it stands, and the work the refund worker claims.

A refund is asked for once per charge (the charge id is its key): by a caller (RequestRefund,
reason `requested`) or by portex-pay itself for a charge it cannot accept (auto-refund). The
worker sends it to Telegram (refundStarPayment) until it succeeds or its attempts run out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID


class RefundState(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Refund:
    telegram_payment_charge_id: str
    tg_payment_id: int | None
    amount: int
    state: RefundState
    reason: str
    attempts: int
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class DueRefund:
    telegram_payment_charge_id: str
    application_id: UUID
    tg_payment_id: int | None
    tg_use_id: int
    attempts: int
    bot_token: str | None
