"""The bot's Stars: its Star transactions, listed by getStarTransactions in Telegram's shape
(StarTransaction: `id`, `amount`, `nanostar_amount` when not zero, `date`, and a TransactionPartner
as `source` for money in or `receiver` for money out) and chronological order, and its balance
(getMyStarBalance: a StarAmount), which always follows from them.

Payments and refundStarPayment add their transactions as Telegram does (an incoming user
`invoice_payment` whose id is the charge id; the refund going out to the user under the same
id). Tests add the rest: any transaction at all (`add_star_transaction`: a withdrawal, ads, an
affiliate commission, a partner kind newer than any client), a payment whose update never reached
the bot (`record_star_payment`), a refund made without a `refunded_payment` update
(`refund_outside`), a withdrawal Fragment settles later (`set_withdrawal_state`).

Telegram's documented limits are enforced: `limit` 1-100, `offset` not negative (the fake
refuses what Telegram may clamp, so that a client's mistake shows).
"""

from __future__ import annotations

import copy
import secrets
import time
from typing import Any, Final, TypeGuard

from portex_pay_devtools.fake_bot_api.chats import _Chats
from portex_pay_devtools.fake_bot_api.errors import _bad_request
from portex_pay_devtools.fake_bot_api.model import (
    STARS_CURRENCY,
    SUBSCRIPTION_PERIOD,
    Charge,
    _Bot,
)
from portex_pay_devtools.fake_bot_api.wire import _Args

# Bot API, getStarTransactions.limit: "Values between 1-100 are accepted. Defaults to 100."
STAR_TRANSACTIONS_LIMIT: Final = 100
NANOSTARS: Final = 1_000_000_000
_NANOSTARS_MAX: Final = NANOSTARS - 1


