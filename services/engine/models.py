"""Tables of the engine service (schema ``engine`` on PostgreSQL).

``runs`` holds one row per workflow run with the definition it runs (a JSON snapshot, so a
run resumed by another worker uses exactly the same definition) and its lease: the worker
driving a run owns ``lease_owner`` until ``lease_expires_at`` and extends it while it works.
``step_executions`` holds one row per step (per item for ``for_each`` steps, plus one per
compensation step that ran), with its own attempt count, idempotency key and lease.
``run_events`` is the run's append-only log, numbered per run by ``runs.event_seq``.
"""

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    func,
)

from innominatus.kit.outbox import outbox_table

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("application", String(128), nullable=False, default=""),
    Column("environment", String(128), nullable=False, default=""),
    Column("inputs", JSON, nullable=False, default=dict),  # the run's params
    Column("state", String(32), nullable=False, index=True),
    Column("error", Text, nullable=False, default=""),
    Column("creator", String(128), nullable=False, default=""),
    # The token of the user who started the run is not stored; steps act as the engine.
    Column("request_id", String(128), nullable=True, unique=True),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # --- durable execution
    Column("definition", JSON, nullable=True),  # snapshot of the WorkflowDef the run executes
    Column("concurrency", Integer, nullable=False, default=0, server_default="0"),
    Column("deadline_at", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    # A run is claimable when it is not finished, not paused, wake_at has come and nobody
    # holds an unexpired lease. wake_at NULL = waiting for something outside (approval, child run).
    Column("wake_at", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False, server_default=false()),
    Column("paused", Boolean, nullable=False, default=False, server_default=false()),
    Column("event_seq", Integer, nullable=False, default=0, server_default="0"),
    Column("parent_run_id", String(64), nullable=True),
    Column("parent_step_id", String(256), nullable=True),
    Column("parent_iteration", Integer, nullable=True),
    # Runs of one concurrency group (deploys and removals of one "<application>/<environment>",
    # or a workflow's spec.concurrency_group) run one at a time, oldest first: a PENDING run is
    # not claimed while another top-level run of its group is RUNNING or an older one PENDING.
    # NULL: no group (child runs never have one: they run in their parent's turn).
    Column("concurrency_key", String(256), nullable=True),
    Index("ix_runs_claim", "state", "wake_at"),
    # The claim's "is an older run of this group unfinished?" look-up.
    Index("ix_runs_concurrency", "concurrency_key", "state", "created_at"),
)

step_executions = Table(
    "step_executions",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    # A compensation step is recorded as "<step>/on_failure/<compensation step>".
    Column("step_id", String(256), primary_key=True),
    Column("iteration", Integer, primary_key=True),  # for_each item index; 0 otherwise
    Column("position", Integer, nullable=False, default=0),  # order in the definition, for display
    Column("type", String(64), nullable=False),
    Column("kind", String(16), nullable=False, default="step"),  # step | compensation
    Column("state", String(32), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    # Stable for the step and item, the same for every attempt (also after a crash).
    Column("idempotency_key", String(200), nullable=False),
    Column("item", JSON, nullable=True),
    Column("items_total", Integer, nullable=True),  # set once a for_each step has fanned out
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("ended_at", DateTime(timezone=True), nullable=True),
    Column("completion_seq", Integer, nullable=True),  # the run event seq of its completion
    Column("outputs", JSON, nullable=False, default=dict),
    Column("error", Text, nullable=False, default=""),
    Column("error_kind", String(64), nullable=False, default=""),
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Column("child_run_id", String(64), nullable=True),
)

run_events = Table(
    "run_events",
    metadata,
    Column("run_id", String(64), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("step_id", String(256), nullable=True),
    Column("message", Text, nullable=False, default=""),
)

outbox = outbox_table(metadata)
