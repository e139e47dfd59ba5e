"""AIP-158 pagination: opaque page tokens over a stable (time, id) ordering."""

from __future__ import annotations

import base64
import datetime as dt
import json

from sqlalchemy import and_, or_

from innominatus.kit.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def encode_token(when: dt.datetime, key: str) -> str:
    raw = json.dumps({"t": when.isoformat(), "k": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return dt.datetime.fromisoformat(data["t"]), str(data["k"])
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not valid: pass the next_page_token of the previous response unchanged",
            reason="INVALID_PAGE_TOKEN",
        ) from None


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size must not be negative", reason="INVALID_PAGE_SIZE")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


async def page_of(session, query, time_column, key_column, requested_size: int, token: str):
    """Rows of ``query`` ordered by (time, key), after ``token``; returns (rows, next_token)."""
    size = page_size(requested_size)
    if token:
        when, key = decode_token(token)
        query = query.where(or_(time_column > when, and_(time_column == when, key_column > key)))
    rows = (await session.execute(query.order_by(time_column, key_column).limit(size + 1))).all()
    next_token = ""
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]._mapping
        next_token = encode_token(last[time_column.key], str(last[key_column.key]))
    return rows, next_token
