"""The price lists and the Telegram users seen through verified initData, in PostgreSQL.

Every statement is scoped by the application: one application never reads or changes another's
items or users.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from portex_pay.domain.catalog import CatalogItem, SeenUser
from portex_pay.domain.init_data import TelegramUser


def _item(row: asyncpg.Record) -> CatalogItem:
    return CatalogItem(
        key=row["key"],
        amount=row["amount"],
        title=row["title"],
        description=row["description"],
        photo_url=row["photo_url"],
        metadata=row["metadata"],
        subscription_period=row["subscription_period"],
    )


class CatalogRepository:
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self._pool = pool

    async def get(self, application_id: UUID, key: str) -> CatalogItem | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM catalog_items WHERE application_id = $1 AND key = $2",
            application_id,
            key,
        )
        return _item(row) if row else None

    async def list(self, application_id: UUID) -> list[CatalogItem]:
        rows = await self._pool.fetch(
            "SELECT * FROM catalog_items WHERE application_id = $1 ORDER BY key", application_id
        )
        return [_item(row) for row in rows]

    async def put(self, application_id: UUID, item: CatalogItem) -> bool:
        """Adds or replaces the item; False when the application does not exist."""
        try:
            await self._pool.execute(
                """
                INSERT INTO catalog_items (application_id, key, amount, title, description,
                    photo_url, metadata, subscription_period)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (application_id, key) DO UPDATE SET amount = EXCLUDED.amount,
                    title = EXCLUDED.title, description = EXCLUDED.description,
                    photo_url = EXCLUDED.photo_url, metadata = EXCLUDED.metadata,
                    subscription_period = EXCLUDED.subscription_period, updated_at = now()
                """,
                application_id,
                item.key,
                item.amount,
                item.title,
                item.description,
                item.photo_url,
                dict(item.metadata),
                item.subscription_period,
            )
        except asyncpg.ForeignKeyViolationError:
            return False
        return True

    async def delete(self, application_id: UUID, key: str) -> bool:
        """Removes the item; False when there was none."""
        status: str = await self._pool.execute(
            "DELETE FROM catalog_items WHERE application_id = $1 AND key = $2",
            application_id,
            key,
        )
        return status != "DELETE 0"


class TelegramUserRepository:
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection) -> None:
        self._pool = pool

    async def record(self, application_id: UUID, user: TelegramUser, seen_at: datetime) -> None:
        """Stores the user as verified now (names change; the latest wins)."""
        await self._pool.execute(
            """
            INSERT INTO telegram_users AS u (application_id, user_id, first_name, last_name,
                username, language_code, is_premium, photo_url, first_seen_at, last_seen_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
            ON CONFLICT (application_id, user_id) DO UPDATE SET
                first_name = EXCLUDED.first_name, last_name = EXCLUDED.last_name,
                username = EXCLUDED.username, language_code = EXCLUDED.language_code,
                is_premium = EXCLUDED.is_premium, photo_url = EXCLUDED.photo_url,
                last_seen_at = greatest(u.last_seen_at, EXCLUDED.last_seen_at)
            """,
            application_id,
            user.id,
            user.first_name,
            user.last_name,
            user.username,
            user.language_code,
            user.is_premium,
            user.photo_url,
            seen_at,
        )

    async def get(self, application_id: UUID, user_id: int) -> SeenUser | None:
        row = await self._pool.fetchrow(
            "SELECT * FROM telegram_users WHERE application_id = $1 AND user_id = $2",
            application_id,
            user_id,
        )
        if row is None:
            return None
        return SeenUser(
            user=TelegramUser(
                id=row["user_id"],
                first_name=row["first_name"],
                last_name=row["last_name"],
                username=row["username"],
                language_code=row["language_code"],
                is_premium=row["is_premium"],
                photo_url=row["photo_url"],
            ),
            first_seen_at=row["first_seen_at"],
            last_seen_at=row["last_seen_at"],
        )
