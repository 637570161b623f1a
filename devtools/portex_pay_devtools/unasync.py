"""Writes the blocking Python client from the asyncio one, or checks that it is up to date.

The client package has two twins, `AsyncPaymentClient` (``aio.py``, on ``grpc.aio``) and the
blocking `PaymentClient` (``client.py``, on ``grpc``), each with its event watch
(`AsyncEventWatch` / `EventWatch`). They were kept by hand and drifted apart in small ways
(docstrings, formatting, the odd line); now ``aio.py`` is the only one edited, and
``client.py`` is generated from it the way httpcore's ``scripts/unasync.py`` generates its sync
code: every line goes through a fixed
list of textual substitutions (`SUBSTITUTIONS`: ``async def`` -> ``def``, ``await`` dropped,
``grpc.aio`` -> ``grpc``, ``AsyncPaymentClient`` -> ``PaymentClient``, ``asyncio.Event`` ->
``threading.Event``, ``Awaitable[T]`` -> ``T``, ``AsyncIterator`` -> ``Iterator``,
``__aenter__`` -> ``__enter__``, ``asyncio`` -> ``blocking`` in prose, ...). What both clients
share without being twins (requests, the watch's resume position, retry decisions) is plain code
in ``_calls.py``, ``_watch.py`` and ``retry.py``, imported by both.

Where the two must really differ, ``aio.py`` says so with markers (keep them rare):

- a line ending in ``# unasync: remove`` is left out of the blocking file;
- ``# unasync: sync-only`` starts lines that only the blocking file has, written as comments at
  the marker's indentation (``# def close(self) -> None:``): the blocking file gets them
  uncommented and as they are, without substitutions;
- ``# unasync: async-only`` starts lines that only ``aio.py`` has;
- ``# unasync: end`` closes such a block. The marker lines themselves are never copied.

The output must be valid Python without ``async``/``await``, or the script fails. ``--check``
writes nothing and exits 1 with a unified diff when the committed file differs from what it would
write, which is how ``make check`` catches a hand edit of ``client.py`` or a forgotten run. The
substitutions are plain text, so the generated file is not reformatted: ``aio.py`` has to be
laid out so that both files pass ``ruff format --check`` (a magic trailing comma where a line
would fit once ``await`` is gone).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path("clients/python/src/portex_pay_client")
"""The client package, relative to the repository root (the working directory of `make`)."""

TWINS: tuple[tuple[str, str], ...] = (("aio.py", "client.py"),)
"""(asyncio source, generated blocking file) pairs inside the package."""

SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    # Names of the asyncio API and their blocking twins.
    (r"\bAsyncPaymentClient\b", "PaymentClient"),
    (r"\bAsyncEventWatch\b", "EventWatch"),
    (r"\bPaymentServiceAsyncStub\b", "PaymentServiceStub"),
    (r"\bgrpc\.aio\b", "grpc"),
    (r"\basyncio\.Event\b", "threading.Event"),
    (r"\basyncio\.sleep\b", "time.sleep"),
    (r"\bAwaitable\[(\w+)\]", r"\1"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAwaitable, ", ""),
    # The language.
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\basync for\b", "for"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\baclose\b", "close"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    # Docstrings and comments.
    (r"\bAn asyncio\b", "A blocking"),
    (r"\basyncio\b", "blocking"),
    (r"\banother task\b", "another thread"),
    (r"\bbetween tasks\b", "between threads"),
    (r"\bCancelling a task that waits\b", "A KeyboardInterrupt while waiting"),
)
"""(regular expression, replacement) pairs, applied in this order to every line."""

_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in SUBSTITUTIONS)
_MARKER = re.compile(r"#\s*unasync:\s*(?P<directive>.*?)\s*$")
_REMOVE = re.compile(r"\s*#\s*unasync:\s*remove\s*$")
_BLOCKS = ("sync-only", "async-only")


class UnasyncError(Exception):
    """The asyncio source cannot be turned into a blocking file (a bad marker, invalid output)."""


@dataclass(frozen=True, slots=True)
class Twin:
    """An asyncio source file and the blocking file generated from it."""

    source: Path
    target: Path

    def header(self) -> str:
        return (
            f"# Generated from {self.source.name} by `python -m portex_pay_devtools.unasync`;"
            " do not edit by hand.\n"
        )


def unasync_line(line: str) -> str:
    """One line of asyncio code with every substitution applied."""
    for pattern, replacement in _COMPILED:
        line = pattern.sub(replacement, line)
    return line


def unasync_source(source: str, *, name: str = "<source>") -> str:
    """The blocking twin of the asyncio module ``source`` (without the generated-file header)."""
    out: list[str] = []
    block: str | None = None
    block_indent = ""
    for number, line in enumerate(source.splitlines(), start=1):
        where = f"{name}:{number}"
        marker = _MARKER.search(line)
        if marker is not None and line.lstrip().startswith("#"):
            directive = marker["directive"]
            if directive in _BLOCKS:
                if block is None:
                    block_indent = line[: len(line) - len(line.lstrip())]
                block = directive
                continue
            if directive == "end":
                if block is None:
                    raise UnasyncError(f"{where}: `# unasync: end` outside a block")
                block = None
                continue
        if block == "async-only":
            continue
        if block == "sync-only":
            out.append(_uncomment(line, block_indent, where))
            continue
        if _REMOVE.search(line):
            continue
        if marker is not None:
            raise UnasyncError(f"{where}: unknown marker {marker.group(0)!r}")
        out.append(unasync_line(line))
    if block is not None:
        raise UnasyncError(f"{name}: `# unasync: {block}` block without `# unasync: end`")
    result = "\n".join(out) + "\n"
    _check_blocking(result, name)
    return result


def _uncomment(line: str, indent: str, where: str) -> str:
    """A line of a sync-only block, ``<indent># code``, as ``<indent>code``."""
    if line.strip() == "#":
        return ""
    if not line.startswith(f"{indent}# "):
        raise UnasyncError(f"{where}: a sync-only line must be a comment, `{indent}# ...`")
    return indent + line[len(indent) + 2 :]


