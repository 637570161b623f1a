"""One process per core (`python -m bench workers`): QueryOrder under h2load against `serve
--workers 1` and `serve --workers 2` on the same database, in alternating rounds, with where the
machine's CPU went during each run: the serving processes (supervisor and workers), PostgreSQL,
the client (h2load) and anything else. The issue's goal: two workers on two cores at least 1.2x
one worker, measured in the same run.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench import summary
from bench.calls import (
    ROUNDS,
    Service,
    grpc_check,
    grpc_run,
    open_shop,
    pay_request,
    start_serve,
    stop,
)
from bench.h2load import LoadResult
from bench.serving import cluster_cpu_seconds, cpu_seconds, machine_busy_seconds, process_tree
from portex.payment.v1 import payment_pb2
from portex_pay.adapters.postgres.pool import connect
from portex_pay.adapters.telegram.client import new_session
from portex_pay_devtools.fake_bot_api import FakeBotApi


@dataclass
class Runs:
    """One server's runs: their results and the CPU seconds each part used in each."""

    workers: int
    results: list[LoadResult] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)


def _tree_cpu(service: Service) -> float:
    return sum(cpu_seconds(pid) for pid in process_tree(service.process.pid))


async def run_workers_bench(dsn: str, log_dir: Path) -> None:
    fake = FakeBotApi()
    await fake.start()
    session = await new_session()
    services: list[Service] = []
    conn = await connect(dsn)
    try:
        shop = await open_shop(dsn, fake, session)
        for workers in (1, 2):
            log = log_dir / f"workers-{workers}.log"
            services.append(await start_serve(dsn, fake.base_url, log, workers=workers))
        pay = pay_request(1).SerializeToString()
        first = await grpc_check(
            services[0].grpc_port, shop.key, "Pay", pay, payment_pb2.PayResponse
        )
        query = payment_pb2.QueryOrderRequest(tg_payment_id=first.tg_payment_id)
        request = query.SerializeToString()
        runs = [Runs(1), Runs(2)]
        for _ in range(ROUNDS):
            for service, run in zip(services, runs, strict=True):
                await grpc_check(
                    service.grpc_port, shop.key, "QueryOrder", request, payment_pb2.Order
                )
                before = (
                    _tree_cpu(service),
                    await cluster_cpu_seconds(conn),
                    machine_busy_seconds(),
                )
                result = await grpc_run(service.grpc_port, shop.key, "QueryOrder", request)()
                after = (
                    _tree_cpu(service),
                    await cluster_cpu_seconds(conn),
                    machine_busy_seconds(),
                )
                server, database, machine = (b - a for a, b in zip(before, after, strict=True))
                wall = result.client_wall
                run.results.append(result)
                run.cpu.append(
                    {
                        "serve": server / wall,
                        "PostgreSQL": database / wall,
                        "client": result.client_cpu / wall,
                        "other": max(0.0, machine - server - database - result.client_cpu) / wall,
                    }
                )
    finally:
        await conn.close()
        for service in services:
            await stop(service.process)
        await session.close()
        await fake.stop()
    _print(runs)


def _print(runs: list[Runs]) -> None:
    print(
        f"\nworkers: QueryOrder under h2load, serve --workers 1 vs --workers 2, {ROUNDS} "
        "alternating rounds; CPU in cores (CPU seconds / wall seconds of each run)"
    )
    rates = {}
    for run in runs:
        rate = statistics.median(r.rate for r in run.results)
        rates[run.workers] = rate
        cores = {k: statistics.median(c[k] for c in run.cpu) for k in run.cpu[0]}
        split = "  ".join(f"{name} {value:.2f}" for name, value in cores.items())
        p99 = statistics.median(r.p99_ms for r in run.results)
        bound = "  client-bound" if any(r.client_bound for r in run.results) else ""
        print(
            f"  {run.workers} worker(s): {rate:7.0f}/s  p99 {p99:6.1f} ms   cores: {split}{bound}"
        )
    ratios = [
        two.rate / one.rate for one, two in zip(runs[0].results, runs[1].results, strict=True)
    ]
    print(f"  2 workers / 1 worker: x{statistics.median(ratios):.2f} (goal >= 1.2)")
    summary.add(
        "workers", "QueryOrder, 2 workers / 1", f"x{statistics.median(ratios):.2f}", ">= x1.2"
    )
