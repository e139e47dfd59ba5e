"""Tables of the audit service (schema ``audit`` on PostgreSQL).

``records`` is the append-only chain: each row carries the serialized ``AuditEvent`` it
was built from (``payload``), the hash of its predecessor and its own hash. The columns
``event_id``/``service``/``method``/``actor``/``outcome``/``occur_time`` repeat fields of the
payload so that list and export can filter with indexes; verification re-derives them from
the payload, so editing one of them alone is detected.

``chain_head`` holds exactly one row (id = 1) naming the newest record. Appends lock it
(``SELECT ... FOR UPDATE`` on PostgreSQL, the database write lock on SQLite), which
serializes them, and verification compares it with the newest record, so deleting the
tail of the chain is detected too. The initial migration inserts the row.

No outbox: the audit service does not audit its own appends (that would never end).
"""

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, LargeBinary, MetaData, String, Table

metadata = MetaData()

# BigInteger on PostgreSQL, INTEGER on SQLite (there only INTEGER PRIMARY KEY is the rowid).
SEQUENCE_TYPE = BigInteger().with_variant(Integer(), "sqlite")

HEAD_ID = 1

records = Table(
    "records",
    metadata,
    # Assigned by the service under the chain-head lock, never by the database.
    Column("sequence", SEQUENCE_TYPE, primary_key=True, autoincrement=False),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("service", String(128), nullable=False),
    Column("method", String(512), nullable=False),
    Column("actor", String(256), nullable=False),
    Column("outcome", String(32), nullable=False),
    # When the mutation happened (the event's occur_time; the record time when it has none).
    Column("occur_time", DateTime(timezone=True), nullable=False),
    # When the audit service chained it (server clock, UTC, microseconds).
    Column("record_time", DateTime(timezone=True), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_records_actor_sequence", "actor", "sequence"),
    Index("ix_records_service_sequence", "service", "sequence"),
    Index("ix_records_outcome_sequence", "outcome", "sequence"),
    Index("ix_records_occur_time", "occur_time"),
)

chain_head = Table(
    "chain_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # Sequence and hash of the newest record (0 and "" while the chain is empty).
    Column("sequence", SEQUENCE_TYPE, nullable=False),
    Column("hash", String(64), nullable=False),
)
