"""The Bot API methods the fake implements, by name: getMe here, the rest in chat_methods.py,
payment_methods.py and update_methods.py."""

from __future__ import annotations

from typing import Any

from portex_pay_devtools.fake_bot_api.chat_methods import _ChatMethods
from portex_pay_devtools.fake_bot_api.model import _Bot
from portex_pay_devtools.fake_bot_api.payment_methods import _PaymentMethods
from portex_pay_devtools.fake_bot_api.state import _Handler
from portex_pay_devtools.fake_bot_api.update_methods import _UpdateMethods
from portex_pay_devtools.fake_bot_api.wire import _Args


class _Methods(_ChatMethods, _PaymentMethods, _UpdateMethods):
    """Every Bot API method of the fake, and the table that names them."""

    def _method_table(self) -> dict[str, tuple[str, _Handler]]:
        """Lower-case name -> (the method's own spelling, its handler)."""
        return {
            name.lower(): (name, handler)
            for name, handler in (
                ("getMe", self._get_me),
                ("createInvoiceLink", self._create_invoice_link),
                ("answerPreCheckoutQuery", self._answer_pre_checkout_query),
                ("refundStarPayment", self._refund_star_payment),
                ("editUserStarSubscription", self._edit_user_star_subscription),
                ("setWebhook", self._set_webhook),
                ("deleteWebhook", self._delete_webhook),
                ("getWebhookInfo", self._get_webhook_info),
                ("getUpdates", self._get_updates),
                ("getStarTransactions", self._get_star_transactions),
                ("getMyStarBalance", self._get_my_star_balance),
                ("sendMessage", self._send_message),
                ("sendDocument", self._send_document),
                ("getFile", self._get_file),
                ("sendInvoice", self._send_invoice),
                ("deleteMessage", self._delete_message),
                ("answerCallbackQuery", self._answer_callback_query),
                ("setMyCommands", self._set_my_commands),
                ("getMyCommands", self._get_my_commands),
                ("deleteMyCommands", self._delete_my_commands),
            )
        }

    async def _get_me(self, bot: _Bot, args: _Args) -> dict[str, Any]:
        return {
            "id": bot.id,
            "is_bot": True,
            "first_name": bot.first_name,
            "username": bot.username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
