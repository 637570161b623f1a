"""The payment storm (`python -m bench storm`) and its scaling over replicas on one database
(`python -m bench replicas`).

A storm: PAYERS users pay at once, each one invoice after another: the pre_checkout_query goes to
the bot's webhook and waits for answerPreCheckoutQuery, then successful_payment goes to the webhook
and the next payment starts once it has been acknowledged (for portex-pay: committed). This process
plays Telegram with the fake Bot API over real HTTP (as bench/payments.py does); each payer has a
bot of its own, because Telegram delivers one bot's updates in order and different bots' in
parallel. The orders and their invoice links are made beforehand, in SQL and with the fake's
createInvoiceLink, outside the measured time.

`storm`: portex-pay (`portex-pay serve` in a process of its own, webhook mode) beside a do-nothing
bot (bench/nothing_bot.py, its own process: approves every checkout the same way portex-pay does,
by an answerPreCheckoutQuery call, and stores nothing), driven the same way, in alternating
rounds. Pre-checkout latency is the fake's: the update queued for delivery (at once: each bot's
queue is empty then) to answerPreCheckoutQuery received. CPU seconds come from /proc: the server's
process, PostgreSQL's (every process of the cluster) and this driver's (the fake and the payers).
Afterwards PostgreSQL is asked whether anything was lost or doubled: approved checkouts = paid
orders = payment rows = `order.paid` events.

`replicas`: the same storm against 1, 2 and 4 `portex-pay serve` processes on one database, the
bots spread over them (Telegram delivers each bot to one URL), with the CPU split between the
replicas, PostgreSQL and the driver: when PostgreSQL's share stops falling and throughput stops
growing, one PostgreSQL is the limit (README, "Scaling").
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg

from bench import summary
from bench.serving import (
    DATA_KEYS,
    ServiceProcess,
    bench_apps,
    bot_token,
    cluster_cpu_seconds,
    cpu_seconds,
    free_port,
    insert_orders,
    machine_busy_seconds,
    percentile,
)
from portex_pay.adapters.postgres.migrations import migrate
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import application_admin
from portex_pay.domain.pay import sign_invoice_payload
from portex_pay_devtools.fake_bot_api import FakeBotApi

SECRET = "bench-storm-payload-secret-" + "x" * 32
PAYERS = 16  # concurrent paying users, one bot each
ROUNDS = 3  # per side, alternating
PAYMENTS_PER_PAYER = 50  # per round: 800 payments a round
REPLICA_COUNTS = (1, 2, 4)
REPLICA_PAYMENTS_PER_PAYER = 40
# Unmeasured payments per payer first, on each side and after each start of servers: connections
# to open, statements to prepare, caches to fill.
WARMUP_PER_PAYER = 3
GOAL_RATIO = 0.8
GOAL_P99_MS = 20.0


@dataclass
class Bot:
    """A payer's bot and the invoices (link, paying user) it has still to be paid."""

    token: str
    invoices: Iterator[tuple[str, int]]


@dataclass
class Round:
    payments: int
    seconds: float
    approved: int
    latencies: list[float]  # pre-checkout answer, ms
    cpu: dict[str, float]  # CPU seconds by process group


@dataclass
class Side:
    rounds: list[Round] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [r.payments / r.seconds for r in self.rounds]

    def latencies(self) -> list[float]:
        return [latency for r in self.rounds for latency in r.latencies]

    def cpu_per_payment_ms(self, group: str) -> float:
        payments = sum(r.payments for r in self.rounds)
        return 1000 * sum(r.cpu.get(group, 0.0) for r in self.rounds) / payments

    def cores(self, group: str) -> float:
        """Cores kept busy on average over the rounds: CPU seconds / wall seconds."""
        return sum(r.cpu.get(group, 0.0) for r in self.rounds) / sum(r.seconds for r in self.rounds)


class CpuMeter:
    """CPU seconds per group of processes (pids), PostgreSQL's cluster, this driver, and
    `others`: everything else the machine ran meanwhile (on a shared machine, its other load)."""

    def __init__(self, conn: asyncpg.Connection, groups: dict[str, list[int]]) -> None:
        self._conn = conn
        self._groups = groups

    async def read(self) -> dict[str, float]:
        reading = {
            name: sum(cpu_seconds(pid) for pid in pids) for name, pids in self._groups.items()
        }
        reading["postgres"] = await cluster_cpu_seconds(self._conn)
        reading["driver"] = cpu_seconds(os.getpid())
        reading["others"] = machine_busy_seconds() - sum(reading.values())
        return reading


