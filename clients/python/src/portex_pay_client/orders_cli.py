"""``portex-pay-orders``: an application's orders for support staff, as JSON lines.

::

    export PORTEX_API_KEY=ppk_...
    portex-pay-orders list --filter 'tg_use_id = 42 AND state = PAID' --limit 20
    portex-pay-orders get 1234                      # by order id
    portex-pay-orders get --charge stxAbC...        # by the charge id on the buyer's receipt

``list`` prints one JSON object per order (ListOrders, newest first, every page until ``--limit``
orders or the last page; the filter is ListOrders' AIP-160 subset, see payment.proto) and ``get``
prints the one order (QueryOrder). The JSON is the protobuf JSON mapping with the field names
grpcurl shows (``tgPaymentId``, ``createTime``), UTF-8, one object per line. Exit status: 0 when
it printed what was asked for, 1 on an error the server answered (``portex-pay-orders: NOT_FOUND:
...`` on stderr, with each bad field of an INVALID_ARGUMENT), 2 on bad usage. Read-only: it
never changes an order.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence
from itertools import islice

from .cli import add_connection_arguments, api_key_of, json_line, tls_options_of
from .client import PaymentClient
from .errors import PortexPayError

__all__ = ["main"]

PROG = "portex-pay-orders"


def _parser() -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(connection)
    parser = argparse.ArgumentParser(
        prog=PROG, description="Find a Portex Pay application's orders (read-only)."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list", parents=[connection], help="orders newest first, as JSON lines (ListOrders)"
    )
    listing.add_argument(
        "--filter", default="", help="e.g. 'tg_use_id = 42 AND state = PAID' (see payment.proto)"
    )
    listing.add_argument(
        "--limit", type=_positive, metavar="N", help="stop after N orders (default: all)"
    )
    listing.add_argument(
        "--page-size", type=_positive, default=100, metavar="N", help="orders per call (1-1000)"
    )
    get = commands.add_parser("get", parents=[connection], help="one order (QueryOrder)")
    lookup = get.add_mutually_exclusive_group(required=True)
    lookup.add_argument("tg_payment_id", nargs="?", type=_positive, help="the order id")
    lookup.add_argument(
        "--charge", metavar="ID", help="the Telegram charge id (telegram_payment_charge_id)"
    )
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    api_key = api_key_of(parser, args)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8")  # JSON lines are UTF-8, whatever the locale
    with PaymentClient(args.target, api_key, tls=tls_options_of(parser, args)) as client:
        try:
            if args.command == "get":
                order = client.query_order(
                    args.tg_payment_id, telegram_payment_charge_id=args.charge
                )
                print(json_line(order), flush=True)
            else:
                orders = client.iter_orders(filter=args.filter, page_size=args.page_size)
                for order in islice(orders, args.limit):
                    print(json_line(order), flush=True)
        except PortexPayError as error:
            print(f"{PROG}: {error}", file=sys.stderr)
            for field, problem in error.field_violations.items():
                print(f"{PROG}: {field}: {problem}", file=sys.stderr)
            return 1
        except BrokenPipeError:
            # The reader went away (`| head`): keep Python from complaining about stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
