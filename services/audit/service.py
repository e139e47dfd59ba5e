"""The audit service: the append-only, hash-chained record of every mutation.

Services ship the audit events from their outboxes with ``AppendEvents``; each new event
becomes the next record of the chain (see :mod:`innominatus.audit.chain`). Appends are
serialized by locking the single ``chain_head`` row (PostgreSQL) or taking the database
write lock first thing (SQLite), so sequence numbers and ``prev_hash`` never fork.

Reads: ``ListRecords`` (pages ordered by sequence, oldest first), ``ExportRecords`` (a
stream, oldest first) and ``VerifyChain`` (recomputes the chain, names the first record
that does not fit). Who may call what is decided by the kit's interceptors from the proto
options; nothing here checks authorization.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json

from sqlalchemy import select, text, update
from sqlalchemy.exc import OperationalError

from innominatus.audit import chain, models
from innominatus.audit.v1 import audit_pb2, audit_pb2_grpc
from innominatus.common.v1 import audit_event_pb2
from innominatus.kit import db
from innominatus.kit.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unavailable
from innominatus.kit.logs import get_logger
from innominatus.kit.pagination import page_size
from innominatus.kit.server import Runtime, ServiceDefinition

log = get_logger(__name__)

MAX_EVENTS_PER_APPEND = 1000
MAX_EVENT_ID_LENGTH = 128
BATCH = 500

_COLUMNS = [
    models.records.c.sequence,
    models.records.c.event_id,
    models.records.c.service,
    models.records.c.method,
    models.records.c.actor,
    models.records.c.outcome,
    models.records.c.occur_time,
    models.records.c.record_time,
    models.records.c.payload,
    models.records.c.prev_hash,
    models.records.c.hash,
]


# ---------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------


def _to_proto(row) -> audit_pb2.AuditRecord:
    record = audit_pb2.AuditRecord(
        sequence=row.sequence,
        event=audit_event_pb2.AuditEvent.FromString(bytes(row.payload)),
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
    record.record_time.FromDatetime(chain.utc(row.record_time))
    return record


def _validate_events(events) -> None:
    violations: list[FieldViolation] = []
    if len(events) > MAX_EVENTS_PER_APPEND:
        raise InvalidArgument(
            f"at most {MAX_EVENTS_PER_APPEND} events per AppendEvents call (got {len(events)})",
            violations=[FieldViolation("events", f"at most {MAX_EVENTS_PER_APPEND} events")],
        )
    for index, event in enumerate(events):
        if not event.id:
            violations.append(FieldViolation(f"events[{index}].id", "required"))
        elif len(event.id) > MAX_EVENT_ID_LENGTH:
            violations.append(FieldViolation(f"events[{index}].id", f"at most {MAX_EVENT_ID_LENGTH} characters"))
        if not event.method:
            violations.append(FieldViolation(f"events[{index}].method", "required"))
    if violations:
        fields = ", ".join(v.field for v in violations)
        raise InvalidArgument(f"invalid audit events: {fields} (id and method are required)", violations=violations)


# ---------------------------------------------------------------------------
# Filters and page tokens
# ---------------------------------------------------------------------------


def _filter_times(record_filter: audit_pb2.RecordFilter) -> tuple[dt.datetime | None, dt.datetime | None]:
    start = record_filter.start_time.ToDatetime(tzinfo=dt.timezone.utc) if record_filter.HasField("start_time") else None
    end = record_filter.end_time.ToDatetime(tzinfo=dt.timezone.utc) if record_filter.HasField("end_time") else None
    if start is not None and end is not None and end < start:
        raise InvalidArgument(
            "filter.end_time is before filter.start_time",
            violations=[FieldViolation("filter.end_time", "must not be before filter.start_time")],
        )
    return start, end


def _apply_filter(query, record_filter: audit_pb2.RecordFilter):
    """Apply a RecordFilter; start_time is inclusive and end_time exclusive, on the event's occur_time."""
    table = models.records
    start, end = _filter_times(record_filter)
    if record_filter.actor:
        query = query.where(table.c.actor == record_filter.actor)
    if record_filter.service:
        query = query.where(table.c.service == record_filter.service)
    if record_filter.method:
        query = query.where(table.c.method.contains(record_filter.method, autoescape=True))
    if record_filter.outcome:
        query = query.where(table.c.outcome == chain.outcome_name(record_filter.outcome))
    # SQLite keeps naive UTC datetimes; PostgreSQL compares aware ones. UTC works for both.
    if start is not None:
        query = query.where(table.c.occur_time >= start)
    if end is not None:
        query = query.where(table.c.occur_time < end)
    return query


