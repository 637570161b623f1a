"""The service's footprint (`python -m bench footprint`): how long `portex-pay serve` takes from
its start to answering SERVING on the gRPC health service, and the idle memory (RSS) of every
process it runs, measured once it has been idle for a few seconds.

Start-up counts what an operator waits for: the interpreter, the imports, the pool, migrations
already applied (a first start also applies them), both ports listening. The issue's bounds:
start-up at most 2 s, idle RSS at most 80 MB per worker. The service's own modules are compiled to
bytecode first, as an installed package's are (pip compiles them at install): from an editable
checkout under PYTHONDONTWRITEBYTECODE (the Dockerfile's and this machine's environment) every
process would otherwise compile all of them again at each start, about 0.3 s of CPU each.
"""

from __future__ import annotations

import asyncio
import compileall
import os
import subprocess
import sys
import time
from pathlib import Path

import portex.payment.v1
import portex_pay
from bench import summary
from bench.serving import DATA_KEY, free_port, process_tree, wait_serving

STARTS = 3
IDLE_SECONDS = 3.0
MIB = 1024 * 1024


def _serve_env(dsn: str, grpc_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTEX_")}
    return {
        **env,
        "PORTEX_UVLOOP": os.environ.get("PORTEX_UVLOOP", "true"),
        "DATABASE_URL": dsn,
        "PORTEX_PAYLOAD_SECRET": "bench-" + "f" * 32,
        "PORTEX_DATA_KEY": DATA_KEY,
        "PORTEX_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        "PORTEX_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "PORTEX_TELEGRAM_API_URL": "http://127.0.0.1:9",
        "PORTEX_TELEGRAM_POLLERS": "false",
        "PORTEX_LOG_FORMAT": "json",
    }


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def run_footprint_bench(dsn: str, log_dir: Path) -> None:
    """One worker, then two (a supervisor and its workers)."""
    print(f"\nfootprint ({STARTS} starts; goals: start-up <= 2 s, idle RSS <= 80 MB per worker)")
    for package in (portex_pay, portex.payment.v1):
        for folder in package.__path__:
            compileall.compile_dir(folder, quiet=1)
    for workers in ("1", "2"):
        for name, value in await _footprint(dsn, log_dir, "--workers", workers):
            print(f"  {name:44s} {value}")
            goal = "<= 2 s" if "start-up" in name else "<= 80 MB a worker"
            summary.add("footprint", name, value, goal)


async def _footprint(dsn: str, log_dir: Path, *args: str) -> list[tuple[str, str]]:
    """Starts `serve` (with `args`) STARTS times; the figures."""
    times: list[float] = []
    rss: list[int] = []
    for attempt in range(STARTS):
        port = free_port()
        with (log_dir / f"footprint-{attempt}.log").open("wb") as log:
            started = time.monotonic()
            process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                [sys.executable, "-m", "portex_pay", "serve", *args],
                env=_serve_env(dsn, port),
                stdout=log,
                stderr=log,
            )
        try:
            await wait_serving(port, deadline=started + 30, interval=0.01)
            times.append(time.monotonic() - started)
            await asyncio.sleep(IDLE_SECONDS)
            rss = [_rss(pid) for pid in process_tree(process.pid)]
        finally:
            process.terminate()
            await asyncio.to_thread(process.wait, 30)
    label = " ".join(["serve", *args])
    rows = [
        (f"{label}: start-up to SERVING", f"{min(times):.2f} s best, {max(times):.2f} s worst"),
        (
            f"{label}: idle RSS per process",
            ", ".join(f"{value / MIB:.0f} MB" for value in rss)
            + (" (the supervisor first)" if len(rss) > 1 else ""),
        ),
    ]
    return rows
