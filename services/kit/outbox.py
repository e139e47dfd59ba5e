"""The audit outbox every service keeps in its own database, and the relay that empties it.

A mutation's audit event is inserted in the same transaction as the change itself, so
the change and its record commit or vanish together. The relay ships committed events to
the audit service and deletes them once the audit service has acknowledged them; while
the audit service is down they wait here, so nothing is lost.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Sequence

import grpc
from sqlalchemy import BigInteger, Column, DateTime, Integer, LargeBinary, MetaData, String, Table, delete, func, insert, select

from innominatus.common.v1 import audit_event_pb2
from innominatus.kit.db import Database
from innominatus.kit.errors import Unavailable
from innominatus.kit.logs import get_logger

log = get_logger(__name__)

OUTBOX_TABLE = "audit_outbox"


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        OUTBOX_TABLE,
        metadata,
        # BigInteger on PostgreSQL, plain INTEGER on SQLite so it autoincrements there too.
        Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("payload", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


class Outbox:
    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table
        self.wakeup = asyncio.Event()

    async def add(self, session, event: audit_event_pb2.AuditEvent) -> None:
        await session.execute(insert(self.table).values(event_id=event.id, payload=event.SerializeToString()))

    async def record_alone(self, event: audit_event_pb2.AuditEvent) -> None:
        """Record an event in a transaction of its own (denied or failed mutations)."""
        async with self.db.transaction() as s:
            await self.add(s, event)
        self.wakeup.set()

    async def pending(self) -> int:
        async with self.db.transaction() as s:
            return (await s.execute(select(func.count()).select_from(self.table))).scalar_one()


Shipper = Callable[[Sequence[audit_event_pb2.AuditEvent]], Awaitable[None]]


class OutboxRelay:
    """Ships the outbox to the audit service, oldest first, in batches."""

    def __init__(self, outbox: Outbox, ship: Shipper, interval: float = 1.0, batch: int = 200) -> None:
        self.outbox = outbox
        self.ship = ship
        self.interval = interval
        self.batch = batch
        self._task: asyncio.Task | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.outbox.db.service}")

    async def stop(self) -> None:
        self._stopping = True
        self.outbox.wakeup.set()
        if self._task is not None:
            await self._task

    async def drain_once(self) -> int:
        """Ship one batch; returns how many events were delivered."""
        table = self.outbox.table
        async with self.outbox.db.transaction() as s:
            query = select(table.c.seq, table.c.payload).order_by(table.c.seq).limit(self.batch)
            if self.outbox.db.is_postgres:
                query = query.with_for_update(skip_locked=True)
            rows = (await s.execute(query)).all()
            if not rows:
                return 0
            events = [audit_event_pb2.AuditEvent.FromString(r.payload) for r in rows]
            await self.ship(events)
            await s.execute(delete(table).where(table.c.seq.in_([r.seq for r in rows])))
            return len(rows)

    async def _run(self) -> None:
        delay = self.interval
        while not self._stopping:
            try:
                while await self.drain_once():
                    pass
                delay = self.interval
            except (grpc.RpcError, OSError, Unavailable) as exc:
                # Audit is down or unreachable: keep the events and try again later.
                delay = min(delay * 2, 30.0)
                log.warning("audit relay could not ship events; will retry", error=str(exc), retry_in=delay)
            except Exception:  # noqa: BLE001 - the relay must outlive any single bad batch
                delay = min(delay * 2, 30.0)
                log.exception("audit relay failed; will retry", retry_in=delay)
            try:
                await asyncio.wait_for(self.outbox.wakeup.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            self.outbox.wakeup.clear()
        # Final best-effort flush on shutdown.
        try:
            while await self.drain_once():
                pass
        except Exception:  # noqa: BLE001
            log.warning("audit relay stopped with events still in the outbox; they ship on next start")
