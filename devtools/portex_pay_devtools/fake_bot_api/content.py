"""What a sent or received message contains, checked and built as the reference server does:
parse_mode, reply parameters, reply markup and inline buttons, documents, bot commands and their
scopes, and the bot_command entities of a user's text."""

from __future__ import annotations

import json
import re
from typing import Any, Final

from portex_pay_devtools.fake_bot_api.errors import _bad_request
from portex_pay_devtools.fake_bot_api.model import _File, _Outgoing
from portex_pay_devtools.fake_bot_api.wire import _Args

# A bot command in a message, as Telegram's apps mark it (a bot_command entity): "/" + up to 64
# word characters, optionally "@botusername", not glued to other word characters.
_COMMAND_IN_TEXT_RE: Final = re.compile(
    r"(?<![\w/<>])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w/<>])"
)
# Bot API, InlineKeyboardButton: exactly one of these optional fields must be used.
_INLINE_BUTTON_ACTIONS: Final = (
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
)


def _check_parse_mode(text: str, parse_mode: str) -> None:
    # Reference server, get_formatted_text: checked only when there is text to parse.
    if text and parse_mode.lower() not in ("", "none", "markdown", "markdownv2", "html"):
        raise _bad_request("unsupported parse_mode")


def _parse_reply_parameters(args: _Args) -> tuple[str, int, bool] | None:
    """(chat_id or "", message_id, allow_sending_without_reply), or None for no reply; reference
    server, get_reply_parameters (the older reply_to_message_id still works)."""
    text = args.text("reply_parameters")
    if not text:
        message_id = args.integer("reply_to_message_id", 0)
        if message_id <= 0:
            return None
        return "", message_id, args.flag("allow_sending_without_reply")
    try:
        value = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse reply parameters JSON object") from None
    if not isinstance(value, dict):
        raise _bad_request("object expected as reply parameters")
    if not value:
        return None
    target = value.get("message_id")
    if target is None:
        raise _bad_request('can\'t find field "message_id"')
    if not isinstance(target, int) or isinstance(target, bool):
        raise _bad_request('field "message_id" must be of type Number')
    allow = value.get("allow_sending_without_reply", False)
    if not isinstance(allow, bool):
        raise _bad_request('field "allow_sending_without_reply" must be of type Boolean')
    chat_id = value.get("chat_id")
    if target <= 0:
        return None
    return ("" if chat_id is None else str(chat_id)), target, allow


def _parse_reply_markup(text: str) -> dict[str, Any] | None:
    # Reference server, get_reply_markup; the fake checks the shape and the inline buttons.
    if not text:
        return None
    try:
        markup = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse reply keyboard markup JSON object") from None
    if not isinstance(markup, dict):
        raise _bad_request("object expected as reply markup")
    for name in ("keyboard", "inline_keyboard"):
        rows = markup.get(name)
        if rows is None:
            continue
        if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
            raise _bad_request(f'field "{name}" must be an Array of Arrays')
    for row in markup.get("inline_keyboard") or []:
        for button in row:
            _check_inline_button(button)
    return markup


def _check_inline_button(button: Any) -> None:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise _bad_request(prefix + "InlineKeyboardButton must be an Object")
    if not isinstance(button.get("text"), str):
        raise _bad_request(prefix + 'Field "text" must be of type String')
    actions = [name for name in _INLINE_BUTTON_ACTIONS if button.get(name) is not None]
    if not actions:
        raise _bad_request(prefix + "Text buttons are unallowed in the inline keyboard")
    if len(actions) > 1:
        # Bot API: "Exactly one of the optional fields must be used"; Telegram picks one, the
        # fake says so.
        raise _bad_request(prefix + f"exactly one of {', '.join(actions)} must be used")
    data = button.get("callback_data")
    # Bot API, callback_data: "1-64 bytes".
    if data is not None and (not isinstance(data, str) or not 1 <= len(data.encode()) <= 64):
        raise _bad_request("BUTTON_DATA_INVALID")


def _message_options(outgoing: _Outgoing) -> dict[str, Any]:
    """The fields a sent message gets from its options: the reply, and an inline keyboard (the
    only markup a Message shows)."""
    options: dict[str, Any] = {}
    if outgoing.reply_to is not None:
        options["reply_to_message"] = outgoing.reply_to
    markup = outgoing.reply_markup
    if markup is not None and markup.get("inline_keyboard"):
        options["reply_markup"] = {"inline_keyboard": markup["inline_keyboard"]}
    return options


def _document_json(stored: _File) -> dict[str, Any]:
    # Reference server, JsonDocument then json_store_file: file_name and mime_type when known.
    document: dict[str, Any] = {}
    if stored.file_name:
        document["file_name"] = stored.file_name
    if stored.mime_type:
        document["mime_type"] = stored.mime_type
    document["file_id"] = stored.file_id
    document["file_unique_id"] = stored.file_unique_id
    if stored.data is not None:
        document["file_size"] = len(stored.data)
    return document


def _file_suffix(stored: _File) -> str:
    # Telegram keeps the extension in file_path ("documents/file_0.pdf").
    name = stored.file_name or ""
    suffix = name[name.rfind(".") :] if "." in name else ""
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix) else ""


def _bot_command_entities(text: str) -> list[dict[str, Any]]:
    # MessageEntity offsets and lengths count UTF-16 code units.
    def utf16(part: str) -> int:
        return len(part.encode("utf-16-le")) // 2

    return [
        {
            "offset": utf16(text[: match.start()]),
            "length": utf16(match.group()),
            "type": "bot_command",
        }
        for match in _COMMAND_IN_TEXT_RE.finditer(text)
    ]


def _parse_bot_commands(text: str) -> list[dict[str, str]]:
    # Reference server, get_bot_commands; absent means none.
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse commands JSON object") from None
    if not isinstance(value, list):
        raise _bad_request("expected an Array of BotCommand")
    commands = []
    for item in value:
        if not isinstance(item, dict):
            raise _bad_request("can't parse BotCommand: expected an Object")
        for name in ("command", "description"):
            if name not in item:
                raise _bad_request(f"can't parse BotCommand: Can't find field \"{name}\"")
            if not isinstance(item[name], str):
                raise _bad_request(
                    f'can\'t parse BotCommand: Field "{name}" must be of type String'
                )
        commands.append({"command": item["command"], "description": item["description"]})
    return commands


def _parse_command_scope(text: str) -> str:
    """The scope as canonical JSON (the commands' key); absent means the default scope."""
    if not text:
        return '{"type":"default"}'
    try:
        scope = json.loads(text)
    except ValueError:
        raise _bad_request("can't parse BotCommandScope JSON object") from None
    if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
        raise _bad_request('can\'t parse BotCommandScope: Field "type" must be of type String')
    return json.dumps(scope, sort_keys=True, separators=(",", ":"))
