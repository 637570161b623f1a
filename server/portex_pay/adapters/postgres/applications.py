"""Applications and their API keys, in PostgreSQL.

API keys are stored only as SHA-256 hashes: a key is 256 random bits, so a fast hash is as strong
as a slow one here, and it lets a key be found by an index lookup on its hash. The bot token and
the webhook and signing secrets are stored sealed (adapters/postgres/sealed.py): sealed here
before they are written, opened here as a row is read, never seen by SQL in plain text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID, uuid4

import asyncpg

from portex_pay.adapters.postgres.sealed import APPLICATIONS
from portex_pay.domain.application import (
    BOT_MESSAGE_FIELDS,
    AlreadyTaken,
    ApiKeyInfo,
    Application,
    ApplicationListing,
    Bot,
)
from portex_pay.domain.catalog import PricingMode
from portex_pay.domain.sealing import DataKeys
from portex_pay.logging import register_secret, register_secrets

# The unique constraints of `applications` (migrations/0001_initial.sql).
_TAKEN: dict[str, Literal["name", "bot"]] = {
    "applications_name_key": "name",
    "applications_bot_id": "bot",
}


@contextlib.contextmanager
def _unique_rules() -> Iterator[None]:
    """A unique violation of a name or a bot, as the domain's AlreadyTaken."""
    try:
        yield
    except asyncpg.UniqueViolationError as error:
        what = _TAKEN.get(error.constraint_name or "")
        if what is None:
            raise
        raise AlreadyTaken(what) from None


def _application(row: asyncpg.Record, keys: DataKeys) -> Application:
    # Every application row we load passes here (all queries select all its columns): its secrets
    # are opened, and redacted from the logs from now on. Of a bot token only the part after the
    # colon is secret (the bot id before it is logged as such).
    bot_token = APPLICATIONS.open(keys, "bot_token", row["id"], row["bot_token"])
    webhook_secret = APPLICATIONS.open(keys, "webhook_secret", row["id"], row["webhook_secret"])
    register_secrets(
        (
            webhook_secret,
            APPLICATIONS.open(keys, "signing_secret", row["id"], row.get("signing_secret")),
            APPLICATIONS.open(
                keys, "previous_signing_secret", row["id"], row.get("previous_signing_secret")
            ),
            bot_token.partition(":")[2] if bot_token else None,
        )
    )
    return Application(
        id=row["id"],
        name=row["name"],
        bot=None if bot_token is None else Bot(row["bot_id"], bot_token, row["bot_username"]),
        webhook_secret=webhook_secret or "",
        updates_mode=row["updates_mode"],
        pricing_mode=PricingMode(row["pricing_mode"]),
        allowed_origins=tuple(row["allowed_origins"]),
        callback_prefixes=tuple(row["callback_prefixes"]),
        support_text=row["support_text"],
        terms_text=row["terms_text"],
        buyer_messages=row["buyer_messages"],
        paid_message=row["paid_message"],
        refunded_message=row["refunded_message"],
        unfulfilled_refund_after=row["unfulfilled_refund_after"],
        unfulfilled_refund_since=row["unfulfilled_refund_since"],
    )


