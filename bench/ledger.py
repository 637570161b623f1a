"""The Star ledger's cost per idle cycle (`python -m bench.ledger`): what one caught-up run of a
bot's reader asks of Telegram and of PostgreSQL when nothing is new, counted by the fake Bot API
(calls per method) and by PostgreSQL itself (pg_stat_statements, in a throwaway cluster of its
own that loads it), for the replica that reads and for one that finds the bot read already.

Also the cost of a first read of a bot's history (pages of 100 until caught up).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from bench.serving import DATA_KEY, DATA_KEYS
from bench.statements import statement_counts, with_statement_counts
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.postgres.pool import create_pool
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import Sessions, application_admin, wire
from portex_pay.config import Settings
from portex_pay.domain.application import Application
from portex_pay.logging import configure_logging
from portex_pay.service.reconcile import LedgerReader
from portex_pay_devtools.fake_bot_api import FakeBotApi

HISTORY = 250  # transactions on the bot before the first read
CYCLES = 50  # idle runs measured


async def _idle_cycles(
    conn: asyncpg.Connection,
    fake: FakeBotApi,
    token: str,
    reader: LedgerReader,
    application: Application,
    *,
    force: bool,
) -> tuple[float, dict[str, int]]:
    """Telegram calls per run and statements per run, over CYCLES runs."""
    await conn.execute("SELECT pg_stat_statements_reset()")
    calls_before = fake.call_counts(token).get("getStarTransactions", 0)
    for _ in range(CYCLES):
        await reader.catch_up(application, force=force)
    calls = fake.call_counts(token).get("getStarTransactions", 0) - calls_before
    return calls / CYCLES, await statement_counts(conn, 90)


def _print(title: str, calls: float, statements: dict[str, int]) -> None:
    total = sum(statements.values())
    print(f"{title}: {calls:.2f} getStarTransactions call(s), {total / CYCLES:.2f} statement(s)")
    for query, count in sorted(statements.items(), key=lambda item: -item[1]):
        print(f"    {count / CYCLES:5.2f}  {query}")


async def run_ledger_bench(dsn: str) -> None:
    async with FakeBotApi() as fake:
        conn = await asyncpg.connect(dsn)
        session = await new_session()
        pool = await create_pool(dsn, min_size=1, max_size=2)
        try:
            await migrate(conn)
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            token = f"{uuid.uuid4().int % 10**9 + 10**9}:{'b' * 35}"
            fake.add_bot(token)
            for number in range(HISTORY):
                fake.add_star_transaction(
                    token,
                    {"id": f"ads-{number}", "amount": 1, "receiver": {"type": "telegram_ads"}},
                )
            admin = application_admin(
                conn, BotApiClient(session, fake.base_url, 5), data_keys=DATA_KEYS
            )
            application, _ = await admin.create_app(f"ledger-bench-{uuid.uuid4().hex[:6]}", token)
            settings = Settings().replace(
                db_url=dsn,
                payload_secret="b" * 32,
                data_key=DATA_KEY,
                telegram_api_url=fake.base_url,
            )
            reading = wire(settings, pool, Sessions(session), replica="reading").ledger_reader
            other = wire(settings, pool, Sessions(session), replica="other").ledger_reader

            await conn.execute("SELECT pg_stat_statements_reset()")
            first = await reading.catch_up(application, force=True)
            assert first is not None
            history = await statement_counts(conn, 90)
            print(
                f"first read of {HISTORY} transactions: {first.pages} getStarTransactions calls, "
                f"{sum(history.values())} statements"
            )
            calls, statements = await _idle_cycles(
                conn, fake, token, reading, application, force=True
            )
            _print("idle run of the reading replica", calls, statements)
            calls, statements = await _idle_cycles(
                conn, fake, token, other, application, force=False
            )
            _print(
                "idle run of a replica that finds the bot read within the interval",
                calls,
                statements,
            )
        finally:
            await pool.close()
            await session.close()
            await conn.close()


async def main() -> None:
    configure_logging("console", "warning")
    await with_statement_counts("portex-ledger-bench-", run_ledger_bench)


if __name__ == "__main__":
    asyncio.run(main())
