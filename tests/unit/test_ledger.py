"""The money use cases (service/ledger.py) and the refund worker (service/refunds.py) on
in-memory fakes of their ports: what each charge, refund request and refund confirmation does,
that a repeat changes nothing, and that a failure inside a unit of work leaves nothing behind."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import uuid4

import pytest

from portex_pay.domain.application import Application, Bot
from portex_pay.domain.checkout import (
    Charge,
    DeclineReason,
    Disposition,
    PaymentOutcome,
    PaymentRecord,
    RefundReason,
)
from portex_pay.domain.errors import (
    IllegalTransition,
    InvalidArgument,
    OrderNotFound,
    RefundNotFound,
    RefundSucceeded,
)
from portex_pay.domain.fulfilment import UnfulfilledOrder
from portex_pay.domain.order import Order, OrderState
from portex_pay.domain.refunds import RefundReasonCode, RefundState
from portex_pay.domain.telegram import (
    ChargeAlreadyRefunded,
    TelegramApiError,
    TelegramNetworkError,
    TelegramTooManyRequests,
)
from portex_pay.service.fulfilment import UnfulfilledRefunds
from portex_pay.service.ledger import Ledger
from portex_pay.service.refunds import RefundService
from tests.unit import fakes
from tests.unit.fakes import FakeTelegram, InMemoryPayments, InMemoryRefunds, make_order

APP = uuid4()
OTHER_APP = uuid4()
BOT_ID = 777
TOKEN = "777:secret-token"


@pytest.fixture
def store() -> InMemoryPayments:
    payments = InMemoryPayments({APP: TOKEN})
    payments.state.orders[1] = make_order(1, APP, amount=50)
    return payments


def charge_of(
    order_id: int | None,
    charge_id: str,
    *,
    update_id: int | None = 10,
    amount: int = 50,
    signed_amount: int | None = 50,
    application_id=APP,
) -> PaymentRecord:
    return PaymentRecord(
        bot_id=BOT_ID,
        update_id=update_id,
        application_id=application_id,
        tg_payment_id=order_id if signed_amount is not None else None,
        signed_amount=signed_amount,
        charge=Charge(payer_id=42, currency="XTR", total_amount=amount, invoice_payload="p"),
        telegram_payment_charge_id=charge_id,
        provider_payment_charge_id=None,
        raw={},
    )


async def pay(ledger: Ledger, record: PaymentRecord, *, auto_refund: bool = True):
    return await ledger.record_payment(record, auto_refund=auto_refund)


async def test_a_charge_for_a_pending_order_pays_it(store) -> None:
    result = await pay(Ledger(store), charge_of(1, "ch-1"))
    assert result.outcome == PaymentOutcome(Disposition.ACCEPTED)
    assert result.order is not None and result.order.state is OrderState.PAID
    assert store.state.orders[1].telegram_payment_charge_id == "ch-1"
    assert store.event_types() == ["order.paid"]
    assert not result.refund_requested


async def test_the_same_update_or_the_same_charge_again_changes_nothing(store) -> None:
    ledger = Ledger(store)
    await pay(ledger, charge_of(1, "ch-1"))
    again = await pay(ledger, charge_of(1, "ch-1"))
    assert (again.outcome, again.order) == (None, None)
    # The same charge found by reconciliation (no update id) or re-sent under another update.
    for update_id in (None, 11):
        repeat = await pay(ledger, charge_of(1, "ch-1", update_id=update_id))
        assert repeat.outcome is None and repeat.order is not None
    assert store.event_types() == ["order.paid"]
    assert len(store.state.payments) == 1


async def test_another_applications_charge_id_is_an_anomaly_of_this_one(store) -> None:
    ledger = Ledger(store)
    await pay(ledger, charge_of(1, "ch-1"))
    store.state.orders[2] = make_order(2, OTHER_APP)
    result = await pay(ledger, charge_of(2, "ch-1", update_id=20, application_id=OTHER_APP))
    assert result.outcome is None
    assert store.state.orders[2].state is OrderState.PENDING
    assert store.state.events[-1][0] == OTHER_APP
    assert store.state.events[-1][3]["reason"] == "FOREIGN_CHARGE"


@pytest.mark.parametrize("auto_refund", [True, False])
async def test_a_second_charge_of_a_paid_order_is_a_duplicate_refunded_if_allowed(
    store, auto_refund
) -> None:
    ledger = Ledger(store)
    await pay(ledger, charge_of(1, "ch-1"))
    second = await pay(ledger, charge_of(1, "ch-2", update_id=11), auto_refund=auto_refund)
    assert second.outcome == PaymentOutcome(
        Disposition.DUPLICATE, refund=RefundReason.DUPLICATE_CHARGE
    )
    assert second.refund_requested is auto_refund
    assert ("ch-2" in store.state.refunds) is auto_refund
    expected = ["order.paid", "payment.duplicate"] + (["refund.requested"] if auto_refund else [])
    assert store.event_types() == expected
    assert store.state.orders[1].telegram_payment_charge_id == "ch-1"


@pytest.mark.parametrize(("amount", "signed_amount"), [(49, 50), (50, 49)])
async def test_a_charge_that_does_not_match_its_order_leaves_the_order_alone(
    store, amount, signed_amount
) -> None:
    record = charge_of(1, "ch-1", amount=amount, signed_amount=signed_amount)
    result = await pay(Ledger(store), record)
    assert result.outcome is not None and result.outcome.disposition is Disposition.ANOMALY
    assert not result.refund_requested and store.state.refunds == {}
    assert store.state.orders[1].state is OrderState.PENDING
    assert store.event_types() == ["payment.anomaly"]
    assert store.state.payments["ch-1"].disposition is Disposition.ANOMALY


async def test_a_charge_whose_payload_is_not_ours_is_an_anomaly_of_no_order(store) -> None:
    result = await pay(Ledger(store), charge_of(1, "ch-1", signed_amount=None))
    assert result.outcome == PaymentOutcome(
        Disposition.ANOMALY, anomaly=DeclineReason.PAYLOAD_INVALID
    )
    assert (result.order, result.refund_requested) == (None, False)
    assert store.state.orders[1].state is OrderState.PENDING
    assert store.state.payments["ch-1"].tg_payment_id is None
    assert store.event_types() == ["payment.anomaly"]


async def test_a_failure_inside_the_unit_of_work_leaves_nothing_behind(store, monkeypatch) -> None:
    def broken(self: object, tg_payment_id: int, charge_id: str, end: object) -> Order | None:
        raise RuntimeError("a bug while paying the order, after its charge was added")

    ledger = Ledger(store)
    with monkeypatch.context() as patched:
        patched.setattr(fakes._PaidOrders, "_mark_paid", broken)
        with pytest.raises(RuntimeError):
            await pay(ledger, charge_of(1, "ch-1"))
    assert store.state.updates == set() and store.state.payments == {}
    # The update was not claimed: its redelivery is processed.
    result = await pay(ledger, charge_of(1, "ch-1"))
    assert result.outcome == PaymentOutcome(Disposition.ACCEPTED)


async def test_a_refund_is_asked_once_and_only_for_a_paid_order(store) -> None:
    ledger = Ledger(store)
    assert await ledger.request_refund(APP, 99, BOT_ID) is None
    assert await ledger.request_refund(OTHER_APP, 1, BOT_ID) is None  # not that app's order
    found = await ledger.request_refund(APP, 1, BOT_ID)
    assert found is not None and found[1] is None  # pending: nothing to refund
    await pay(ledger, charge_of(1, "ch-1"))
    first = await ledger.request_refund(APP, 1, BOT_ID)
    second = await ledger.request_refund(APP, 1, BOT_ID)
    assert first is not None and second is not None
    assert first[1] is not None and first[1] == second[1]
    assert first[1].state is RefundState.PENDING and first[1].amount == 50
    assert store.event_types().count("refund.requested") == 1


async def test_a_settled_refund_refunds_the_order_once(store) -> None:
    ledger = Ledger(store)
    await pay(ledger, charge_of(1, "ch-1"))
    await ledger.request_refund(APP, 1, BOT_ID)
    assert await ledger.settle_refund(APP, "ch-1")
    assert await ledger.settle_refund(APP, "ch-1")  # the worker and the update both confirm
    assert store.state.orders[1].state is OrderState.REFUNDED
    assert store.state.refunds["ch-1"].refund.state is RefundState.SUCCEEDED
    assert store.event_types().count("order.refunded") == 1
    assert not await ledger.settle_refund(OTHER_APP, "ch-1")  # never another app's charge


async def test_a_refunded_payment_update_settles_what_it_names(store) -> None:
    ledger = Ledger(store)
    await pay(ledger, charge_of(1, "ch-1"))
    await pay(ledger, charge_of(1, "ch-2", update_id=11))  # a duplicate, auto-refunded
    duplicate = await ledger.record_refunded_payment(BOT_ID, 30, APP, "ch-2")
    assert duplicate is not None and duplicate.known and duplicate.order is None
    assert store.state.orders[1].state is OrderState.PAID  # a duplicate's refund is not the sale's
    refunded = await ledger.record_refunded_payment(BOT_ID, 31, APP, "ch-1")
    assert refunded is not None and refunded.order is not None
    assert refunded.order.state is OrderState.REFUNDED
    assert await ledger.record_refunded_payment(BOT_ID, 31, APP, "ch-1") is None  # redelivered
    unknown = await ledger.record_refunded_payment(BOT_ID, 32, APP, "never-seen")
    assert unknown is not None and not unknown.known
    assert store.state.events[-1][3]["reason"] == "REFUND_OF_UNKNOWN_CHARGE"


APPLICATION = Application(id=APP, name="shop", bot=Bot(BOT_ID, TOKEN, "shop_bot"))


def refund_service(store: InMemoryPayments, telegram: FakeTelegram, **options) -> RefundService:
    return RefundService(
        store,
        InMemoryRefunds(store.state),
        telegram,
        max_attempts=options.pop("max_attempts", 3),
        **options,
    )


async def paid_and_asked(store: InMemoryPayments) -> None:
    ledger = Ledger(store)
    await pay(ledger, charge_of(1, "ch-1"))


async def test_the_worker_delivers_a_requested_refund(store) -> None:
    await paid_and_asked(store)
    telegram = FakeTelegram()
    service = refund_service(store, telegram)
    refund, order = await service.request(APPLICATION, 1)
    assert refund.state is RefundState.PENDING and order.state is OrderState.PAID
    assert await service.step() == 1
    assert telegram.refunds == [(TOKEN, 42, "ch-1")]
    assert store.state.orders[1].state is OrderState.REFUNDED
    assert await service.step() == 0  # nothing left to do
    again, _ = await service.request(APPLICATION, 1)  # asked again once refunded: the same one
    assert again.telegram_payment_charge_id == "ch-1" and again.state is RefundState.SUCCEEDED


async def test_a_refund_telegram_made_before_counts_as_done(store) -> None:
    await paid_and_asked(store)
    telegram = FakeTelegram()
    telegram.refund_errors.append(
        ChargeAlreadyRefunded("refundStarPayment", 400, "Bad Request: CHARGE_ALREADY_REFUNDED")
    )
    service = refund_service(store, telegram)
    await service.request(APPLICATION, 1)
    await service.step()
    assert store.state.refunds["ch-1"].refund.state is RefundState.SUCCEEDED
    assert store.state.orders[1].state is OrderState.REFUNDED


async def test_rate_limits_wait_retry_after_and_failures_give_up(store) -> None:
    await paid_and_asked(store)
    telegram = FakeTelegram()
    telegram.refund_errors += [
        TelegramTooManyRequests("refundStarPayment", 429, "Too Many Requests", 120),
        TelegramNetworkError("refundStarPayment", "timed out"),
        TelegramApiError("refundStarPayment", 400, "Bad Request: CHARGE_NOT_FOUND"),
    ]
    service = refund_service(store, telegram, base_backoff=1.0, max_attempts=3)
    await service.request(APPLICATION, 1)
    await service.step()
    stored = store.state.refunds["ch-1"]
    assert stored.next_attempt_at >= store.state.now + timedelta(seconds=120)
    assert stored.refund.attempts == 1
    assert "429" in (stored.refund.last_error or "")
    store.due_now()
    await service.step()
    refund = store.state.refunds["ch-1"].refund
    assert refund.last_error == "timed out"
    assert refund.state.value == "pending"
    store.due_now()
    await service.step()
    refund = store.state.refunds["ch-1"].refund
    assert refund.state is RefundState.FAILED and refund.attempts == 3
    assert store.event_types()[-1] == "refund.failed"
    assert store.state.orders[1].state is OrderState.PAID
    store.due_now()
    assert await service.step() == 0  # given up: not tried again


async def test_only_a_paid_order_of_the_application_can_be_refunded(store) -> None:
    service = refund_service(store, FakeTelegram())
    with pytest.raises(IllegalTransition) as raised:
        await service.request(APPLICATION, 1)  # pending
    assert raised.value.metadata == {"state": "pending"}
    for missing in (0, -1, 99):
        with pytest.raises(OrderNotFound):
            await service.request(APPLICATION, missing)
    store.state.orders[5] = make_order(5, OTHER_APP, OrderState.PAID, charge_id="ch-5")
    with pytest.raises(OrderNotFound):
        await service.request(APPLICATION, 5)


# --- RetryRefund and the unfulfilled-order policy ------------------------------------------------


async def test_a_failed_refund_is_retried_and_the_worker_woken(store) -> None:
    await paid_and_asked(store)
    telegram = FakeTelegram()
    telegram.refund_errors.append(
        TelegramApiError("refundStarPayment", 400, "Bad Request: BALANCE_TOO_LOW")
    )
    woken: list[str] = []
    service = refund_service(store, telegram, max_attempts=1, wake=lambda: woken.append("wake"))
    await service.request(APPLICATION, 1)
    await service.step()
    assert store.state.refunds["ch-1"].refund.state is RefundState.FAILED
    woken.clear()
    retried = await service.retry(APPLICATION, "ch-1")
    assert (retried.state, retried.attempts, retried.retries) == (RefundState.PENDING, 0, 1)
    assert woken == ["wake"]
    assert store.event_types()[-1] == "refund.retried"
    assert await service.step() == 1
    assert store.state.orders[1].state is OrderState.REFUNDED
    with pytest.raises(RefundSucceeded):
        await service.retry(APPLICATION, "ch-1")


async def test_retry_refund_answers_a_pending_refund_and_refuses_a_missing_one(store) -> None:
    await paid_and_asked(store)
    woken: list[str] = []
    service = refund_service(store, FakeTelegram(), wake=lambda: woken.append("wake"))
    asked, _ = await service.request(APPLICATION, 1)
    woken.clear()
    assert await service.retry(APPLICATION, "ch-1") == asked
    assert woken == []  # nothing to send that is not on its way
    other = Application(id=OTHER_APP, name="other", bot=Bot(BOT_ID + 1, "778:x"))
    for application, charge_id in ((APPLICATION, "never"), (other, "ch-1")):
        with pytest.raises(RefundNotFound):
            await service.retry(application, charge_id)
    with pytest.raises(InvalidArgument):
        await service.retry(APPLICATION, "")


class StaleReads:
    """The UnfulfilledOrders port answering what it read before the orders changed: the sweep
    must judge each order again under its lock."""

    def __init__(self, due: list[UnfulfilledOrder]) -> None:
        self.due = due
        self.asked: list[datetime] = []

    async def unfulfilled_past_deadline(self, now: datetime, limit: int) -> list[UnfulfilledOrder]:
        self.asked.append(now)
        return self.due[:limit]


async def test_the_policy_refunds_an_unacknowledged_order_and_wakes_the_worker(store) -> None:
    await pay(Ledger(store), charge_of(1, "ch-1"))
    woken: list[str] = []
    clock_now = fakes.NOW + timedelta(days=3)
    reads = StaleReads([UnfulfilledOrder(APP, 1, BOT_ID)])
    sweep = UnfulfilledRefunds(
        reads, store, clock=lambda: clock_now, wake_refunds=lambda: woken.append("wake")
    )
    assert await sweep.step() == 1
    assert reads.asked == [clock_now]  # the deadline is judged on the service clock
    assert woken == ["wake"]
    refund = store.state.refunds["ch-1"].refund
    assert (refund.reason, refund.reason_code) == ("unfulfilled", RefundReasonCode.NOT_FULFILLED)
    # Read again (another replica, a stale read): recorded once, nothing woken for nothing.
    woken.clear()
    assert await sweep.step() == 0
    assert woken == []
    assert store.event_types().count("refund.requested") == 1


async def test_an_acknowledgement_that_commits_first_wins_over_the_policy(store) -> None:
    await pay(Ledger(store), charge_of(1, "ch-1"))
    orders = fakes.InMemoryOrders(store.state)
    assert await orders.acknowledge(APP, 1, "d-1") is not None  # after the sweep read it
    woken: list[str] = []
    sweep = UnfulfilledRefunds(
        StaleReads([UnfulfilledOrder(APP, 1, BOT_ID)]),
        store,
        wake_refunds=lambda: woken.append("wake"),
    )
    assert await sweep.step() == 0
    assert "ch-1" not in store.state.refunds
    assert woken == []
