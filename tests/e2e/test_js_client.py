"""The JavaScript client (clients/js) against real `portex-pay serve` processes.

The client's own tests are node's built-in test runner (`clients/js/test/*.test.js`); this test
starts what they need and runs them: a service on a database of its own with an application
selling one catalog item (webhook mode, so the fake Bot API's payments reach it), a second replica
with a per-user edge limit of a burst of 2 (for 429 and Retry-After), initData signed by the
application's bot for three users, and the fake Bot API, which answers from this test's event loop
while node runs. Node must exit 0 and its TAP summary must count every test as passed: a run that
found no test, or skipped one, fails.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from pathlib import Path

from portex_pay.adapters.postgres.catalog import CatalogRepository
from portex_pay.adapters.postgres.pool import connect
from portex_pay.domain.catalog import CatalogItem
from portex_pay_devtools.fake_bot_api import FakeBotApi
from tests.e2e.conftest import ServerFactory
from tests.integration.test_edge import signed_init_data

CLIENT_DIR = Path(__file__).resolve().parents[2] / "clients" / "js"
TEST_FILES = sorted(str(path.relative_to(CLIENT_DIR)) for path in CLIENT_DIR.glob("test/*.test.js"))
EXPECTED_TESTS = 10  # the test() calls in clients/js/test/portex-pay.test.js
ITEM = CatalogItem(key="book", amount=7)
USERS = {"ALICE": 61_001, "BOB": 61_002, "CAROL": 61_003}
NODE_TIMEOUT = 45.0  # below pytest-timeout's 60 s: node is then killed, never left running


def tap_summary(output: str) -> dict[str, int]:
    """The closing counts of node's TAP reporter (`# tests 10`, `# pass 10`, ...)."""
    return {name: int(count) for name, count in re.findall(r"^# (\w+) (\d+)$", output, re.M)}


async def run_node(env: dict[str, str]) -> tuple[int, str]:
    node = shutil.which("node")
    assert node is not None, "node is missing: `make test` installs Debian's nodejs"
    process = await asyncio.create_subprocess_exec(
        node,
        "--test",
        "--test-reporter=tap",
        *TEST_FILES,
        cwd=CLIENT_DIR,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # Awaited, not waited on: the fake Bot API runs in this event loop and must answer.
        output, _ = await asyncio.wait_for(process.communicate(), NODE_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"node --test did not finish in {NODE_TIMEOUT} s") from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_js_client_tests_pass_against_a_running_service(
    isolated, start_server: ServerFactory, fake_telegram: FakeBotApi
) -> None:
    dsn, create_app = isolated
    # Limits high enough that polling for a webhook never meets them; the second replica's low.
    server = await start_server(
        DATABASE_URL=dsn, PORTEX_EDGE_USER_RATE="1000", PORTEX_EDGE_USER_BURST="1000"
    )
    limited = await start_server(
        DATABASE_URL=dsn, PORTEX_EDGE_USER_RATE="0.01", PORTEX_EDGE_USER_BURST="2"
    )
    app = await create_app(updates="webhook", public_url=f"http://127.0.0.1:{server.http_port}")
    conn = await connect(dsn)
    try:
        assert await CatalogRepository(conn).put(uuid.UUID(app.id), ITEM)
    finally:
        await conn.close()
    assert TEST_FILES == ["test/portex-pay.test.js"]

    code, output = await run_node(
        {
            "PORTEX_TEST_ENDPOINT": f"http://127.0.0.1:{server.http_port}",
            "PORTEX_TEST_LIMITED_ENDPOINT": f"http://127.0.0.1:{limited.http_port}",
            "PORTEX_TEST_APP_ID": app.id,
            "PORTEX_TEST_FAKE_TELEGRAM": fake_telegram.base_url,
            "PORTEX_TEST_ITEM": ITEM.key,
            "PORTEX_TEST_ITEM_PRICE": str(ITEM.amount),
            **{
                f"PORTEX_TEST_INIT_DATA_{name}": signed_init_data(app.bot_token, user)
                for name, user in USERS.items()
            },
        }
    )

    summary = tap_summary(output)
    assert code == 0, output
    assert summary.get("tests") == EXPECTED_TESTS, output
    assert summary.get("pass") == EXPECTED_TESTS, output
    assert (summary.get("fail"), summary.get("skipped"), summary.get("todo")) == (0, 0, 0), output
