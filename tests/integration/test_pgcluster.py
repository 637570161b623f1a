"""PgCluster against real PostgreSQL servers in temporary directories.

initdb is the slow step, so one ephemeral cluster is shared by the module and the tests that stop
and restart it leave it running again; only the destroy test pays for a second initdb.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from portex_pay.devtools import pgcluster
from portex_pay.devtools.pgcluster import (
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
    monkeypatch.setattr(pgcluster, "_pgserver_bindir", lambda: None)
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


def _unused_port(*, exclude: int) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port != exclude:
            return port
