"""The secret columns sealed at rest, and the batch step that (re-)seals them.

`SEALED` lists every column that holds a credential, by table, with the column naming the row:
each value is sealed in Python (domain/sealing.py) bound to `<table>.<column>:<row id>`, so no SQL
statement ever carries a plaintext secret and a ciphertext moved to another row does not open.
Sealing one more column is one more name in its table's `columns`.

`reseal` walks each table in keyset batches (one short query a batch, no long transaction) and
seals every value that is plaintext (rows written before sealing: run at every start, after the
migrations, where it finds nothing once done) or, for `admin rotate-data-key`, sealed under a key
other than the current one. Each value is replaced only if it is still the one read (compare and
set), so a token changed meanwhile by a running service is never overwritten: it runs safely
beside the service, and again after an interruption.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from portex_pay.adapters.postgres.pool import Conn
from portex_pay.domain.sealing import DataKeys, SealingError, sealed_key_id


@dataclass(frozen=True, slots=True)
class SealedTable:
    table: str
    row_id: str  # the column whose value names the row in each sealed value's associated data
    columns: tuple[str, ...]

    def context(self, column: str, row_id: object) -> str:
        return f"{self.table}.{column}:{row_id}"

    def seal(self, keys: DataKeys, column: str, row_id: object, value: str | None) -> str | None:
        return None if value is None else keys.seal(value, self.context(column, row_id))

    def open(self, keys: DataKeys, column: str, row_id: object, value: str | None) -> str | None:
        return None if value is None else keys.open(value, self.context(column, row_id))


APPLICATIONS = SealedTable(
    "applications",
    "id",
    ("bot_token", "webhook_secret", "signing_secret", "previous_signing_secret"),
)
RELAY_BOTS = SealedTable("relay_bots", "bot_id", ("webhook_secret",))
SEALED = (APPLICATIONS, RELAY_BOTS)

_SEALED_PREFIX = "v1.%"


async def reseal(
    db: asyncpg.Pool | Conn, keys: DataKeys, *, plaintext_only: bool, batch: int = 100
) -> int:
    """Seals every plaintext value (and, unless `plaintext_only`, re-seals every value sealed
    under a retired key) under the current key; the number of values it changed."""
    changed = 0
    for table in SEALED:
        changed += await _reseal_table(db, keys, table, plaintext_only, batch)
    return changed


async def _reseal_table(
    db: asyncpg.Pool | Conn, keys: DataKeys, table: SealedTable, plaintext_only: bool, batch: int
) -> int:
    # Sealed under the current key: `v1.<current id>.`; plaintext never contains a dot.
    current = f"v1.{keys.current_id}.%"
    stale = " OR ".join(
        f"({column} NOT LIKE '{_SEALED_PREFIX}')" if plaintext_only else f"({column} NOT LIKE $2)"
        for column in table.columns
    )
    columns = ", ".join(table.columns)
    query = (
        f"SELECT {table.row_id} AS row_id, {columns} FROM {table.table} "
        f"WHERE {table.row_id} > $1 AND ({stale}) ORDER BY {table.row_id} LIMIT {int(batch)}"
    )
    changed, after = 0, _lowest(table)
    while True:
        args: list[Any] = [after] if plaintext_only else [after, current]
        rows = await db.fetch(query, *args)
        for row in rows:
            changed += await _reseal_row(db, keys, table, row, plaintext_only)
        if len(rows) < batch:
            return changed
        after = rows[-1]["row_id"]


async def _reseal_row(
    db: asyncpg.Pool | Conn,
    keys: DataKeys,
    table: SealedTable,
    row: asyncpg.Record,
    plaintext_only: bool,
) -> int:
    """Re-seals the row's stale values in one statement, each only if unchanged since read."""
    changes = []
    for column in table.columns:
        value = row[column]
        key_id = None if value is None else sealed_key_id(value)
        if value is None or key_id == keys.current_id or (plaintext_only and key_id is not None):
            continue
        plaintext = table.open(keys, column, row["row_id"], value)
        changes.append((column, value, table.seal(keys, column, row["row_id"], plaintext)))
    if not changes:
        return 0
    # Each column is set to its new value only where it still holds the value read; the count
    # is of the values changed, not of the columns named.
    changed = [f"{column} = ${2 * i + 2}" for i, (column, _, _) in enumerate(changes)]
    assignments = ", ".join(
        f"{column} = CASE WHEN {same} THEN ${2 * i + 3} ELSE {column} END"
        for i, ((column, _, _), same) in enumerate(zip(changes, changed, strict=True))
    )
    # RETURNING sees the new row: a value changed now holds its new sealing (a fresh nonce
    # each, which nothing else can hold).
    counted = " + ".join(
        f"({column} = ${2 * i + 3})::int" for i, (column, _, _) in enumerate(changes)
    )
    done: int | None = await db.fetchval(
        f"UPDATE {table.table} AS sealed SET {assignments} WHERE {table.row_id} = $1"
        f" AND ({' OR '.join(changed)}) RETURNING {counted}",
        row["row_id"],
        *(value for _, old, new in changes for value in (old, new)),
    )
    return done or 0


def _lowest(table: SealedTable) -> object:
    """A value below every row id of the table, where the keyset walk starts."""
    return UUID(int=0) if table.row_id == "id" else -(2**63)


async def unopenable_key_ids(db: asyncpg.Pool | Conn, keys: DataKeys) -> dict[str, int]:
    """The ids of the keys outside the ring that stored values are sealed under, with how many
    values each: a start-up with a ring missing one of them refuses to serve."""
    found: dict[str, int] = {}
    for table in SEALED:
        for column in table.columns:
            rows = await db.fetch(
                f"SELECT split_part({column}, '.', 2) AS key_id, count(*) AS n "
                f"FROM {table.table} WHERE {column} LIKE '{_SEALED_PREFIX}' "
                f"AND split_part({column}, '.', 2) <> ALL($1::text[]) GROUP BY 1",
                list(keys.key_ids()),
            )
            for row in rows:
                found[row["key_id"]] = found.get(row["key_id"], 0) + row["n"]
    return found


async def prepare_sealed_secrets(db: asyncpg.Pool | Conn, keys: DataKeys) -> int:
    """The start-up step after the migrations: SealingError when a stored secret is sealed
    under a key the ring lacks (named by id); else seals the plaintext left by earlier versions,
    and returns how many values it sealed."""
    missing = await unopenable_key_ids(db, keys)
    if missing:
        listed = ", ".join(
            f"{key_id} ({count} values)" for key_id, count in sorted(missing.items())
        )
        raise SealingError(
            f"stored secrets are sealed under data keys that PORTEX_DATA_KEY and "
            f"PORTEX_DATA_KEYS_RETIRED do not hold: {listed}; restore those keys (retire a key "
            "only after `portex-pay admin rotate-data-key` has re-sealed under its successor)"
        )
    return await reseal(db, keys, plaintext_only=True)
