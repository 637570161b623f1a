"""The accounting export's reads in PostgreSQL: the AccountingRecords port.

Each batch is one statement in autocommit, never a transaction or a cursor held across batches:
the event stream's horizon (`pg_snapshot_xmin`, service/stream.py) must not wait for an export.
Batches follow a keyset, so each one is an index range scan from the last row of the previous
batch, whatever the size of the range: orders by (created_at, tg_payment_id) (the orders index
ListOrders pages on), Star transactions by (date, id, direction) (`star_transactions_export`).
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.orders import order_from_row
from portex_pay.adapters.postgres.star_ledger import ledger_entry
from portex_pay.domain.star_ledger import LedgerEntry
from portex_pay.service.ports import ExportedOrder

# Identity ids start at 1, so (start, 0) sorts before every order created at `start`: the first
# batch is the same query as the others.
_ORDERS = """
SELECT * FROM orders
WHERE application_id = $1
  AND (created_at, tg_payment_id) > ($2, $3)
  AND created_at < $4
ORDER BY created_at, tg_payment_id
LIMIT $5
"""

# '' sorts before every id and 'incoming' before 'outgoing': the first batch starts at `start`.
_TRANSACTIONS = """
SELECT * FROM star_transactions
WHERE application_id = $1
  AND (date, id COLLATE "C", direction) > ($2, $3 COLLATE "C", $4)
  AND date < $5
ORDER BY date, id COLLATE "C", direction
LIMIT $6
"""


class AccountingExportReader:
    def __init__(self, db: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = db

    async def orders(
        self,
        application_id: UUID,
        start: datetime,
        end: datetime,
        after: tuple[datetime, int] | None,
        limit: int,
    ) -> list[ExportedOrder]:
        last_created, last_id = after if after is not None else (start, 0)
        rows = await self._db.fetch(_ORDERS, application_id, last_created, last_id, end, limit)
        return [
            ExportedOrder(order_from_row(row), row["refunded_at"], row["cancelled_at"])
            for row in rows
        ]

    async def transactions(
        self,
        application_id: UUID,
        start: datetime,
        end: datetime,
        after: tuple[datetime, str, str] | None,
        limit: int,
    ) -> list[LedgerEntry]:
        last_date, last_id, last_direction = after if after is not None else (start, "", "")
        rows = await self._db.fetch(
            _TRANSACTIONS, application_id, last_date, last_id, last_direction, end, limit
        )
        return [ledger_entry(row) for row in rows]
