"""The ports a contract test drives, whichever implementation stands behind them."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from portex_pay.service.ports import (
    DeadLetters,
    EventStore,
    Orders,
    Payments,
    Refunds,
    SubscriptionReads,
    UnfulfilledOrders,
)


@dataclass
class Backend:
    """The money ports of one implementation over one database, and what a test needs beside
    them that no port offers: applications to own orders (and their unfulfilled-order policy),
    and pruning of the event log."""

    name: str
    orders: Orders
    payments: Payments
    events: EventStore
    dead_letters: DeadLetters
    refunds: Refunds
    unfulfilled: UnfulfilledOrders
    subscriptions: SubscriptionReads
    # The sweep that expires subscriptions past their period (OrderSweeps); how many.
    expire_subscriptions: Callable[[int], Awaitable[int]]
    # Switches an application's unfulfilled-order policy on (a deadline) or off (None).
    set_unfulfilled_refund: Callable[[uuid.UUID, timedelta | None], Awaitable[None]]
    # A new application (with a bot token, or none): its id.
    add_application: Callable[[str | None], Awaitable[uuid.UUID]]
    # Prunes every event written so far (retention of zero); how many went.
    prune_events: Callable[[], Awaitable[int]]
    # Lets the store's clock move on, so that what is written next is later than what was
    # written before (PostgreSQL's now() moves on by itself from one transaction to the next).
    pass_time: Callable[[], None] = lambda: None
