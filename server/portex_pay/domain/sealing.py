"""Secrets sealed at rest: AES-256-GCM under a ring of data keys, as a text envelope.

A sealed value is `v1.<key id>.<base64url of nonce + ciphertext + tag>`: the key id (derived from
the key, as the payload keys' ids are, so every replica finds the same id without configuring one)
says which key of the ring opens it, so keys can be rotated; the associated data names the row and
column the value belongs to (`applications.bot_token:<application id>`), so a ciphertext copied
to another row or column does not open. A random 96-bit nonce per value is safe for far more
values than a key ever seals (NIST SP 800-38D allows 2^32 per key). No plaintext secret portex-pay
stores contains a `.` (bot tokens, webhook and signing secrets are `[A-Za-z0-9_:-]`), so a value
is told apart from a sealed one by its form alone.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

DATA_KEY_BYTES = 32  # AES-256
DATA_KEY_ID_CHARS = 6  # 36 bits: two keys of one ring sharing an id is a 1 in 2^36 accident
_DATA_KEY_ID_CONTEXT = b"portex-data-key"
_NONCE_BYTES = 12
_ENVELOPE = re.compile(rf"v1\.([A-Za-z0-9_-]{{{DATA_KEY_ID_CHARS}}})\.([A-Za-z0-9_-]+)")


class SealingError(RuntimeError):
    """A sealed value cannot be opened: its key is not in the ring, or it was altered or moved
    to another row. The message names the key id, never a key or a secret."""


@functools.lru_cache(maxsize=64)  # the ring's few keys, asked for every value sealed or opened
def data_key_id(key: bytes) -> str:
    """The public id a sealed value names its key by (a truncated hash tells nothing of a
    256-bit key)."""
    digest = hashlib.sha256(_DATA_KEY_ID_CONTEXT + key).digest()
    return base64.urlsafe_b64encode(digest).decode()[:DATA_KEY_ID_CHARS]


def decode_data_key(text: str) -> bytes | None:
    """A key as configured (base64, standard or URL-safe, padding optional) as its 32 bytes, or
    None when it is not that."""
    text = text.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == DATA_KEY_BYTES else None


def new_data_key() -> str:
    """A fresh key in the form PORTEX_DATA_KEY takes (`make run` and the README's recipe)."""
    return base64.b64encode(os.urandom(DATA_KEY_BYTES)).decode()


def sealed_key_id(value: str) -> str | None:
    """The id of the key that sealed `value`, or None when it is not sealed (plaintext)."""
    match = _ENVELOPE.fullmatch(value)
    return None if match is None else match[1]


class DataKeys:
    """The data keys: `current` seals every new value; `retired` are earlier current keys that
    still open what they sealed until `admin rotate-data-key` has re-sealed it. A key left out of
    the ring opens nothing."""

    __slots__ = ("_ciphers", "current", "retired")

    def __init__(self, current: bytes, retired: tuple[bytes, ...] = ()) -> None:
        assert len(current) == DATA_KEY_BYTES and all(len(k) == DATA_KEY_BYTES for k in retired)
        self.current = current
        self.retired = retired
        # AESGCM objects built once: their key schedule is most of a short value's cost.
        self._ciphers = {data_key_id(key): AESGCM(key) for key in (*reversed(retired), current)}

    def __repr__(self) -> str:
        # Never the keys themselves: a ring may end up in a log line or a traceback.
        retired = ", ".join(data_key_id(key) for key in self.retired)
        return f"DataKeys(current={self.current_id}, retired=[{retired}])"

    @property
    def current_id(self) -> str:
        return data_key_id(self.current)

    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def seal(self, plaintext: str, context: str) -> str:
        """`plaintext` sealed under the current key, bound to `context` (the row and column)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.current_id].encrypt(nonce, plaintext.encode(), context.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()
        return f"v1.{self.current_id}.{body}"

    def open(self, value: str, context: str) -> str:
        """The plaintext of a value sealed for `context`; SealingError when no key of the ring
        opens it. A value that is not sealed (a row written before sealing, until the start-up
        step seals it) is returned as it is."""
        match = _ENVELOPE.fullmatch(value)
        if match is None:
            return value
        key_id, body = match[1], match[2]
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SealingError(
                f"a secret of {context.partition(':')[0]} is sealed under data key {key_id}, "
                "which is not in PORTEX_DATA_KEY or PORTEX_DATA_KEYS_RETIRED"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
            raise SealingError(
                f"a secret of {context.partition(':')[0]} does not open under data key {key_id}: "
                "altered, or copied from another row"
            ) from None