async def storm_round(fake: FakeBotApi, bots: list[Bot], per_payer: int, meter: CpuMeter) -> Round:
    """Every bot's payer pays `per_payer` of its invoices, one after another, all at once."""
    latencies: list[float] = []
    approved = 0

    async def payer(bot: Bot) -> None:
        nonlocal approved
        for _ in range(per_payer):
            link, user = next(bot.invoices)
            outcome = await fake.pay_invoice(link, user)
            if outcome.answer_latency is not None:
                latencies.append(outcome.answer_latency * 1000)
            approved += outcome.approved
            # successful_payment acknowledged by the webhook (portex-pay: committed).
            await fake.drain(bot.token, timeout=30)

    before = await meter.read()
    started = time.perf_counter()
    await asyncio.gather(*(payer(bot) for bot in bots))
    seconds = time.perf_counter() - started
    after = await meter.read()
    cpu = {name: after[name] - before[name] for name in after}
    return Round(len(bots) * per_payer, seconds, approved, latencies, cpu)


async def invoice_links(
    http: aiohttp.ClientSession, fake: FakeBotApi, token: str, payloads: list[str]
) -> list[str]:
    """Invoice links of 5 Stars with these payloads, from the fake's createInvoiceLink."""
    url = f"{fake.base_url}/bot{token}/createInvoiceLink"
    links: list[str] = []
    for payload in payloads:
        body = {
            "title": "Gem", "description": "A gem", "payload": payload, "currency": "XTR",
            "prices": [{"label": "item", "amount": 5}],
        }  # fmt: skip
        async with http.post(url, json=body) as response:
            links.append((await response.json())["result"])
    return links


async def our_bots(
    conn: asyncpg.Connection,
    http: aiohttp.ClientSession,
    fake: FakeBotApi,
    apps: list[tuple[Any, str, str]],
    payments_per_bot: int,
) -> list[Bot]:
    """Each application's bot with `payments_per_bot` pending orders of its own, signed as Pay
    signs them, each for a user of its own."""

    orders = [
        await insert_orders(conn, application.id, 1_000_000 * (index + 1), payments_per_bot)
        for index, (application, _, _) in enumerate(apps)
    ]

    async def one(token: str, rows: list[asyncpg.Record]) -> Bot:
        payloads = [
            sign_invoice_payload(SECRET.encode(), row["tg_payment_id"], row["amount"])
            for row in rows
        ]
        links = await invoice_links(http, fake, token, payloads)
        return Bot(token, iter(zip(links, [row["tg_use_id"] for row in rows], strict=True)))

    return list(
        await asyncio.gather(
            *(one(token, rows) for (_, _, token), rows in zip(apps, orders, strict=True))
        )
    )


async def nothing_bots(
    http: aiohttp.ClientSession, fake: FakeBotApi, port: int, secret: str, payments_per_bot: int
) -> tuple[list[Bot], dict[str, str]]:
    """PAYERS bots whose webhook is the do-nothing bot, with invoices to pay; also the bot id ->
    token map the do-nothing bot needs."""

    async def one(index: int) -> tuple[Bot, str]:
        token = bot_token()
        fake.add_bot(token)
        async with http.post(
            f"{fake.base_url}/bot{token}/setWebhook",
            json={
                "url": f"http://127.0.0.1:{port}/webhook/{token.split(':')[0]}",
                "secret_token": secret,
                "allowed_updates": ["message", "pre_checkout_query"],
            },
        ) as response:
            await response.read()
        links = await invoice_links(
            http, fake, token, [f"nothing-{index}-{n}" for n in range(payments_per_bot)]
        )
        users = range(2_000_000 * (index + 1), 2_000_000 * (index + 1) + payments_per_bot)
        return Bot(token, iter(zip(links, users, strict=True))), token

    made = await asyncio.gather(*(one(index) for index in range(PAYERS)))
    return [bot for bot, _ in made], {token.split(":")[0]: token for _, token in made}


@asynccontextmanager
async def nothing_bot_process(
    port: int, api_url: str, secret: str, tokens: dict[str, str], log_path: Path
) -> AsyncIterator[int]:
    """Runs bench/nothing_bot.py on `port` for these bots; yields its pid once it listens."""
    env = {**os.environ, "BENCH_BOT_TOKENS": json.dumps(tokens)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [sys.executable, "-m", "bench.nothing_bot", str(port), api_url, secret],
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        assert process.stdout is not None
        ready = await asyncio.to_thread(process.stdout.readline)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the do-nothing bot did not start (see {log_path})")
        yield process.pid
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)


