"""Browser fixtures: a real `portex-pay dev` (its Telegram sandbox and the demo Mini App) on a
database of its own, and Debian's chromium driven by Playwright (never a downloaded browser:
`make test` installs the `chromium` package when it is missing)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.conftest import _fresh_database_on, free_port
from tests.e2e.conftest import ServerProcess, start_dev

SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / ".data" / "browser-artefacts"
# The page waits on the service and the sandbox; generous, since CI machines are shared.
PAGE_TIMEOUT_MS = 20_000
expect.set_options(timeout=PAGE_TIMEOUT_MS)


@dataclass(frozen=True)
class DemoServer:
    """A running `portex-pay dev`: its page, the dev application and the gRPC address."""

    page_url: str
    http_origin: str
    grpc_target: str
    application_id: str
    api_key: str
    process: ServerProcess


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    return found


@pytest.fixture(scope="session")
def demo_database(database_url: str) -> Iterator[str]:
    """A database of its own: `dev` makes its application there, apart from the other tests'."""
    yield from _fresh_database_on(database_url)


@pytest.fixture(scope="session")
async def demo_server(
    demo_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[DemoServer]:
    workdir = tmp_path_factory.mktemp("demo")  # `dev` keeps its .data here
    grpc_port, http_port = free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PORTEX_TELEGRAM_API_URL", "PORTEX_PAYLOAD_SECRET", "PORTEX_DEV_BOT_TOKEN")
    }
    env.update(
        DATABASE_URL=demo_database,
        PORTEX_GRPC_ADDR=f"127.0.0.1:{grpc_port}",
        PORTEX_HTTP_ADDR=f"127.0.0.1:{http_port}",
        PORTEX_SANDBOX_ADDR=f"127.0.0.1:{free_port()}",
        PORTEX_LOG_FORMAT="json",
        # One user buys, cancels and resumes across the tests within seconds: the edge's
        # per-user limit (20 requests per 4 s) would refuse some; limits are tested elsewhere.
        PORTEX_EDGE_USER_RATE="1000",
        PORTEX_EDGE_USER_BURST="4000",
    )
    server = await start_dev(workdir, env, workdir / "dev.log")
    try:
        banner = server.log_text()
        application_id = next(
            line.split()[-1]
            for line in banner.splitlines()
            if line.strip().startswith("application id")
        )
        yield DemoServer(
            page_url=f"http://127.0.0.1:{http_port}/demo/",
            http_origin=f"http://127.0.0.1:{http_port}",
            grpc_target=server.target,
            application_id=application_id,
            api_key=(workdir / ".data" / "dev-api-key").read_text().strip(),
            process=server,
        )
    finally:
        server.kill()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Browser, demo_server: DemoServer) -> AsyncIterator[Page]:
    """The demo page in a fresh browser context (its own localStorage), ready for user 42."""
    context = await browser.new_context()
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    opened = await context.new_page()
    try:
        await opened.goto(demo_server.page_url)
        await opened.wait_for_selector("body[data-user='42']")
        yield opened
    finally:
        await context.close()