def _filter_fingerprint(record_filter: audit_pb2.RecordFilter) -> str:
    raw = record_filter.SerializeToString(deterministic=True)
    return hashlib.sha256(raw).hexdigest()[:16]


def _encode_token(after_sequence: int, record_filter: audit_pb2.RecordFilter) -> str:
    raw = json.dumps({"s": after_sequence, "f": _filter_fingerprint(record_filter)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid_token(message: str) -> InvalidArgument:
    return InvalidArgument(
        message, reason="INVALID_PAGE_TOKEN", violations=[FieldViolation("page_token", message)]
    )


def _decode_token(token: str, record_filter: audit_pb2.RecordFilter) -> int:
    """The sequence a page token continues after (AIP-158: only valid with the same filter)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["s"]
        fingerprint = data["f"]
        if not isinstance(after, int) or isinstance(after, bool) or after < 0 or not isinstance(fingerprint, str):
            raise ValueError(token)
    except (ValueError, KeyError, TypeError):
        raise _invalid_token(
            "page_token is not valid: pass the next_page_token of the previous response unchanged"
        ) from None
    if fingerprint != _filter_fingerprint(record_filter):
        raise _invalid_token("page_token was issued for a different filter: keep the filter unchanged while paging")
    return after


# ---------------------------------------------------------------------------
# Reading rows
# ---------------------------------------------------------------------------


async def _batches(session, query, size: int = BATCH):
    """Rows of ``query`` in ascending sequence, fetched ``size`` at a time (keyset on sequence)."""
    table = models.records
    after = 0
    while True:
        rows = (
            await session.execute(query.where(table.c.sequence > after).order_by(table.c.sequence).limit(size))
        ).all()
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        after = rows[-1].sequence


async def _consistent_read(session, is_postgres: bool) -> None:
    """On PostgreSQL, read one snapshot for the whole transaction (head and records agree)."""
    if is_postgres:
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))


def _is_locked(exc: OperationalError) -> bool:
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return "database is locked" in message or "database table is locked" in message


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def _is_postgres(self) -> bool:
        return bool(self.runtime.db is not None and self.runtime.db.is_postgres)

    # -- append --------------------------------------------------------------

    async def _lock_head(self, session):
        """Take the chain-head lock for the rest of the transaction; returns the head row."""
        head = models.chain_head
        query = select(head.c.sequence, head.c.hash).where(head.c.id == models.HEAD_ID)
        if self._is_postgres:
            return (await session.execute(query.with_for_update())).one_or_none()
        # SQLite: a write as the first statement takes the database write lock (waiting up
        # to the busy timeout) with a fresh snapshot, like BEGIN IMMEDIATE; reading first
        # and writing later could fail with SQLITE_BUSY_SNAPSHOT instead of waiting.
        await session.execute(update(head).where(head.c.id == models.HEAD_ID).values(sequence=head.c.sequence))
        return (await session.execute(query)).one_or_none()

    async def AppendEvents(self, request, context):
        events = list(request.events)
        _validate_events(events)
        accepted: list[str] = []
        unique: dict[str, audit_event_pb2.AuditEvent] = {}
        for event in events:
            if event.id not in unique:
                unique[event.id] = event
                accepted.append(event.id)
        if not unique:
            return audit_pb2.AppendEventsResponse()
        session = db.session()
        records = models.records
        try:
            head = await self._lock_head(session)
            if head is None:
                count = (await session.execute(select(records.c.sequence).limit(1))).first()
                if count is not None:
                    raise FailedPrecondition(
                        "the audit chain head is missing while records exist; run VerifyChain and restore the database",
                        reason="AUDIT_CHAIN_HEAD_MISSING",
                    )
                await session.execute(models.chain_head.insert().values(id=models.HEAD_ID, sequence=0, hash=""))
                head = await self._lock_head(session)
            # Checked under the lock, so two deliveries of one event cannot both be chained.
            present: set[str] = set()
            ids = list(unique)
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                rows = await session.execute(select(records.c.event_id).where(records.c.event_id.in_(chunk)))
                present.update(r.event_id for r in rows)
            sequence, prev_hash = int(head.sequence), head.hash
            new_rows = []
            for event_id, event in unique.items():
                if event_id in present:
                    continue
                sequence += 1
                record = chain.build_record(prev_hash, sequence, event, chain.now())
                new_rows.append(record.values())
                prev_hash = record.hash
            if new_rows:
                await session.execute(records.insert(), new_rows)
                await session.execute(
                    update(models.chain_head)
                    .where(models.chain_head.c.id == models.HEAD_ID)
                    .values(sequence=sequence, hash=prev_hash)
                )
        except OperationalError as exc:
            if _is_locked(exc):
                raise Unavailable(
                    "the audit chain is busy (another append holds the lock); retry", reason="AUDIT_CHAIN_BUSY"
                ) from None
            raise
        if new_rows:
            log.debug("audit events chained", count=len(new_rows), head=sequence)
        return audit_pb2.AppendEventsResponse(accepted_ids=accepted)

    # -- reads ---------------------------------------------------------------

    async def ListRecords(self, request, context):
        size = page_size(request.page_size)
        after = _decode_token(request.page_token, request.filter) if request.page_token else 0
        table = models.records
        query = _apply_filter(select(*_COLUMNS), request.filter)
        query = query.where(table.c.sequence > after).order_by(table.c.sequence).limit(size + 1)
        rows = (await db.session().execute(query)).all()
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            next_token = _encode_token(rows[-1].sequence, request.filter)
        return audit_pb2.ListRecordsResponse(records=[_to_proto(r) for r in rows], next_page_token=next_token)

    async def VerifyChain(self, request, context):
        session = db.session()
        await _consistent_read(session, self._is_postgres)
        head_table = models.chain_head
        head = (
            await session.execute(select(head_table.c.sequence, head_table.c.hash).where(head_table.c.id == models.HEAD_ID))
        ).one_or_none()
        verifier = chain.ChainVerifier()
        async for rows in _batches(session, select(*_COLUMNS)):
            if not all(verifier.feed(row) for row in rows):
                break
        result = verifier.finish(head)
        if not result.ok:
            log.warning("audit chain verification failed", first_bad_sequence=result.first_bad_sequence, problem=result.problem)
        return audit_pb2.VerifyChainResponse(
            ok=result.ok,
            records_checked=result.checked,
            first_bad_sequence=result.first_bad_sequence,
            problem=result.problem,
        )

    async def ExportRecords(self, request, context):
        query = _apply_filter(select(*_COLUMNS), request.filter)
        async with self.runtime.db.transaction() as session:
            await _consistent_read(session, self._is_postgres)
            async for rows in _batches(session, query):
                for row in rows:
                    yield audit_pb2.ExportRecordsResponse(record=_to_proto(row))


def definition() -> ServiceDefinition:
    def register(server, runtime: Runtime) -> None:
        audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(runtime), server)

    return ServiceDefinition(
        name="audit",
        descriptors=[audit_pb2.DESCRIPTOR.services_by_name["AuditService"]],
        register=register,
        outbox_table=None,
    )
