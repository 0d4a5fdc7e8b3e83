"""Entry payloads: signed, so a planted value is never unpickled.

Layout: ``MAGIC`` + 16-byte HMAC-SHA256 over (key, body) + pickled body. The
key is part of the MAC, so a valid entry copied under another key is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any

MAGIC = b"qs1"
_MAC = 16
_HEAD = len(MAGIC) + _MAC


def derive_secret(secret_key: str | bytes) -> bytes:
    if isinstance(secret_key, str):
        secret_key = secret_key.encode()
    return hashlib.sha256(b"querystash.entries:" + secret_key).digest()


def encode(secret: bytes, key: str, value: Any) -> bytes:
    """Raise ``pickle.PicklingError``/``TypeError`` for unpicklable rows."""
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    mac = hmac.digest(secret, key.encode() + body, "sha256")[:_MAC]
    return MAGIC + mac + body


def decode(secret: bytes, key: str, blob: Any) -> Any:
    """The value, or ``None`` for anything corrupt, truncated or foreign."""
    if not isinstance(blob, bytes) or len(blob) <= _HEAD or not blob.startswith(MAGIC):
        return None
    body = blob[_HEAD:]
    mac = hmac.digest(secret, key.encode() + body, "sha256")[:_MAC]
    if not hmac.compare_digest(mac, blob[len(MAGIC) : _HEAD]):
        return None
    try:
        return pickle.loads(body)
    except Exception:  # signed by us yet unreadable: treat as a miss
        return None