async def lost_or_doubled(
    conn: asyncpg.Connection, app_ids: list[UUID], made: int, approved: int
) -> str:
    """The check that nothing was lost or doubled, counted in PostgreSQL, for `made` payments."""
    row = await conn.fetchrow(
        """
        SELECT (SELECT count(*) FROM orders WHERE application_id = ANY($1) AND state = 'paid'),
               (SELECT count(*) FROM payments WHERE application_id = ANY($1)),
               (SELECT count(*) FROM events
                 WHERE application_id = ANY($1) AND type = 'order.paid')
        """,
        app_ids,
    )
    assert row is not None
    paid, payments, events = row
    same = made == approved == paid == payments == events
    return (
        f"{made} payments made, {approved} approved = {paid} paid orders = "
        f"{payments} payment rows = {events} order.paid events: {'yes' if same else 'NO'}"
    )


@dataclass
class Stage:
    """What both sections set up: the fake Telegram, PostgreSQL, and our applications."""

    dsn: str
    log_dir: Path
    fake: FakeBotApi
    conn: asyncpg.Connection
    http: aiohttp.ClientSession
    apps: list[tuple[Any, str, str]]

    @property
    def app_ids(self) -> list[UUID]:
        return [application.id for application, _, _ in self.apps]

    async def serve(self, replicas: int) -> list[ServiceProcess]:
        """`replicas` servers on the one database, each bot's webhook on one of them."""
        servers = [
            ServiceProcess(self.dsn, self.fake.base_url, self.log_dir / "storm-server.log", SECRET)
            for _ in range(replicas)
        ]
        for server in servers:
            server.start()
        await asyncio.gather(*(server.wait_serving() for server in servers))
        session = await new_session()
        try:
            admin = application_admin(
                self.conn, BotApiClient(session, self.fake.base_url, 5), data_keys=DATA_KEYS
            )
            for index, (application, _, _) in enumerate(self.apps):
                await admin.register_webhook(application.id, servers[index % replicas].url)
        finally:
            await session.close()
        return servers


@asynccontextmanager
async def stage(dsn: str, log_dir: Path) -> AsyncIterator[Stage]:
    fake = FakeBotApi()
    await fake.start()
    conn = await asyncpg.connect(dsn)
    session = await new_session()
    http = aiohttp.ClientSession()
    try:
        await migrate(conn)
        admin = application_admin(
            conn, BotApiClient(session, fake.base_url, 5), data_keys=DATA_KEYS
        )
        apps = await bench_apps(admin, fake, PAYERS, "storm")
        yield Stage(dsn, log_dir, fake, conn, http, apps)
    finally:
        await http.close()
        await session.close()
        await conn.close()
        await fake.stop()


def _figures(side: Side) -> str:
    latencies = side.latencies()
    return (
        f"{statistics.median(side.rates()):7.0f}/s   pre-checkout p50 "
        f"{statistics.median(latencies):5.1f} ms  p99 {percentile(latencies, 0.99):5.1f} ms"
    )


async def run_storm_bench(dsn: str, log_dir: Path) -> None:
    async with stage(dsn, log_dir) as s:
        total = WARMUP_PER_PAYER + ROUNDS * PAYMENTS_PER_PAYER
        ours_bots = await our_bots(s.conn, s.http, s.fake, s.apps, total)
        secret = "nothing-" + "s" * 24
        port = free_port()
        others, tokens = await nothing_bots(s.http, s.fake, port, secret, total)
        [server] = await s.serve(1)
        log = log_dir / "storm-nothing-bot.log"
        try:
            async with nothing_bot_process(port, s.fake.base_url, secret, tokens, log) as bot_pid:
                meter = CpuMeter(s.conn, {"server": [server.pid], "bot": [bot_pid]})
                ours, nothing = Side(), Side()
                warm = await storm_round(s.fake, ours_bots, WARMUP_PER_PAYER, meter)
                await storm_round(s.fake, others, WARMUP_PER_PAYER, meter)
                for _ in range(ROUNDS):
                    for side, bots in ((ours, ours_bots), (nothing, others)):
                        side.rounds.append(
                            await storm_round(s.fake, bots, PAYMENTS_PER_PAYER, meter)
                        )
        finally:
            await server.stop()
        approved = warm.approved + sum(r.approved for r in ours.rounds)
        made = PAYERS * total
        check = await lost_or_doubled(s.conn, s.app_ids, made, approved)

    ratio = statistics.median(ours.rates()) / statistics.median(nothing.rates())
    p99 = percentile(ours.latencies(), 0.99)
    print(
        f"\npayment storm: {PAYERS} concurrent payers, one bot each, webhook mode; {ROUNDS} "
        f"alternating rounds of {PAYERS * PAYMENTS_PER_PAYER} payments a side"
    )
    print(f"  portex-pay        {_figures(ours)}")
    print(f"  do-nothing bot    {_figures(nothing)}")
    print(
        f"  portex-pay / do-nothing: x{ratio:.2f} (goal >= {GOAL_RATIO}); "
        f"pre-checkout p99 {p99:.1f} ms (goal <= {GOAL_P99_MS:.0f} ms)"
    )
    print(f"  nothing lost or doubled: {check}")
    summary.add(
        "storm",
        "portex-pay / do-nothing bot",
        f"x{ratio:.2f} ({statistics.median(ours.rates()):.0f}/s vs "
        f"{statistics.median(nothing.rates()):.0f}/s), pre-checkout p99 {p99:.1f} ms",
        f">= x{GOAL_RATIO}, <= {GOAL_P99_MS:.0f} ms",
    )
    summary.add("storm", "nothing lost or doubled", check)
    print(
        "  CPU ms per payment: portex-pay server "
        f"{ours.cpu_per_payment_ms('server'):.2f}, PostgreSQL "
        f"{ours.cpu_per_payment_ms('postgres'):.2f}, driver {ours.cpu_per_payment_ms('driver'):.2f}"
        f"; do-nothing bot {nothing.cpu_per_payment_ms('bot'):.2f}, driver "
        f"{nothing.cpu_per_payment_ms('driver'):.2f}"
    )
    _load_notes(ours, nothing)


