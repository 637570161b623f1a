"""The generator of the blocking client (portex_pay_devtools.unasync): the committed client.py is
what aio.py generates (the client, its retry loop and its event watch), a hand edit of it or an
edit of aio.py not carried over is caught, and the markers and checks do what they say.

Edits happen on copies in a temporary directory; the real client files are only read.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from portex_pay_devtools import unasync

PACKAGE_DIR = Path(__file__).resolve().parents[2] / unasync.PACKAGE_DIR


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    for source, target in unasync.TWINS:
        shutil.copyfile(PACKAGE_DIR / source, tmp_path / source)
        shutil.copyfile(PACKAGE_DIR / target, tmp_path / target)
    return tmp_path


def test_the_committed_blocking_client_is_what_aio_py_generates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert unasync.main(["--check", "--package-dir", str(PACKAGE_DIR)]) == 0
    assert capsys.readouterr().out == ""


def test_the_generated_client_says_so_and_is_blocking() -> None:
    text = (PACKAGE_DIR / "client.py").read_text(encoding="utf-8")
    assert text.startswith("# Generated from aio.py by `python -m portex_pay_devtools.unasync`")
    assert "class PaymentClient:" in text
    assert "class EventWatch(BaseEventWatch):" in text
    leftovers = ("async ", "await ", "asyncio", "Awaitable", "grpc.aio", "AsyncEventWatch")
    for leftover in (*leftovers, "StopAsyncIteration", "unasync:"):
        assert leftover not in text


def test_no_hand_kept_twin_is_left_in_the_shared_modules() -> None:
    for shared in ("_calls.py", "_watch.py", "retry.py", "errors.py"):
        text = (PACKAGE_DIR / shared).read_text(encoding="utf-8")
        assert "async def" not in text, shared
        assert "StopIteration" not in text, shared


def test_check_catches_a_hand_edit_of_client_py(
    package_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = package_copy / "client.py"
    edited = client.read_text(encoding="utf-8").replace(
        "def query_order(", "def query_order_renamed(", 1
    )
    client.write_text(edited, encoding="utf-8")

    assert unasync.main(["--check", "--package-dir", str(package_copy)]) == 1
    captured = capsys.readouterr()
    assert "edited by hand" in captured.err
    assert "-    def query_order_renamed(" in captured.out
    assert "+    def query_order(" in captured.out
    assert client.read_text(encoding="utf-8") == edited  # --check writes nothing

    assert unasync.main(["--package-dir", str(package_copy)]) == 0
    assert client.read_text(encoding="utf-8") == (PACKAGE_DIR / "client.py").read_text("utf-8")
    assert unasync.main(["--check", "--package-dir", str(package_copy)]) == 0


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # The event watch is generated too.
        (
            "            _wait_closed(self._closed, delay)\n",
            "            _wait_closed(self._closed, 0)\n",
        ),
        ("    closed.wait(timeout)\n", "    closed.wait(timeout / 2)\n"),
    ],
)
def test_check_catches_a_hand_edit_of_the_generated_watch(
    package_copy: Path, capsys: pytest.CaptureFixture[str], before: str, after: str
) -> None:
    client = package_copy / "client.py"
    text = client.read_text(encoding="utf-8")
    assert text.count(before) == 1
    client.write_text(text.replace(before, after), encoding="utf-8")

    assert unasync.main(["--check", "--package-dir", str(package_copy)]) == 1
    out = capsys.readouterr().out
    assert f"-{after}" in out
    assert f"+{before}" in out

    assert unasync.main(["--package-dir", str(package_copy)]) == 0
    assert client.read_text(encoding="utf-8") == text


def test_check_catches_a_missing_client_py(
    package_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (package_copy / "client.py").unlink()
    assert unasync.main(["--check", "--package-dir", str(package_copy)]) == 1
    assert "+class EventWatch(BaseEventWatch):" in capsys.readouterr().out
    assert not (package_copy / "client.py").exists()


def test_check_catches_an_edit_of_aio_py_not_carried_over(
    package_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aio = package_copy / "aio.py"
    source = aio.read_text(encoding="utf-8")
    before = '"""The default deadline of every call, in seconds."""'
    assert source.count(before) == 1  # the edit below must change something
    aio.write_text(
        source.replace(before, '"""The default deadline of all calls, in seconds."""'),
        encoding="utf-8",
    )
    assert unasync.main(["--check", "--package-dir", str(package_copy)]) == 1
    out = capsys.readouterr().out
    assert '+        """The default deadline of all calls, in seconds."""' in out


def test_check_catches_an_edit_of_the_async_watch_not_carried_over(
    package_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aio = package_copy / "aio.py"
    text = aio.read_text(encoding="utf-8")
    before = "                error = stream_ended_error()\n"
    assert text.count(before) == 1
    edited = text.replace(before, before + "                error.message += '!'\n")
    aio.write_text(edited, encoding="utf-8")

    assert unasync.main(["--check", "--package-dir", str(package_copy)]) == 1
    assert "+                error.message += '!'\n" in capsys.readouterr().out


def test_an_edit_of_an_async_only_block_leaves_client_py_fresh(package_copy: Path) -> None:
    aio = package_copy / "aio.py"
    text = aio.read_text(encoding="utf-8")
    before = "raise StopAsyncIteration from None  # aclose() from another task"
    assert text.count(before) == 1
    aio.write_text(text.replace(before, before + ", not ours"), encoding="utf-8")
    assert unasync.main(["--check", "--package-dir", str(package_copy)]) == 0


def test_substitutions_turn_asyncio_code_into_blocking_code() -> None:
    source = (
        '"""An asyncio client of grpc.aio."""\n'
        "from collections.abc import Awaitable, Callable\n"
        "def pages() -> AsyncIterator[int]: ...\n"
        "class AsyncPaymentClient:\n"
        "    async def __aenter__(self) -> AsyncEventWatch:\n"
        "        async with x:\n"
        "            async for y in x:\n"
        "                return await y.read(grpc.aio.Channel)\n"
        "def f(g: Callable[[], Awaitable[T]], s: Callable[[float], Awaitable[object]]) -> None:\n"
        "    e: asyncio.Event = asyncio.Event()\n"
        "    s = asyncio.sleep\n"
        '    """Cancelling a task that waits for asyncio ends it."""\n'
    )
    assert unasync.unasync_source(source) == (
        '"""A blocking client of grpc."""\n'
        "from collections.abc import Callable\n"
        "def pages() -> Iterator[int]: ...\n"
        "class PaymentClient:\n"
        "    def __enter__(self) -> EventWatch:\n"
        "        with x:\n"
        "            for y in x:\n"
        "                return y.read(grpc.Channel)\n"
        "def f(g: Callable[[], T], s: Callable[[float], object]) -> None:\n"
        "    e: threading.Event = threading.Event()\n"
        "    s = time.sleep\n"
        '    """A KeyboardInterrupt while waiting for blocking ends it."""\n'
    )


def test_markers_remove_lines_and_swap_blocks() -> None:
    source = (
        "import grpc.aio  # unasync: remove\n"
        "class C:\n"
        "    # unasync: sync-only\n"
        "    # def close(self) -> None:\n"
        "    #     self.closed = await_nothing  # kept as written\n"
        "    # unasync: async-only\n"
        "    async def close(self, grace: float) -> None:\n"
        "        await self.channel.close(grace)\n"
        "    # unasync: end\n"
        "    x = 1\n"
    )
    assert unasync.unasync_source(source) == (
        "class C:\n"
        "    def close(self) -> None:\n"
        "        self.closed = await_nothing  # kept as written\n"
        "    x = 1\n"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("# unasync: async-only\nx = 1\n", "without `# unasync: end`"),
        ("x = 1\n# unasync: end\n", "outside a block"),
        ("x = 1  # unasync: drop\n", "unknown marker"),
        ("# unasync: sync-only\nx = 1\n# unasync: end\n", "must be a comment"),
        ("async def f(x):\n    return await(x)\n", "still has Await"),
        ("def f(:\n", "does not parse"),
    ],
)
def test_bad_markers_and_leftover_async_code_are_errors(source: str, message: str) -> None:
    with pytest.raises(unasync.UnasyncError, match=message):
        unasync.unasync_source(source)
