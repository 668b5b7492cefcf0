"""Page tokens for listings in (created_at, id) order: opaque to callers, checked here."""
from __future__ import annotations

import base64
import binascii
import json

from .errors import InvalidArgument

# The most one page holds, whatever the caller asks: a port is ~0.5 kB on the wire, and gRPC
# refuses replies over 4 MB.
MAX_PAGE = 2000


def encode(created_at: float, object_id: str) -> str:
    raw = json.dumps([created_at, object_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(token: str) -> tuple[float, str] | None:
    """The cursor in `token`; None for "" (the first page)."""
    if not token:
        return None
    try:
        at, oid = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if isinstance(at, (int, float)) and isinstance(oid, str) and len(oid) <= 64:
            return float(at), oid
    except (ValueError, TypeError, binascii.Error):
        pass
    raise InvalidArgument("invalid page token (pass back a next_page_token unchanged)")
