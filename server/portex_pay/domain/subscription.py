"""Telegram Stars subscriptions: what a subscription order's charges and Telegram's state
updates mean for it.

Pure rules over the order as stored. Telegram's rules (Bot API 8.0 and 10.2; docs/telegram-stars):
an invoice link with `subscription_period` (2592000 seconds, the only value today; at most 10000
Stars) is paid once by the user and then renewed by Telegram every period, each renewal a
`successful_payment` with `is_recurring` and the period's end (`subscription_expiration_date`),
carrying the first invoice's payload. `editUserStarSubscription` cancels or re-enables the
renewals of the subscription its first charge names; the `subscription` update reports the user's
cancellation, re-activation or a failed renewal payment.

Decisions (the proto documents them): a renewal that arrives for a CANCELLED, LAPSED or EXPIRED
subscription is recorded and makes it ACTIVE again (Telegram charged the user, which it does only
for a subscription it renews; refunding it would punish a user who re-enabled it in Telegram);
refunding one period's charge changes neither the order nor the subscription (CancelSubscription
stops renewals). ResumeSubscription does not make a CANCELLED subscription ACTIVE: Telegram's
is_canceled=false only lets the user re-enable it (edit_target); Telegram's `active` update or a
renewal does.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from portex_pay.domain.events import EventType

# createInvoiceLink's subscription_period: Telegram accepts only 30 days today.
SUBSCRIPTION_PERIODS = frozenset({2592000})
# The highest price of a subscription, whatever PORTEX_MAX_AMOUNT allows one-off orders.
SUBSCRIPTION_MAX_AMOUNT = 10000
PERIOD_PROBLEM = "must be 2592000 (30 days), the only period Telegram allows"
# How long after its period's end a subscription waits for the renewal before it expires:
# Telegram charges at the period's end, and its update may take a while to reach us.
GRACE = timedelta(hours=1)


class SubscriptionState(enum.StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"  # at period end: paid up to current_period_end, not renewed
    LAPSED = "lapsed"  # a renewal payment failed; a later renewal may still recover it
    EXPIRED = "expired"  # past its period's end (and the grace) with no renewal


# The `subscription` update's states (BotSubscriptionUpdated.state) and what each makes ours.
TELEGRAM_STATES: dict[str, SubscriptionState] = {
    "canceled": SubscriptionState.CANCELLED,
    "active": SubscriptionState.ACTIVE,
    "failed": SubscriptionState.LAPSED,
}

# The event announcing each state a subscription is brought to by a change of mind (ours, the
# user's or a failed payment); renewals and the start have their own.
STATE_EVENTS: dict[SubscriptionState, EventType] = {
    SubscriptionState.CANCELLED: EventType.SUBSCRIPTION_CANCELLED,
    SubscriptionState.ACTIVE: EventType.SUBSCRIPTION_REACTIVATED,
    SubscriptionState.LAPSED: EventType.SUBSCRIPTION_PAYMENT_FAILED,
    SubscriptionState.EXPIRED: EventType.SUBSCRIPTION_EXPIRED,
}

# Where a subscription still counts on a renewal (the lapse sweep looks at these).
RENEWING = frozenset(
    {SubscriptionState.ACTIVE, SubscriptionState.CANCELLED, SubscriptionState.LAPSED}
)


@dataclass(frozen=True, slots=True)
class Period:
    """One paid period: [start, end)."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class SubscriptionCharge:
    """One period's charge of a subscription, as QueryOrder shows it."""

    telegram_payment_charge_id: str
    amount: int
    period: Period | None  # None when Telegram gave the charge no subscription_expiration_date
    paid_at: datetime
    refunded_at: datetime | None


def period_problem(subscription_period: int | None) -> str | None:
    """Why a Pay's or a catalog item's `subscription_period` is refused, or None (unset: a
    one-off order)."""
    if subscription_period is None or subscription_period in SUBSCRIPTION_PERIODS:
        return None
    return PERIOD_PROBLEM


def max_amount_for(subscription_period: int | None, max_amount: int) -> int:
    """The highest price of an order (PORTEX_MAX_AMOUNT `max_amount`), or of a subscription:
    Telegram's bound, whatever one-off orders may cost."""
    return max_amount if subscription_period is None else SUBSCRIPTION_MAX_AMOUNT


def period_of(expiration: datetime, period_seconds: int) -> Period:
    """The period a charge paid, from its end (Telegram's subscription_expiration_date)."""
    return Period(expiration - timedelta(seconds=period_seconds), expiration)


def first_end_after(charged_at: datetime, anchor: datetime, period_seconds: int) -> datetime:
    """The first period end after `charged_at` on the subscription's grid of periods (`anchor`,
    one of its period ends, plus or minus whole periods). A charge pays a period that has not
    ended yet: for a charge the Star ledger found (its transaction names no period end), the
    candidate for the period it paid; the caller steps past the periods already paid, since
    Telegram charges a renewal around the end of the period before it."""
    period = timedelta(seconds=period_seconds)
    return anchor + period * ((charged_at - anchor) // period + 1)


def update_target(
    current: SubscriptionState | None, telegram_state: str
) -> SubscriptionState | None:
    """The state a `subscription` update brings the subscription to, or None when it changes
    nothing (the same state again: a redelivery, or our own call reported back; or a
    subscription that has not started). An EXPIRED subscription is not revived by an update
    alone: only a renewal charge pays a new period."""
    target = TELEGRAM_STATES[telegram_state]
    if current is None or current is target:
        return None
    if current is SubscriptionState.EXPIRED:
        return None
    return target


class EditRefusal(enum.StrEnum):
    """Why CancelSubscription or ResumeSubscription cannot apply to an order."""

    NOT_A_SUBSCRIPTION = "NOT_A_SUBSCRIPTION"
    SUBSCRIPTION_NOT_STARTED = "SUBSCRIPTION_NOT_STARTED"
    SUBSCRIPTION_EXPIRED = "SUBSCRIPTION_EXPIRED"


def edit_refusal(period: int | None, state: SubscriptionState | None) -> EditRefusal | None:
    """Why the order's subscription cannot be cancelled or resumed, or None."""
    if period is None:
        return EditRefusal.NOT_A_SUBSCRIPTION
    if state is None:
        return EditRefusal.SUBSCRIPTION_NOT_STARTED
    if state is SubscriptionState.EXPIRED:
        return EditRefusal.SUBSCRIPTION_EXPIRED
    return None


def edit_target(current: SubscriptionState, cancel: bool) -> SubscriptionState | None:
    """The state CancelSubscription (`cancel`) or ResumeSubscription brings a started,
    unexpired subscription to, or None when it stays as it is. Cancelling makes it CANCELLED
    (unless it is so already). Resuming changes nothing here: Telegram's
    editUserStarSubscription with is_canceled false only lifts the bot's cancellation so that
    the user may re-enable the subscription (Bot API; MTProto's botCancelStarsSubscription
    `restore` "partially undoes" it), so no renewal is promised yet. The subscription becomes
    ACTIVE when Telegram says so: the `subscription` update `active` (the user re-enabled it)
    or a renewal charge."""
    if cancel:
        return None if current is SubscriptionState.CANCELLED else SubscriptionState.CANCELLED
    return None
