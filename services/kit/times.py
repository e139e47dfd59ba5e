"""Time helpers shared by the services: everything is stored and returned in UTC."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime. SQLite hands datetimes back naive; we always store UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp for ``value`` (None stays None, so the field stays unset)."""
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(utc(value))
    return ts


def set_time(field: timestamp_pb2.Timestamp, value: dt.datetime | None) -> None:
    """Fill a Timestamp field in place (a no-op for None)."""
    if value is not None:
        field.CopyFrom(timestamp(value))
