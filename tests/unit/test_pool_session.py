"""The pool hands connections back without a reset (adapters/postgres/pool.py `_keep_session`):
safe only while no code leaves session state on a pool connection. This scans the server's SQL
and calls for what would: LISTEN, a session-level SET, a session advisory lock, a cursor that
outlives its transaction, a prepared statement or temporary table of our own, a notification
callback. The two places that need one use a connection of their own (named below, with why).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import portex_pay

SERVER = Path(portex_pay.__file__).parent

# In SQL text (string literals, docstrings left out). Keywords in capitals, as all the server's
# SQL is written, so that prose ("cannot listen on", "set PORTEX_...") does not count.
_SQL_PATTERNS = {
    "LISTEN": re.compile(r"\bLISTEN\b"),
    # A SET opening a statement, other than SET LOCAL / SET TRANSACTION ("UPDATE t SET" does not
    # open one).
    "session SET": re.compile(r"(?:\A|;)\s*SET\s+(?!LOCAL\b|TRANSACTION\b)"),
    "set_config": re.compile(r"\bset_config\s*\(", re.I),
    # Session-level advisory locks (the _xact_ ones end with their transaction).
    "session advisory lock": re.compile(r"\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.I),
    "cursor": re.compile(r"\bDECLARE\b[\s\S]*\bCURSOR\b"),
    "PREPARE": re.compile(r"(?:\A|;)\s*PREPARE\s"),
    "temporary table": re.compile(r"\bCREATE\s+(?:LOCAL\s+|GLOBAL\s+)?TEMP(?:ORARY)?\b"),
}
# Method calls that leave state on a connection. (asyncpg's own cursors live inside a
# transaction, and its prepared statements are its statement cache's, which the default reset
# did not touch either.)
_CALLS = {"add_listener", "add_log_listener"}

# Where it is allowed, and why: neither runs on a pool connection.
ALLOWED = {
    # migrate() locks on the connection of `wait_for_database`/`connect`, closed afterwards.
    ("adapters/postgres/migrations.py", "session advisory lock"),
    # The event listener's own connection (asyncpg.connect), outside the pool.
    ("adapters/postgres/listener.py", "add_listener"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def session_state_uses(source: str) -> set[str]:
    """What in `source` (Python) would leave session state on the connection it runs on."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings:
                continue
            found |= {name for name, rx in _SQL_PATTERNS.items() if rx.search(node.value)}
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _CALLS
        ):
            found.add(node.func.attr)
    return found


def test_the_scan_finds_what_a_reset_would_have_undone() -> None:
    """The patterns catch each kind, and not an UPDATE's SET, SET LOCAL or an xact lock."""
    assert session_state_uses('q = "LISTEN portex_events"') == {"LISTEN"}
    assert session_state_uses('q = "SET statement_timeout = 5"') == {"session SET"}
    assert session_state_uses('q = "SELECT 1; SET search_path TO x"') == {"session SET"}
    assert session_state_uses('q = "SELECT set_config($1, $2, false)"') == {"set_config"}
    assert session_state_uses('q = "SELECT pg_advisory_lock(1)"') == {"session advisory lock"}
    assert session_state_uses('q = "SELECT pg_try_advisory_lock(1)"') == {"session advisory lock"}
    assert session_state_uses('q = "DECLARE c CURSOR WITH HOLD FOR SELECT 1"') == {"cursor"}
    assert session_state_uses('q = "CREATE TEMP TABLE t (x int)"') == {"temporary table"}
    assert session_state_uses("conn.add_listener('c', f)") == {"add_listener"}
    harmless = '''
def f():
    """LISTEN and SET x = 1 in a docstring are prose."""
    a = "UPDATE orders\\n    SET state = $1 WHERE id = $2"
    b = "SET LOCAL statement_timeout = 5"
    c = "SELECT pg_advisory_xact_lock(1)"
    d = "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"
    e = "cannot listen on port"
'''
    assert session_state_uses(harmless) == set()


def test_no_pool_connection_is_left_with_session_state() -> None:
    found = set()
    for path in sorted(SERVER.rglob("*.py")):
        relative = path.relative_to(SERVER).as_posix()
        for use in session_state_uses(path.read_text(encoding="utf-8")):
            found.add((relative, use))
    unexpected = found - ALLOWED
    assert not unexpected, (
        "session state on a connection: the pool no longer resets connections on release "
        f"(adapters/postgres/pool.py), so keep it off pool connections: {sorted(unexpected)}"
    )
    # The allowances still name real uses (a stale one would hide nothing, but mislead).
    assert found >= ALLOWED
