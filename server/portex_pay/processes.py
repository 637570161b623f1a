"""`portex-pay serve --workers N`: N processes (one per core by default) sharing the gRPC and HTTP
ports, under a small supervisor.

With N > 1, `serve` is the supervisor: it checks that nothing listens on the two addresses and
holds their ports for the workers (a socket bound with SO_REUSEPORT that never listens: nobody else
can take the port, a port 0 becomes one concrete free port for every worker and every restart),
starts N workers at once and meanwhile applies the migrations (if that fails, it stops the workers
and exits 1, as a single process would). Each worker is today's single-process `serve` (its own
event loop via `cli.run_loop`, its own asyncpg pool, event hub and listener, background jobs) with
SO_REUSEPORT on both servers, so the kernel spreads new connections across them; like a single
process it applies the migrations before it serves, under their advisory lock
(adapters/postgres/migrations.py), so no worker serves an old schema and whichever comes first
applies them while the others wait and find nothing to do. Start-up is what an operator waits
for, so the supervisor stays light: it imports the settings, this module and the migration runner
(asyncpg), never gRPC, aiohttp or the service (`cli.py` imports those only for the commands that
need them), and its workers import while it checks the migrations.
Nothing is shared in memory: the jobs' work is claimed in PostgreSQL (`FOR UPDATE SKIP LOCKED`,
leases owned by the replica id, which carries the worker's pid), so N workers are N replicas that
happen to share a host. Workers are fresh interpreters (`python -m portex_pay serve
--worker-index I`), not forks: gRPC's core does not survive a fork once it has started its
threads (grpc's fork-support notes), and a new process owes nothing to what the supervisor
imported; the supervisor creates no gRPC object at all. A worker's stdin is a pipe from the
supervisor: when the supervisor dies, even by SIGKILL, the pipe reaches end-of-file and the worker
shuts down gracefully, so no worker outlives it (portable, unlike Linux's PR_SET_PDEATHSIG, and
graceful). SIGTERM or SIGINT to the supervisor is forwarded to every worker as SIGTERM (a worker
still starting dies of it at once instead of tracing a KeyboardInterrupt); each shuts down as a
single process does (PORTEX_SHUTDOWN_GRACE), the supervisor waits for them and exits 0. A worker
that exits while the supervisor is not stopping (killed, crashed) is logged as a warning with its
exit code or signal and started again after 1 s, 2 s, 4 s, ... at most 30 s (1 s again once it
had run 60 s), the background jobs' backoff (service/worker.py).
With PORTEX_METRICS_ADDR the supervisor holds that port too and gives the workers a fresh
directory of its own in PROMETHEUS_MULTIPROC_DIR (removed when it exits; one left by an earlier
run would add its dead processes' gauges): prometheus-client's multiprocess mode, in which each
worker writes its values to files there and a scrape, whichever worker it reaches, adds up all
of them (portex_pay/metrics.py). A worker that exits has its live gauges' files removed
(`mark_process_dead`); its counters stay, so totals never go down when it is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog

from portex_pay.adapters.postgres.migrations import apply_migrations
from portex_pay.config import Settings
from portex_pay.domain.retry import FAILING_WINDOW, RESTART_BASE, RESTART_CAP, backoff_seconds

log = structlog.get_logger(__name__)

# A worker still running this long after the stop was forwarded is killed (SIGKILL): its own
# shutdown is bounded by twice the grace (jobs, then in-flight RPCs) plus closing the pool.
KILL_MARGIN = 15.0


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, which a container's cpuset narrows),
    else the machine's count: `--workers`' default."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def hold_port(variable: str, addr: str) -> tuple[socket.socket, str]:
    """Checks that nothing listens on `addr` (a second `serve` on a busy port fails loudly, as a
    single process does, rather than joining the other's workers), then holds its port for the
    workers: a socket bound with SO_REUSEPORT that never listens. Returns it, and the address
    with its port made concrete (a port 0: a free one). ConnectionError when it cannot."""
    host, _, port = addr.rpartition(":")
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            host.strip("[]"), int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        if int(port) != 0:
            with socket.socket(family, kind, proto) as probe:
                # SO_REUSEADDR, as the servers bind: a closed connection in TIME_WAIT is no user.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        held = socket.socket(family, kind, proto)
        try:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            held.bind(sockaddr)
        except OSError:
            held.close()
            raise
    except OSError as error:
        raise ConnectionError(f"cannot listen on {variable}={addr}: {error}") from None
    return held, f"{host}:{held.getsockname()[1]}"


async def supervise_workers(settings: Settings, count: int) -> int:
    """`serve --workers N` (N > 1): holds the ports, starts N workers and meanwhile migrates,
    runs the workers until SIGTERM/SIGINT; the exit status (0: every worker stopped cleanly)."""
    with contextlib.ExitStack() as held:
        addresses = {
            "PORTEX_GRPC_ADDR": settings.grpc.addr,
            "PORTEX_HTTP_ADDR": settings.http.addr,
        }
        if settings.metrics.addr:
            addresses["PORTEX_METRICS_ADDR"] = settings.metrics.addr
        env = dict(os.environ)
        for variable, addr in addresses.items():
            sock, env[variable] = hold_port(variable, addr)
            held.callback(sock.close)
        on_exit = None
        if settings.metrics.addr:
            env[MULTIPROCESS_DIR_VARIABLE] = directory = held.enter_context(_metrics_directory())
            on_exit = _metrics_of_dead_worker(directory)
        log.info(
            "starting workers",
            workers=count,
            **{name.removeprefix("PORTEX_").lower(): env[name] for name in addresses},
        )
        workers = WorkerProcesses(
            count,
            env,
            kill_after=2 * settings.grpc.shutdown_grace + KILL_MARGIN,
            on_exit=on_exit,
        )
        return await _run_migrated(workers, settings)


# prometheus-client's multiprocess mode (portex_pay/metrics.py; not imported here, so that the
# supervisor stays light).
MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def _metrics_directory() -> Iterator[str]:
    """A fresh directory for the workers' metrics files, removed afterwards."""
    directory = tempfile.mkdtemp(prefix="portex-metrics-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _metrics_of_dead_worker(directory: str) -> Callable[[int], None]:
    def forget(pid: int) -> None:
        from prometheus_client import multiprocess  # only once a worker has exited

        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]

    return forget


async def _run_migrated(workers: WorkerProcesses, settings: Settings) -> int:
    """Runs the workers while applying the migrations beside them; when that fails, stops the
    workers and raises its error (ConnectionError: PostgreSQL unreachable; MigrationError)."""
    running = asyncio.create_task(workers.run(), name="workers")
    migrating = asyncio.create_task(
        apply_migrations(settings.db.url, settings.db.connect_timeout), name="migrations"
    )
    await asyncio.wait((running, migrating), return_when=asyncio.FIRST_COMPLETED)
    if not migrating.done():  # the workers were stopped (a signal) while it waited for the database
        migrating.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await migrating
        return await running
    if migrating.exception() is not None:
        workers.stop("the migrations failed")
        await running
    migrating.result()  # raises its error
    return await running


def worker_command(index: int) -> list[str]:
    """How a worker is started: this interpreter, `serve` as one of the workers."""
    return [sys.executable, "-m", "portex_pay", "serve", "--worker-index", str(index)]


def _exit_status(status: int) -> dict[str, Any]:
    """A process's return code for a log line: its exit code, or the signal that ended it."""
    if status < 0:
        return {"signal": signal.Signals(-status).name}
    return {"exit_code": status}


class WorkerProcesses:
    """N worker processes kept running until the stop (SIGTERM/SIGINT), then stopped."""

    def __init__(
        self,
        count: int,
        env: Mapping[str, str],
        *,
        kill_after: float,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._on_exit = on_exit  # told each exited worker's pid
        self._count = count
        self._env = dict(env)
        self._kill_after = kill_after
        self._running: dict[int, asyncio.subprocess.Process] = {}
        self._stopping = asyncio.Event()
        self._clean = True

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop, signal.Signals(signum).name)
        try:
            slots = [
                asyncio.create_task(self._keep_running(index), name=f"worker-{index}")
                for index in range(self._count)
            ]
            await asyncio.gather(*slots)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        log.info("workers stopped", clean=self._clean)
        return 0 if self._clean else 1

    def stop(self, reason: str) -> None:
        """Forwards the stop (a signal's name, or why) to every worker as SIGTERM (again on a
        second signal) and, after `kill_after` seconds, kills those still running."""
        log.info("stopping workers", reason=reason)
        if not self._stopping.is_set():
            self._stopping.set()
            asyncio.get_running_loop().call_later(self._kill_after, self._kill_stragglers)
        for process in self._running.values():
            _send(process, signal.SIGTERM)

    def _kill_stragglers(self) -> None:
        for index, process in self._running.items():
            log.warning("worker did not stop in time; killing it", worker=index, pid=process.pid)
            self._clean = False
            _send(process, signal.SIGKILL)

    async def _keep_running(self, index: int) -> None:
        """One worker's slot: starts it, and again after a backoff each time it exits, until
        the stop."""
        restarts = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                process = await asyncio.create_subprocess_exec(
                    *worker_command(index), env=self._env, stdin=asyncio.subprocess.PIPE
                )
            except OSError as error:  # out of processes or memory: a death like any other
                outcome: dict[str, Any] = {"error": str(error)}
            else:
                status = await self._wait(index, process)
                if self._stopping.is_set():
                    log.info("worker stopped", worker=index, pid=process.pid, **status)
                    # A worker stopped before its signal handler was installed dies of SIGTERM.
                    self._clean &= status in ({"exit_code": 0}, {"signal": "SIGTERM"})
                    return
                outcome = {"pid": process.pid, **status}
            if time.monotonic() - started >= FAILING_WINDOW:
                restarts = 0  # it had run a while: start the backoff again
            restarts += 1
            delay = backoff_seconds(restarts, base=RESTART_BASE, cap=RESTART_CAP)
            log.warning("worker exited; restarting", worker=index, restart_in=delay, **outcome)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _wait(self, index: int, process: asyncio.subprocess.Process) -> dict[str, Any]:
        """Waits for a started worker to exit; how it ended, for a log line."""
        self._running[index] = process
        if self._stopping.is_set():  # the stop came while it was being started
            _send(process, signal.SIGTERM)
        log.info("worker started", worker=index, pid=process.pid)
        try:
            return _exit_status(await process.wait())
        finally:
            del self._running[index]
            if self._on_exit is not None:
                self._on_exit(process.pid)


def _send(process: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited
        process.send_signal(signum)


async def serve_worker(settings: Settings) -> None:
    """One worker: today's `serve` on the ports its siblings share, until SIGTERM/SIGINT or until
    its supervisor is gone (end-of-file on stdin, the supervisor's pipe)."""
    from portex_pay.app import serve  # the service itself: only a worker imports it

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stdin = sys.stdin.fileno()

    def supervisor_gone() -> None:
        if not os.read(stdin, 4096):  # nothing is ever written: only the end matters
            loop.remove_reader(stdin)
            log.warning("the workers' supervisor is gone; stopping")
            stop.set()

    loop.add_reader(stdin, supervisor_gone)
    try:
        await serve(settings, worker=True, stop=stop)
    finally:
        loop.remove_reader(stdin)
