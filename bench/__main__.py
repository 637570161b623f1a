"""`make bench`: Pay and QueryOrder through real gRPC, PostgreSQL and the fake Bot API; then the
payment flow, the event stream, a flood of bad requests, the Bot API proxy and relay, and
ListOrders on a million orders, the Star ledger's cost per idle cycle, the statements
PostgreSQL executes per call, each hot call beside its framework's ceiling under h2load (`calls`),
Pay under a Telegram answering in 100 ms (`slowtelegram`), the payment storm beside a do-nothing
bot and the storm over 1, 2 and 4 replicas on one database, QueryOrder on one worker and on
two (`workers`), and serve's start-up and memory (`footprint`) (bench/*.py).
`python -m bench NAME ...` runs only those named (grpc, payments, stream, flood, botapi, orders,
footprint, ledger, roundtrips, calls, slowtelegram, storm, replicas, workers).

Everything runs on this machine: a throwaway PostgreSQL cluster, the fake Bot API and two service
instances in one process, which differ only in the API-key cache (TTL 5 s vs 0, i.e. a database
lookup on every call). Rounds alternate between the two so that machine noise hits both alike;
the figures that matter are the ratios printed at the end.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from bench import uvloop_setting
from bench.botapi import run_botapi_bench
from bench.calls import run_calls_bench, run_slow_telegram_bench
from bench.edge import EdgeClient, edge_calls
from bench.flood import run_flood_bench
from bench.footprint import run_footprint_bench
from bench.ledger import main as run_ledger_bench
from bench.orders import run_orders_bench
from bench.payments import run_payments_bench
from bench.round_trips import main as run_round_trips_bench
from bench.serving import DATA_KEY, DATA_KEYS
from bench.storm import run_replicas_bench, run_storm_bench
from bench.stream import run_stream_bench
from bench.summary import print_summary
from bench.workers import run_workers_bench
from portex.payment.v1 import payment_pb2, payment_pb2_grpc
from portex_pay.adapters.telegram.client import BotApiClient, new_session
from portex_pay.app import PortexApp, application_admin
from portex_pay.cli import event_loop_factory, run_loop
from portex_pay.config import Settings
from portex_pay.domain.catalog import CatalogItem
from portex_pay.logging import configure_logging
from portex_pay_devtools.fake_bot_api import FakeBotApi
from portex_pay_devtools.pgcluster import PgCluster

CONCURRENCY = 16
ROUNDS = 3
QUERIES_PER_ROUND = 1500
PAYS_PER_ROUND = 300


async def measure(
    name: str, calls: int, call: Callable[[int], Awaitable[object]]
) -> tuple[float, list[float]]:
    """Runs `calls` calls with CONCURRENCY workers; returns (calls per second, latencies)."""
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for index in counter:
            started = time.perf_counter()
            await call(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return calls / (time.perf_counter() - started), latencies


def summary(rates: list[float], latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[int(len(ordered) * 0.99)] * 1000
    return f"{statistics.median(rates):8.0f}/s   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"


async def main(names: list[str]) -> None:
    # The canonical per-RPC line would dominate the measurement; keep warnings only.
    configure_logging("json", "warning")
    benches: dict[str, Callable[[str, Path], Awaitable[None]]] = {
        "grpc": lambda dsn, _: run(dsn),
        "payments": run_payments_bench,
        "stream": run_stream_bench,
        "flood": run_flood_bench,
        "botapi": run_botapi_bench,
        "orders": run_orders_bench,
        "footprint": run_footprint_bench,
        # Its own cluster: counting statements needs pg_stat_statements loaded at start.
        "ledger": lambda _dsn, _tmp: run_ledger_bench(),
        # Its own cluster too, for pg_stat_statements.
        "roundtrips": lambda _dsn, _tmp: run_round_trips_bench(),
        # Processes of their own (serve, the ceilings) driven by h2load.
        "calls": run_calls_bench,
        "slowtelegram": run_slow_telegram_bench,
        "storm": run_storm_bench,
        "replicas": run_replicas_bench,
        "workers": run_workers_bench,
    }
    unknown = set(names) - set(benches)
    if unknown:
        raise SystemExit(f"unknown bench {', '.join(sorted(unknown))}; names: {', '.join(benches)}")
    with tempfile.TemporaryDirectory() as tmp:
        cluster = PgCluster(Path(tmp) / "pg", ephemeral=True)
        cluster.start()
        try:
            for name, bench in benches.items():
                if not names or name in names:
                    await bench(cluster.dsn, Path(tmp))
        finally:
            cluster.destroy()
    print_summary()


async def run(dsn: str) -> None:
    fake = FakeBotApi()
    await fake.start()
    base = Settings().replace(
        db_url=dsn,
        payload_secret="bench-" + "s" * 32,
        data_key=DATA_KEY,
        grpc_addr="127.0.0.1:0",
        http_addr="127.0.0.1:0",
        telegram_api_url=fake.base_url,
        log_format="json",
        log_level="warning",
        # Measure the edge's work, not its per-replica rate limits.
        edge_app_rate=1e9,
        edge_app_burst=10**9,
        edge_user_rate=1e9,
        edge_user_burst=10**9,
    )
    cached, uncached = PortexApp(base), PortexApp(base.replace(auth_cache_ttl=0.0))
    await cached.start()
    await uncached.start()
    session = await new_session()
    try:
        token = f"{uuid.uuid4().int % 10**9 + 10**9}:{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}"
        fake.add_bot(token)
        admin = application_admin(
            cached.pool,
            BotApiClient(session, fake.base_url, 5),
            max_amount=cached.settings.payments.max_amount,
            data_keys=DATA_KEYS,
        )
        application, key = await admin.create_app(f"bench-{uuid.uuid4().hex[:8]}", token)
        await admin.set_item(application.id, CatalogItem(key="item", amount=5, title="Book"))
        metadata = (("authorization", f"Bearer {key}"),)
        results: dict[str, tuple[list[float], list[float]]] = {}
        for round_number in range(ROUNDS):
            for label, app in (("cache", cached), ("no cache", uncached)):
                async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                    stub = payment_pb2_grpc.PaymentServiceStub(channel)
                    order = await stub.Pay(
                        payment_pb2.PayRequest(
                            tg_use_id=1, amount=1, label="l", title="t", description="d"
                        ),
                        metadata=metadata,
                    )
                    query = payment_pb2.QueryOrderRequest(tg_payment_id=order.tg_payment_id)

                    async def query_order(
                        _: int,
                        stub: payment_pb2_grpc.PaymentServiceAsyncStub = stub,
                        query: payment_pb2.QueryOrderRequest = query,
                    ) -> object:
                        return await stub.QueryOrder(query, metadata=metadata)

                    tag = f"{label.replace(' ', '-')}-{round_number}"

                    async def pay(
                        index: int,
                        stub: payment_pb2_grpc.PaymentServiceAsyncStub = stub,
                        tag: str = tag,
                    ) -> object:
                        return await stub.Pay(
                            payment_pb2.PayRequest(
                                tg_use_id=1 + index, amount=5, label="item", title="Book",
                                description="Magic", request_id=f"{tag}-{index}",
                            ),
                            metadata=metadata,
                        )  # fmt: skip

                    replay = payment_pb2.PayRequest(
                        tg_use_id=7, amount=5, label="item", title="Book", description="Magic",
                        request_id=f"replay-{tag}",
                    )  # fmt: skip
                    await stub.Pay(replay, metadata=metadata)

                    async def pay_replay(
                        _: int,
                        stub: payment_pb2_grpc.PaymentServiceAsyncStub = stub,
                        replay: payment_pb2.PayRequest = replay,
                    ) -> object:
                        return await stub.Pay(replay, metadata=metadata)

                    edge = EdgeClient(session, app.http_port or 0, str(application.id))
                    (get_name, get), (create_name, create) = await edge_calls(
                        edge,
                        token,
                        first_user=1 + 100_000 * (2 * round_number + (label == "cache")),
                        users=PAYS_PER_ROUND,
                    )
                    for name, calls, fn in (
                        ("QueryOrder", QUERIES_PER_ROUND, query_order),
                        (get_name, QUERIES_PER_ROUND, get),
                        ("Pay (new order + createInvoiceLink)", PAYS_PER_ROUND, pay),
                        (create_name, PAYS_PER_ROUND, create),
                        ("Pay (idempotent replay)", QUERIES_PER_ROUND, pay_replay),
                    ):
                        rate, latencies = await measure(name, calls, fn)
                        rates, all_latencies = results.setdefault(f"{name} [{label}]", ([], []))
                        rates.append(rate)
                        all_latencies.extend(latencies)
        print(f"\nportex-pay bench: {ROUNDS} alternating rounds, {CONCURRENCY} concurrent callers")
        print(f"application {application.id}\n")
        for name, (rates, latencies) in results.items():
            print(f"  {name:52s} {summary(rates, latencies)}")
        print()
        for grpc_name, edge_name in (
            ("QueryOrder", "edge getTgPayment"),
            ("Pay (new order + createInvoiceLink)", "edge createTgPayment (new order)"),
        ):
            for label in ("cache", "no cache"):
                ratio = statistics.median(results[f"{edge_name} [{label}]"][0]) / statistics.median(
                    results[f"{grpc_name} [{label}]"][0]
                )
                print(f"  {edge_name} / {grpc_name} [{label}]: x{ratio:.2f} throughput")
        for name in ("QueryOrder", "Pay (idempotent replay)"):
            with_cache = statistics.median(results[f"{name} [cache]"][0])
            without = statistics.median(results[f"{name} [no cache]"][0])
            print(f"  {name}: API-key cache speed-up x{with_cache / without:.2f}")
    finally:
        await session.close()
        await cached.stop()
        await uncached.stop()
        await fake.stop()


if __name__ == "__main__":
    # The loop `serve` runs on (PORTEX_UVLOOP, default on): the service's figures are its.
    uvloop = uvloop_setting()
    print(f"event loop: {'uvloop' if event_loop_factory(uvloop) else 'asyncio'}")
    run_loop(main(sys.argv[1:]), uvloop=uvloop)
