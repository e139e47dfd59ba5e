"""run concurrency groups

``runs.concurrency_key``: runs of one group (deploys and removals of one application in one
environment, or a workflow's ``spec.concurrency_group``) run one at a time, oldest first; and
the index the claim's "is an older run of this group unfinished?" look-up uses. Unfinished
deploy and undeploy-app runs get their application's group, so a deploy started after the
upgrade waits for one started before it.

Revision ID: d7f3a91c5b20
Revises: c4e1d2a7b9f3
Create Date: 2026-12-02 09:00:00.000000
"""
from alembic import context, op
import sqlalchemy as sa

revision = 'd7f3a91c5b20'
down_revision = 'c4e1d2a7b9f3'
branch_labels = None
depends_on = None


def _schema():
    # ALTER TABLE is rendered by alembic itself, outside SQLAlchemy's schema_translate_map:
    # name the service's schema (PostgreSQL) explicitly; None on SQLite.
    return context.config.attributes.get("schema")


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=_schema()) as batch_op:
        batch_op.add_column(sa.Column('concurrency_key', sa.String(length=256), nullable=True))
        batch_op.create_index('ix_runs_concurrency', ['concurrency_key', 'state', 'created_at'], unique=False)
    runs = sa.table(
        "runs", sa.column("workflow", sa.String), sa.column("application", sa.String),
        sa.column("environment", sa.String), sa.column("state", sa.String), sa.column("parent_run_id", sa.String),
        sa.column("concurrency_key", sa.String), schema=_schema(),
    )
    op.execute(
        runs.update()
        .where(runs.c.workflow.in_(["deploy", "undeploy-app"]) & runs.c.state.in_(["PENDING", "RUNNING"])
               & runs.c.parent_run_id.is_(None) & (runs.c.application != "") & (runs.c.environment != ""))
        .values(concurrency_key=runs.c.application + sa.literal("/") + runs.c.environment)
    )


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=_schema()) as batch_op:
        batch_op.drop_index('ix_runs_concurrency')
        batch_op.drop_column('concurrency_key')
