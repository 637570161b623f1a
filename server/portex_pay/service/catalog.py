"""The catalog (an application's price list for the Mini App edge) and the Telegram users the edge
has seen: the use cases behind SetCatalogItem, DeleteCatalogItem, ListCatalogItems and
GetTelegramUser, and behind `portex-pay admin set-item / delete-item / list-items`.

Every call is scoped by the application: one application never reads or changes another's items
or users. Items are checked by `domain.catalog.validate_item` (Pay's rules for the fields they
stand for, control characters included) against the server's PORTEX_MAX_AMOUNT.
"""

from __future__ import annotations

from uuid import UUID

from portex_pay.domain.catalog import ITEM_KEY_MAX_CHARS, CatalogItem, SeenUser, validate_item
from portex_pay.domain.errors import (
    ApplicationNotFound,
    FieldViolation,
    InvalidArgument,
    TelegramUserNotFound,
)
from portex_pay.domain.pay import INT64_MAX
from portex_pay.domain.text import single_line_problem
from portex_pay.service.ports import Catalog, TelegramUsers


def key_problem(key: str) -> str | None:
    """Why `key` cannot name a catalog item (a field violation's description), or None."""
    problem = single_line_problem(key)
    if problem is None and not 0 < len(key) <= ITEM_KEY_MAX_CHARS:
        problem = f"must be 1-{ITEM_KEY_MAX_CHARS} characters"
    return problem


class CatalogService:
    def __init__(self, catalog: Catalog, users: TelegramUsers, *, max_amount: int) -> None:
        self._catalog = catalog
        self._users = users
        self.max_amount = max_amount

    async def set_item(self, application_id: UUID, item: CatalogItem) -> CatalogItem:
        """Adds the item or replaces the one with its key; the item as stored. InvalidArgument
        (violations named by the item's fields: `key`, `amount`, ...) for a bad item,
        ApplicationNotFound when the application does not exist."""
        violations = validate_item(item, max_amount=self.max_amount)
        if violations:
            raise InvalidArgument(violations)
        if not await self._catalog.put(application_id, item):
            raise ApplicationNotFound(f"no application {application_id}")
        return item

    async def delete_item(self, application_id: UUID, key: str) -> bool:
        """Removes the item; False when the application has no item with this key."""
        problem = key_problem(key)
        if problem is not None:
            raise InvalidArgument([FieldViolation("key", problem)])
        return await self._catalog.delete(application_id, key)

    async def get_item(self, application_id: UUID, key: str) -> CatalogItem | None:
        return await self._catalog.get(application_id, key)

    async def list_items(self, application_id: UUID) -> list[CatalogItem]:
        return await self._catalog.list(application_id)

    async def get_user(self, application_id: UUID, tg_use_id: int) -> SeenUser:
        """The user as the application's Mini App last saved them, or TelegramUserNotFound."""
        if not 0 < tg_use_id <= INT64_MAX:
            raise InvalidArgument([FieldViolation("tg_use_id", "must be positive")])
        seen = await self._users.get(application_id, tg_use_id)
        if seen is None:
            raise TelegramUserNotFound(f"user {tg_use_id} not found")
        return seen
