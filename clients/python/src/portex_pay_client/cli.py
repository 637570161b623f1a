"""``portex-pay-watch``: an application's payment events as JSON lines, resuming on its own.

::

    PORTEX_API_KEY=ppk_... portex-pay-watch --target 127.0.0.1:50051 --type order.paid

prints one JSON object per event on stdout (UTF-8; the protobuf JSON mapping, field names as grpcurl
shows them: ``eventId``, ``occurredAt``, ``order.tgPaymentId``), flushed line by line; heartbeats
are not printed. When the stream breaks it resumes after the last cursor, so every event is
printed once. On SIGINT or SIGTERM it exits with status 0; on a failure it cannot recover from
(a wrong key, an expired cursor: OUT_OF_RANGE / CURSOR_EXPIRED) with status 1. Either way the last
line it writes to stderr is the cursor alone (empty when none was received), to resume with::

    portex-pay-watch ... 2> >(tail -n 1 > cursor.txt)
    portex-pay-watch --after "$(cat cursor.txt)" ...

Other stderr lines (reconnections, errors) start with ``portex-pay-watch:``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from portex.payment.v1 import payment_pb2

from ._calls import ApiKey
from .aio import AsyncPaymentClient
from .errors import PortexPayError
from .tls import TlsOptions

__all__ = ["add_connection_arguments", "api_key_of", "json_line", "main", "tls_options_of"]

PROG = "portex-pay-watch"


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every client command shares: where the server is, the key, TLS."""
    parser.add_argument(
        "--target", default="127.0.0.1:50051", help="gRPC target (default %(default)s)"
    )
    parser.add_argument(
        "--api-key", help="the application's API key (default: the PORTEX_API_KEY variable)"
    )
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS (system root certificates)"
    )
    # grpcurl's names; any of them means --tls.
    parser.add_argument(
        "--cacert", metavar="FILE", help="TLS: trust this CA (PEM), not the system's"
    )
    parser.add_argument("--cert", metavar="FILE", help="TLS: client certificate (PEM), for mTLS")
    parser.add_argument("--key", metavar="FILE", help="TLS: the client certificate's key (PEM)")
    parser.add_argument(
        "--servername", metavar="NAME", help="TLS: the name the server's certificate must carry"
    )


def tls_options_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TlsOptions | None:
    """The TLS options the connection arguments ask for (None: plaintext); a usage error (exit
    2) when a file cannot be read or --cert comes without --key."""
    if not (args.tls or args.cacert or args.cert or args.key or args.servername):
        return None
    try:
        tls = TlsOptions(
            root_certificates=args.cacert,
            certificate=args.cert,
            private_key=args.key,
            server_name=args.servername,
        )
        tls.channel_credentials()  # reads the files: a bad path is a usage error, not a trace
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return tls


def api_key_of(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The API key from ``--api-key`` or PORTEX_API_KEY; a usage error (exit 2) when there is
    none or it cannot be sent (the key itself is never echoed)."""
    api_key: str = args.api_key or os.environ.get("PORTEX_API_KEY", "")
    if not api_key:
        parser.error("an API key is needed: --api-key KEY or the PORTEX_API_KEY variable")
    try:
        ApiKey(api_key)
    except ValueError as error:
        parser.error(str(error))
    return api_key


def json_line(message: Message) -> str:
    """A message as one line of JSON: the protobuf JSON mapping (grpcurl's field names), UTF-8."""
    return json.dumps(MessageToDict(message), ensure_ascii=False, separators=(",", ":"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Print a Portex Pay application's events as JSON lines, resuming after the last "
            "cursor when the stream breaks. The last stderr line on exit is that cursor."
        ),
    )
    add_connection_arguments(parser)
    parser.add_argument(
        "--order", type=int, metavar="N", help="only the events of this order (tg_payment_id)"
    )
    parser.add_argument(
        "--user", type=int, metavar="N", help="only the events of this user's orders (tg_use_id)"
    )
    parser.add_argument(
        "--type",
        dest="types",
        action="extend",
        nargs="+",
        default=[],
        metavar="T",
        help="only events of these types, e.g. order.paid (repeatable)",
    )
    parser.add_argument(
        "--after", default="", metavar="CURSOR", help="resume right after this cursor"
    )
    parser.add_argument(
        "--from-start",
        action="store_true",
        help="without --after: every retained event first (default: only new ones)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="do not report reconnections on stderr"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    api_key = api_key_of(parser, args)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")  # JSON lines are UTF-8, whatever the locale
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(message)s"))
    watch_log = logging.getLogger("portex_pay_client.watch")
    watch_log.addHandler(handler)
    watch_log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    return asyncio.run(_run(args, api_key, tls_options_of(parser, args)))


async def _run(args: argparse.Namespace, api_key: str, tls: TlsOptions | None) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncPaymentClient(args.target, api_key, tls=tls) as client:
        watch = client.watch(
            tg_payment_id=args.order,
            tg_use_id=args.user,
            types=args.types,
            after_cursor=args.after,
            start=payment_pb2.RETENTION_START if args.from_start else payment_pb2.NOW,
        )
        # The cursor of the last event written out; the watch's own may be one event further
        # when writing that event failed.
        written = watch.cursor

        async def pump() -> None:
            nonlocal written
            async for event in watch:
                sys.stdout.write(json_line(event) + "\n")
                sys.stdout.flush()
                written = watch.cursor

        pumping = asyncio.create_task(pump())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({pumping, stopping}, return_when=asyncio.FIRST_COMPLETED)
        status = 0
        unexpected: BaseException | None = None
        if stop.is_set():
            pumping.cancel()
            # Cancelled while waiting for the next event: everything handed out was written.
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
            resume_at = watch.cursor
        else:
            stopping.cancel()
            resume_at = written
            error = pumping.exception()
            status = 1
            if isinstance(error, BrokenPipeError):
                # The reader went away: keep Python from complaining about stdout at exit.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            elif isinstance(error, PortexPayError):
                print(f"{PROG}: {error}", file=sys.stderr)
            elif error is not None:
                unexpected = error
            else:  # the watch ended without an error: it was closed, which never happens here
                resume_at = watch.cursor
        await watch.aclose()
    print(resume_at, file=sys.stderr, flush=True)
    if unexpected is not None:
        raise unexpected
    return status


if __name__ == "__main__":
    sys.exit(main())