class ApplicationRepository:
    def __init__(self, pool: asyncpg.Pool | asyncpg.Connection, data_keys: DataKeys) -> None:
        self._db = pool
        self._keys = data_keys

    def _application(self, row: asyncpg.Record) -> Application:
        return _application(row, self._keys)

    async def create(
        self,
        name: str,
        *,
        webhook_secret: str,
        signing_secret: str,
        bot_token: str | None = None,
        bot_id: int | None = None,
        bot_username: str | None = None,
    ) -> Application:
        # The id is chosen here: each sealed value is bound to it.
        application_id = uuid4()
        with _unique_rules():
            row = await self._db.fetchrow(
                """
                INSERT INTO applications
                    (id, name, bot_token, bot_id, bot_username, webhook_secret, signing_secret)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                RETURNING *
                """,
                application_id,
                name,
                APPLICATIONS.seal(self._keys, "bot_token", application_id, bot_token),
                bot_id,
                bot_username,
                APPLICATIONS.seal(self._keys, "webhook_secret", application_id, webhook_secret),
                APPLICATIONS.seal(self._keys, "signing_secret", application_id, signing_secret),
            )
        assert row is not None
        return self._application(row)

    async def get(self, application_id: UUID) -> Application | None:
        row = await self._db.fetchrow("SELECT * FROM applications WHERE id = $1", application_id)
        return None if row is None else self._application(row)

    async def get_by_name(self, name: str) -> Application | None:
        row = await self._db.fetchrow("SELECT * FROM applications WHERE name = $1", name)
        return None if row is None else self._application(row)

    async def get_by_bot_id(self, bot_id: int) -> Application | None:
        row = await self._db.fetchrow("SELECT * FROM applications WHERE bot_id = $1", bot_id)
        return None if row is None else self._application(row)

    async def set_bot_messages(
        self, application_id: UUID, changes: dict[str, str | bool | None]
    ) -> Application | None:
        """Sets the given bot message settings (keys of BOT_MESSAGE_FIELDS; a None text goes
        back to the default); the application, or None when there is none."""
        assert changes and set(changes) <= set(BOT_MESSAGE_FIELDS)
        names = sorted(changes)
        assignments = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
        row = await self._db.fetchrow(
            f"UPDATE applications SET {assignments}, updated_at = now() WHERE id = $1 RETURNING *",
            application_id,
            *(changes[name] for name in names),
        )
        return None if row is None else self._application(row)

    async def relay_allowed_updates(self, application_id: UUID) -> tuple[str, ...] | None:
        """The update kinds the app's own bot asked the relay for (() for Telegram's default
        set), or None when it does not use the relay."""
        allowed = await self._db.fetchval(
            "SELECT coalesce(allowed_updates, '{}') FROM relay_bots WHERE application_id = $1",
            application_id,
        )
        return None if allowed is None else tuple(allowed)

    async def set_bot(
        self, application_id: UUID, bot_token: str, bot_id: int, bot_username: str | None
    ) -> bool:
        with _unique_rules():
            status = await self._db.execute(
                """
                UPDATE applications SET bot_token = $2, bot_id = $3, bot_username = $4,
                    updated_at = now()
                WHERE id = $1
                """,
                application_id,
                APPLICATIONS.seal(self._keys, "bot_token", application_id, bot_token),
                bot_id,
                bot_username,
            )
        return status.endswith(" 1")

    async def signing_secret(self, application_id: UUID) -> str | None:
        sealed: str | None = await self._db.fetchval(
            "SELECT signing_secret FROM applications WHERE id = $1", application_id
        )
        secret = APPLICATIONS.open(self._keys, "signing_secret", application_id, sealed)
        register_secret(secret)
        return secret

    async def rotate_signing_secret(
        self, application_id: UUID, new_secret: str, overlap: timedelta
    ) -> datetime | None:
        """Makes `new_secret` current; the one it replaces keeps signing until the returned
        time (now + `overlap`). None when there is no such application. A rotation during an
        overlap ends it: only the secret being replaced is kept.

        Each sealed value is bound to its column, so the replaced secret is opened and sealed
        again for `previous_signing_secret` (never copied in SQL); the write is a compare and set
        on the value read, tried again if another rotation came between."""
        register_secret(new_secret)
        while True:
            current: str | None = await self._db.fetchval(
                "SELECT signing_secret FROM applications WHERE id = $1", application_id
            )
            if current is None:
                return None
            previous = APPLICATIONS.open(self._keys, "signing_secret", application_id, current)
            until: datetime | None = await self._db.fetchval(
                """
                UPDATE applications SET previous_signing_secret = $4,
                    previous_signing_secret_until = now() + $3::interval,
                    signing_secret = $2, updated_at = now()
                WHERE id = $1 AND signing_secret = $5 RETURNING previous_signing_secret_until
                """,
                application_id,
                APPLICATIONS.seal(self._keys, "signing_secret", application_id, new_secret),
                overlap,
                APPLICATIONS.seal(self._keys, "previous_signing_secret", application_id, previous),
                current,
            )
            if until is not None:
                return until

    async def with_bots(self) -> list[Application]:
        """Every application that has a bot (the pollers' work list)."""
        rows = await self._db.fetch("SELECT * FROM applications WHERE bot_token IS NOT NULL")
        return [self._application(row) for row in rows]

    async def set_updates_mode(self, application_id: UUID, mode: str | None) -> bool:
        status = await self._db.execute(
            "UPDATE applications SET updates_mode = $2, updated_at = now() WHERE id = $1",
            application_id,
            mode,
        )
        return status.endswith(" 1")

    async def set_edge(
        self,
        application_id: UUID,
        *,
        pricing_mode: PricingMode | None = None,
        allowed_origins: list[str] | None = None,
        callback_prefixes: list[str] | None = None,
    ) -> Application | None:
        """Changes the given edge settings (None: unchanged); the application, or None."""
        row = await self._db.fetchrow(
            """
            UPDATE applications SET pricing_mode = coalesce($2, pricing_mode),
                allowed_origins = coalesce($3, allowed_origins),
                callback_prefixes = coalesce($4, callback_prefixes), updated_at = now()
            WHERE id = $1 RETURNING *
            """,
            application_id,
            pricing_mode.value if pricing_mode else None,
            allowed_origins,
            callback_prefixes,
        )
        return None if row is None else self._application(row)

    async def set_unfulfilled_refund(
        self, application_id: UUID, after: timedelta | None
    ) -> Application | None:
        """Switches the unfulfilled-order policy on with this deadline (a new deadline keeps the
        time it was switched on), or off (None); the application, or None when there is none."""
        row = await self._db.fetchrow(
            """
            UPDATE applications SET unfulfilled_refund_after = $2,
                unfulfilled_refund_since = CASE WHEN $2::interval IS NULL THEN NULL
                    ELSE coalesce(unfulfilled_refund_since, now()) END,
                updated_at = now()
            WHERE id = $1 RETURNING *
            """,
            application_id,
            after,
        )
        return None if row is None else self._application(row)

    async def origin_allowed_anywhere(self, origin: str) -> bool:
        """Whether some application allows this browser origin (a CORS preflight carries no
        application id: the request itself is checked against its own application's list)."""
        found: bool = await self._db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM applications WHERE allowed_origins @> ARRAY[$1])",
            origin,
        )
        return found

    async def add_key(self, application_id: UUID, key_id: str, key_hash: bytes) -> None:
        await self._db.execute(
            "INSERT INTO api_keys (id, application_id, key_hash) VALUES ($1, $2, $3)",
            key_id,
            application_id,
            key_hash,
        )

    async def revoke_key(self, application_id: UUID, key_id: str) -> bool:
        status = await self._db.execute(
            """
            UPDATE api_keys SET revoked_at = now()
            WHERE id = $1 AND application_id = $2 AND revoked_at IS NULL
            """,
            key_id,
            application_id,
        )
        return status.endswith(" 1")

    async def find_by_key_hash(self, key_hash: bytes) -> tuple[bytes, Application] | None:
        """The live key's stored hash and its application, or None (unknown or revoked)."""
        row = await self._db.fetchrow(
            """
            SELECT k.key_hash, a.* FROM api_keys k JOIN applications a ON a.id = k.application_id
            WHERE k.key_hash = $1 AND k.revoked_at IS NULL
            """,
            key_hash,
        )
        return None if row is None else (bytes(row["key_hash"]), self._application(row))

    async def list(self) -> list[ApplicationListing]:
        rows = await self._db.fetch(
            """
            SELECT a.*, coalesce(
                jsonb_agg(jsonb_build_object(
                    'id', k.id, 'created_at', k.created_at, 'revoked_at', k.revoked_at)
                    ORDER BY k.created_at) FILTER (WHERE k.id IS NOT NULL),
                '[]') AS keys
            FROM applications a LEFT JOIN api_keys k ON k.application_id = a.id
            GROUP BY a.id ORDER BY a.created_at
            """
        )
        return [
            ApplicationListing(
                application=self._application(row),
                keys=[
                    ApiKeyInfo(
                        id=k["id"],
                        created_at=datetime.fromisoformat(k["created_at"]),
                        revoked_at=(
                            datetime.fromisoformat(k["revoked_at"]) if k["revoked_at"] else None
                        ),
                    )
                    for k in row["keys"]
                ],
                created_at=row["created_at"],
            )
            for row in rows
        ]