def _check_blocking(code: str, name: str) -> None:
    """Raises `UnasyncError` unless ``code`` parses and has no async construct left."""
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise UnasyncError(f"the blocking twin of {name} does not parse: {exc}") from exc
    for node in ast.walk(tree):
        if isinstance(node, ast.AsyncFunctionDef | ast.AsyncWith | ast.AsyncFor | ast.Await):
            raise UnasyncError(
                f"the blocking twin of {name} still has {type(node).__name__} on line"
                f" {node.lineno}: add a substitution or a marker"
            )


def generate(twin: Twin) -> str:
    """The text that ``twin.target`` should have."""
    source = twin.source.read_text(encoding="utf-8")
    return twin.header() + unasync_source(source, name=str(twin.source))


def stale_diff(twin: Twin) -> str:
    """A unified diff from the committed blocking file to the generated one; empty if equal."""
    expected = generate(twin)
    current = twin.target.read_text(encoding="utf-8") if twin.target.exists() else ""
    return "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            expected.splitlines(keepends=True),
            fromfile=f"{twin.target} (committed)",
            tofile=f"{twin.target} (generated from {twin.source.name})",
        )
    )


def twins(package_dir: Path) -> list[Twin]:
    return [Twin(package_dir / source, package_dir / target) for source, target in TWINS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m portex_pay_devtools.unasync",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 with a diff if a generated file is stale",
    )
    parser.add_argument(
        "--package-dir",
        type=Path,
        default=PACKAGE_DIR,
        help=f"the client package directory (default: {PACKAGE_DIR})",
    )
    options = parser.parse_args(argv)
    status = 0
    try:
        for twin in twins(options.package_dir):
            if options.check:
                diff = stale_diff(twin)
                if diff:
                    print(
                        f"{twin.target} is stale or was edited by hand;"
                        " run `python -m portex_pay_devtools.unasync`:",
                        file=sys.stderr,
                    )
                    sys.stdout.write(diff)
                    status = 1
                continue
            expected = generate(twin)
            current = twin.target.read_text(encoding="utf-8") if twin.target.exists() else None
            if current != expected:
                twin.target.write_text(expected, encoding="utf-8")
                print(f"wrote {twin.target}")
    except UnasyncError as exc:
        print(f"unasync: {exc}", file=sys.stderr)
        return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