class _StarLedger(_Chats):
    """The bots' Star transactions and balances."""

    # ------------------------------------------------------------------ what tests read and add

    def star_transactions(self, token: str) -> list[dict[str, Any]]:
        """The bot's transactions as getStarTransactions lists them, oldest first."""
        return copy.deepcopy(self._bot_for(token).ledger)

    def add_star_transaction(
        self, token: str, transaction: dict[str, Any], *, malformed: bool = False
    ) -> dict[str, Any]:
        """Appends any transaction in Telegram's shape (the balance follows it); `date`
        defaults to now and must not be earlier than the last transaction's, since Telegram
        lists them in chronological order. ValueError for a shape Telegram never sends, unless
        `malformed`: then it is listed as given (and left out of the balance), for tests of a
        client that must survive a broken answer."""
        bot = self._bot_for(token)
        added = copy.deepcopy(transaction)
        if malformed:
            bot.ledger.append(added)
            return copy.deepcopy(added)
        added.setdefault("date", max(int(time.time()), self._last_date(bot)))
        _check_transaction(added)
        if added["date"] < self._last_date(bot):
            raise ValueError("date must not be before the last transaction's (chronological)")
        bot.ledger.append(added)
        return copy.deepcopy(added)

    def record_star_payment(
        self,
        token: str,
        user_id: int,
        invoice_payload: str,
        amount: int,
        *,
        date: int | None = None,
    ) -> dict[str, Any]:
        """A payment Telegram made whose update never reached the bot: the charge (refundable
        like any other) and its transaction, but no pre-checkout and no successful_payment."""
        bot = self._bot_for(token)
        when = max(int(time.time()), self._last_date(bot)) if date is None else date
        charge = Charge(
            telegram_payment_charge_id=f"stx{secrets.token_urlsafe(24)}",
            provider_payment_charge_id="",
            bot_id=bot.id,
            user_id=user_id,
            currency=STARS_CURRENCY,
            total_amount=amount,
            invoice_payload=invoice_payload,
            invoice_link="",
            date=when,
        )
        added = self.add_star_transaction(token, self._payment_transaction(charge, when))
        self._charges[charge.telegram_payment_charge_id] = charge
        return added

    def refund_outside(
        self, token: str, charge_id: str, *, date: int | None = None
    ) -> dict[str, Any]:
        """A refund of the charge made elsewhere (another client of the bot's token, Telegram's
        support) whose refunded_payment update never reached the bot: its transaction only."""
        bot = self._bot_for(token)
        charge = self._charges.get(charge_id)
        if charge is None or charge.bot_id != bot.id:
            raise LookupError("unknown charge")
        if charge.refunded_at is not None:
            raise ValueError("the charge is refunded already")
        when = max(int(time.time()), self._last_date(bot)) if date is None else date
        added = self.add_star_transaction(token, self._refund_transaction(charge, when))
        charge.refunded_at = when
        return added

    def set_withdrawal_state(
        self, token: str, transaction_id: str, state: dict[str, Any]
    ) -> dict[str, Any]:
        """Fragment settles a withdrawal: its RevenueWithdrawalState changes in place (the
        transaction keeps its position in the list)."""
        if not isinstance(state.get("type"), str):
            raise ValueError("a RevenueWithdrawalState has a string 'type'")
        for transaction in self._bot_for(token).ledger:
            receiver = transaction.get("receiver") if isinstance(transaction, dict) else None
            if (
                transaction.get("id") == transaction_id
                and isinstance(receiver, dict)
                and receiver.get("type") == "fragment"
            ):
                receiver["withdrawal_state"] = copy.deepcopy(state)
                return copy.deepcopy(transaction)
        raise LookupError("no withdrawal with that id")

    # ------------------------------------------------------------ what payments and refunds add

    def _last_date(self, bot: _Bot) -> int:
        dates = (t.get("date") for t in reversed(bot.ledger) if isinstance(t, dict))
        return next((date for date in dates if _is_int(date)), 0)

    def _append_payment(self, bot: _Bot, charge: Charge) -> None:
        """A user's payment: its transaction, dated now (never before the last one)."""
        bot.ledger.append(self._payment_transaction(charge, max(charge.date, self._last_date(bot))))

    def _append_refund(self, bot: _Bot, charge: Charge, date: int) -> None:
        bot.ledger.append(self._refund_transaction(charge, max(date, self._last_date(bot))))

    def _payment_transaction(self, charge: Charge, date: int) -> dict[str, Any]:
        # StarTransaction.id of an incoming payment is its telegram_payment_charge_id.
        return {
            "id": charge.telegram_payment_charge_id,
            "amount": charge.total_amount,
            "date": date,
            "source": self._invoice_partner(charge),
        }

    def _refund_transaction(self, charge: Charge, date: int) -> dict[str, Any]:
        # A refund has the id of the payment it returns, and a receiver instead of a source.
        return {
            "id": charge.telegram_payment_charge_id,
            "amount": charge.total_amount,
            "date": date,
            "receiver": self._invoice_partner(charge),
        }

    def _invoice_partner(self, charge: Charge) -> dict[str, Any]:
        # TransactionPartnerUser as the reference server writes it for an invoice payment.
        partner: dict[str, Any] = {
            "type": "user",
            "transaction_type": "invoice_payment",
            "user": self._user(charge.user_id),
            "invoice_payload": charge.invoice_payload,
        }
        if charge.subscription_expiration_date is not None:
            partner["subscription_period"] = SUBSCRIPTION_PERIOD
        return partner

    # -------------------------------------------------------------------------- the methods

    async def _get_star_transactions(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        offset = args.integer("offset", 0)
        limit = args.integer("limit", STAR_TRANSACTIONS_LIMIT)
        if offset < 0:
            raise _bad_request('parameter "offset" must be non-negative')
        if not 1 <= limit <= STAR_TRANSACTIONS_LIMIT:
            raise _bad_request(f'parameter "limit" must be between 1 and {STAR_TRANSACTIONS_LIMIT}')
        return {"transactions": copy.deepcopy(bot.ledger[offset : offset + limit])}

    async def _get_my_star_balance(self, bot: _Bot, args: _Args) -> dict[str, int]:
        nanostars = sum(_signed_nanostars(transaction) for transaction in bot.ledger)
        # StarAmount: whole Stars "rounded to 0", and nanostars that are negative only when the
        # amount is not positive.
        amount = abs(nanostars) // NANOSTARS * (1 if nanostars >= 0 else -1)
        return {"amount": amount, "nanostar_amount": nanostars - amount * NANOSTARS}


def _get(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def _signed_nanostars(transaction: Any) -> int:
    try:
        _check_transaction(copy.deepcopy(transaction))
    except (ValueError, AttributeError):
        return 0  # added `malformed`: Telegram would never have listed it
    value = int(transaction["amount"]) * NANOSTARS + int(transaction.get("nanostar_amount", 0))
    return value if "source" in transaction else -value


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_transaction(transaction: dict[str, Any]) -> None:
    """Telegram's StarTransaction: a string id, whole Stars and nanostars, a Unix date, and one
    TransactionPartner with a string `type` (any kind: newer ones included)."""
    if not isinstance(transaction.get("id"), str) or not transaction["id"]:
        raise ValueError("a StarTransaction has a non-empty string 'id'")
    amount = transaction.get("amount")
    if not _is_int(amount) or amount < 0:
        raise ValueError("'amount' must be a non-negative integer number of Stars")
    nanostars = transaction.get("nanostar_amount", 0)
    if not _is_int(nanostars) or not 0 <= nanostars <= _NANOSTARS_MAX:
        raise ValueError(f"'nanostar_amount' must be an integer from 0 to {_NANOSTARS_MAX}")
    if transaction.get("nanostar_amount") == 0:
        del transaction["nanostar_amount"]  # optional: Telegram leaves a zero out
    if not _is_int(transaction.get("date")) or transaction["date"] < 0:
        raise ValueError("'date' must be a Unix time")
    partners = [transaction.get(side) for side in ("source", "receiver") if side in transaction]
    if len(partners) != 1 or not isinstance(_get(partners[0], "type"), str):
        raise ValueError(
            "a StarTransaction has exactly one of 'source' (incoming) and 'receiver' (outgoing),"
            " a TransactionPartner with a string 'type'"
        )
