"""The hash chain of audit records: pure functions, no database, no I/O.

Record ``n`` stores ``prev_hash`` (the hash of record ``n - 1``, ``""`` for the first) and

    hash = sha256(canonical JSON of {"event": <the AuditEvent as proto JSON>,
                                      "prev_hash": ..., "record_time": ..., "sequence": n})

where canonical JSON means sorted keys, no whitespace, ASCII only. The denormalised filter
columns (event id, service, method, actor, outcome, occur time) are copies of event fields,
so the hash covers them through the event; :func:`verify` re-derives them from the payload
and checks the columns against it, so editing a column alone is caught as well.

:func:`verify` walks the rows in sequence order (any iterable, so callers can stream them in
batches) and compares the newest one with the chain head, which detects, and names the first
record affected by, an edited record, a deleted record (also the newest ones), records
reordered or spliced in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from google.protobuf import json_format
from google.protobuf.message import DecodeError

from innominatus.common.v1 import audit_event_pb2

UTC = dt.timezone.utc
GENESIS_HASH = ""


def utc(value: dt.datetime) -> dt.datetime:
    """An aware UTC datetime (SQLite hands back naive ones, which we always store as UTC)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def time_iso(value: dt.datetime) -> str:
    """The one string form of a record time that goes into a hash (UTC, microseconds)."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def outcome_name(outcome: int) -> str:
    """The string stored in the ``outcome`` column, e.g. ``AUDIT_OUTCOME_SUCCEEDED``."""
    try:
        return audit_event_pb2.AuditOutcome.Name(outcome)
    except ValueError:
        return str(int(outcome))


def as_event(event: audit_event_pb2.AuditEvent | bytes) -> audit_event_pb2.AuditEvent:
    if isinstance(event, audit_event_pb2.AuditEvent):
        return event
    return audit_event_pb2.AuditEvent.FromString(bytes(event))


def canonical_event(event: audit_event_pb2.AuditEvent | bytes) -> dict:
    """The event as proto JSON (field names as in the .proto), the form the hash covers."""
    return json_format.MessageToDict(as_event(event), preserving_proto_field_name=True)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def record_hash(prev_hash: str, sequence: int, event: audit_event_pb2.AuditEvent | bytes, record_time_iso: str) -> str:
    """Hex SHA-256 of record ``sequence`` (``event``: the AuditEvent or its serialized bytes)."""
    document = {
        "event": canonical_event(event),
        "prev_hash": prev_hash,
        "record_time": record_time_iso,
        "sequence": int(sequence),
    }
    return hashlib.sha256(canonical_json(document)).hexdigest()


def event_occur_time(event: audit_event_pb2.AuditEvent, record_time: dt.datetime) -> dt.datetime:
    """The ``occur_time`` column of an event: its own time, else the record time."""
    if event.HasField("occur_time"):
        return event.occur_time.ToDatetime(tzinfo=UTC)
    return utc(record_time)


def denormalised(event: audit_event_pb2.AuditEvent, record_time: dt.datetime) -> dict[str, Any]:
    """The filter columns a record repeats from its event."""
    return {
        "event_id": event.id,
        "service": event.service,
        "method": event.method,
        "actor": event.actor,
        "outcome": outcome_name(event.outcome),
        "occur_time": event_occur_time(event, record_time),
    }


@dataclass(frozen=True)
class ChainRecord:
    """One row of the ``records`` table (also what :func:`verify` reads from any row)."""

    sequence: int
    event_id: str
    service: str
    method: str
    actor: str
    outcome: str
    occur_time: dt.datetime
    record_time: dt.datetime
    payload: bytes
    prev_hash: str
    hash: str

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def build_record(
    prev_hash: str, sequence: int, event: audit_event_pb2.AuditEvent, record_time: dt.datetime
) -> ChainRecord:
    """Chain ``event`` after a record whose hash is ``prev_hash``."""
    # Keep only what the columns can hold, so the hash is re-derivable from what is stored.
    record_time = utc(record_time)
    payload = event.SerializeToString(deterministic=True)
    return ChainRecord(
        sequence=int(sequence),
        payload=payload,
        record_time=record_time,
        prev_hash=prev_hash,
        hash=record_hash(prev_hash, sequence, event, time_iso(record_time)),
        **denormalised(event, record_time),
    )


@dataclass(frozen=True)
class Head:
    sequence: int
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_sequence: int = 0
    problem: str = ""


def _same_time(a: dt.datetime | None, b: dt.datetime) -> bool:
    return a is not None and utc(a) == utc(b)


class ChainVerifier:
    """Checks records fed in ascending sequence order; stops at the first that does not fit.

    ``feed`` returns False once a problem was found (the caller may stop reading rows);
    ``finish`` compares the newest record with the chain head and gives the result.
    """

    def __init__(self) -> None:
        self.checked = 0
        self.last_sequence = 0
        self.last_hash = GENESIS_HASH
        self.failure: VerifyResult | None = None

    def _fail(self, sequence: int, problem: str) -> bool:
        self.failure = VerifyResult(ok=False, checked=self.checked, first_bad_sequence=int(sequence), problem=problem)
        return False

    def feed(self, row: Any) -> bool:
        if self.failure is not None:
            return False
        sequence = int(row.sequence)
        expected = self.last_sequence + 1
        self.checked += 1
        if sequence < expected:
            return self._fail(sequence, f"record {sequence} is out of order (it comes after record {self.last_sequence})")
        if sequence > expected:
            missing = f"record {expected} is" if sequence == expected + 1 else f"records {expected}-{sequence - 1} are"
            return self._fail(sequence, f"record {sequence}: {missing} missing (deleted)")
        if row.prev_hash != self.last_hash:
            before = f"record {self.last_sequence}" if self.last_sequence else "the start of the chain"
            return self._fail(
                sequence,
                f"record {sequence} is out of order or was replaced: its prev_hash does not match the hash of {before}",
            )
        try:
            event = audit_event_pb2.AuditEvent.FromString(bytes(row.payload))
        except DecodeError:
            return self._fail(sequence, f"record {sequence} was edited (its event payload is unreadable)")
        if record_hash(row.prev_hash, sequence, event, time_iso(row.record_time)) != row.hash:
            return self._fail(sequence, f"record {sequence} was edited (hash mismatch)")
        for column, value in denormalised(event, row.record_time).items():
            stored = getattr(row, column)
            matches = _same_time(stored, value) if column == "occur_time" else stored == value
            if not matches:
                return self._fail(
                    sequence, f"record {sequence} was edited (column {column!r} does not match the recorded event)"
                )
        self.last_sequence = sequence
        self.last_hash = row.hash
        return True

    def finish(self, head: Any | None) -> VerifyResult:
        if self.failure is not None:
            return self.failure
        last = self.last_sequence
        if head is None:
            if last == 0:
                return VerifyResult(ok=True, checked=0)
            return VerifyResult(
                ok=False, checked=self.checked, first_bad_sequence=last, problem="the chain head is missing"
            )
        head_sequence = int(head.sequence)
        if head_sequence > last:
            after = f"after {last}" if last else "(all of them)"
            return VerifyResult(
                ok=False,
                checked=self.checked,
                first_bad_sequence=last + 1,
                problem=f"the newest records {after} were deleted: the chain head is at record {head_sequence}",
            )
        if head_sequence < last:
            return VerifyResult(
                ok=False,
                checked=self.checked,
                first_bad_sequence=head_sequence + 1,
                problem=f"record {head_sequence + 1} was added outside the chain (the chain head is at record {head_sequence})",
            )
        if head.hash != self.last_hash:
            return VerifyResult(
                ok=False,
                checked=self.checked,
                first_bad_sequence=last,
                problem=f"record {last} was replaced (its hash does not match the chain head)",
            )
        return VerifyResult(ok=True, checked=self.checked)


def verify(rows: Iterable[Any], head: Any | None) -> VerifyResult:
    """Verify ``rows`` (ascending sequence, e.g. a generator reading batches) against ``head``."""
    verifier = ChainVerifier()
    for row in rows:
        if not verifier.feed(row):
            break
    return verifier.finish(head)