def _load_notes(*sides: Side) -> None:
    """Says when the figures were bounded by the driver or disturbed by other load."""
    driver = max(side.cores("driver") for side in sides)
    if driver > 0.9:
        print(
            f"  note: the driver (fake Bot API + payers, one process) kept {driver:.2f} of a core "
            "busy: it may be what limits the faster side"
        )
    others = max(side.cores("others") for side in sides)
    if others > 0.25:
        print(
            f"  note: other processes kept up to {others:.2f} of {os.cpu_count()} cores busy"
            " during the rounds: absolute figures are low and noisy, compare ratios"
        )


async def run_replicas_bench(dsn: str, log_dir: Path) -> None:
    async with stage(dsn, log_dir) as s:
        per_bot = len(REPLICA_COUNTS) * (WARMUP_PER_PAYER + REPLICA_PAYMENTS_PER_PAYER)
        approved = 0
        bots = await our_bots(s.conn, s.http, s.fake, s.apps, per_bot)
        results: dict[int, Side] = {}
        for replicas in REPLICA_COUNTS:
            servers = await s.serve(replicas)
            try:
                meter = CpuMeter(s.conn, {"replicas": [server.pid for server in servers]})
                approved += (await storm_round(s.fake, bots, WARMUP_PER_PAYER, meter)).approved
                side = results[replicas] = Side()
                side.rounds.append(
                    await storm_round(s.fake, bots, REPLICA_PAYMENTS_PER_PAYER, meter)
                )
            finally:
                await asyncio.gather(*(server.stop() for server in servers))
        approved += sum(r.approved for side in results.values() for r in side.rounds)
        check = await lost_or_doubled(s.conn, s.app_ids, PAYERS * per_bot, approved)

    print(
        f"\nreplicas on one PostgreSQL: the storm ({PAYERS} payers, "
        f"{PAYERS * REPLICA_PAYMENTS_PER_PAYER} payments) with the bots spread over the replicas;"
        f" {os.cpu_count()} cores"
    )
    print(
        "  replicas  payments/s  pre-checkout p99 | cores busy: replicas  PostgreSQL  driver"
        "  others | CPU ms/payment: replicas  PostgreSQL | payments/s per PostgreSQL core"
    )
    for replicas, side in results.items():
        postgres_ms = side.cpu_per_payment_ms("postgres")
        summary.add(
            "replicas",
            f"{replicas} replica(s) on one PostgreSQL",
            f"{statistics.median(side.rates()):.0f}/s, PostgreSQL {side.cores('postgres'):.2f} "
            f"cores, {1000 / postgres_ms if postgres_ms else 0:.0f}/s per PostgreSQL core",
        )
        print(
            f"  {replicas:8d}  {statistics.median(side.rates()):10.0f}"
            f"  {percentile(side.latencies(), 0.99):13.1f} ms |"
            f" {side.cores('replicas'):21.2f}  {side.cores('postgres'):10.2f}"
            f"  {side.cores('driver'):6.2f}  {side.cores('others'):6.2f} |"
            f" {side.cpu_per_payment_ms('replicas'):24.2f}  {postgres_ms:10.2f} |"
            f" {1000 / postgres_ms if postgres_ms else 0:30.0f}"
        )
    print(
        "  one database's ceiling: payments/s per PostgreSQL core x the cores PostgreSQL has;"
        " replicas add throughput only while PostgreSQL has idle cores"
    )
    print(f"  nothing lost or doubled: {check}")
    _load_notes(*results.values())
