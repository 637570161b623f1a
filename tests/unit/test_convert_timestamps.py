"""The Order message's timestamps: computed from the datetime's fields, they must be exactly what
protobuf's `Timestamp.FromDatetime` gives, for any zone, before the epoch, to the microsecond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest
from google.protobuf import timestamp_pb2

from portex_pay.api.grpc.convert import order_message
from portex_pay.domain.order import Order, OrderState

MOMENTS = [
    datetime(2026, 11, 28, 12, 0, tzinfo=UTC),
    datetime(2026, 11, 28, 12, 0, 0, 999_999, tzinfo=UTC),
    datetime(1970, 1, 1, tzinfo=UTC),
    datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),  # before the epoch: nanos stay positive
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 3, 29, 2, 30, 15, 123_456, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    datetime(2026, 3, 29, 2, 30, 15, 654_321, tzinfo=timezone(timedelta(hours=-11))),
    datetime(2026, 3, 29, 2, 30, 15, 42),  # naive: UTC, as FromDatetime reads it
]


def _order(moment: datetime) -> Order:
    return Order(
        tg_payment_id=1, application_id=uuid4(), tg_use_id=42, amount=5, label="l", title="t",
        description="d", payload=None, photo_url=None, photo_size=None, photo_width=None,
        photo_height=None, callback_url=None, state=OrderState.PAID, invoice_link=None,
        failure_code=None, failure_reason=None, retry_after=None,
        telegram_payment_charge_id="c", created_at=moment, updated_at=moment, paid_at=moment,
        expires_at=moment, invoice_lease_until=None, fulfilled_at=moment,
    )  # fmt: skip


def _from_datetime(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_every_timestamp_of_an_order_is_what_from_datetime_gives(moment: datetime) -> None:
    message = order_message(_order(moment), datetime(2026, 1, 1, tzinfo=UTC))
    expected = _from_datetime(moment)
    for name in ("create_time", "update_time", "expire_time", "paid_time", "fulfilled_time"):
        stamp = getattr(message, name)
        assert (stamp.seconds, stamp.nanos) == (expected.seconds, expected.nanos), name
        assert 0 <= stamp.nanos < 1_000_000_000
