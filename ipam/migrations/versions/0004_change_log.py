"""topology change log

Revision ID: 0004
Revises: 0003

* `change_log`: a row per port, node or subnet a transaction changed, written in that
  transaction, ordered by a revision the database assigns (BIGSERIAL on PostgreSQL, an
  AUTOINCREMENT rowid on SQLite, never reused after compaction). Agents watch it from their
  last revision instead of polling whole snapshots (issue 14).
* `change_log_floor`: the highest revision compaction deleted; a watcher from below it
  needs a snapshot.
* `nodes.ready`: the stale sweep's guarded UPDATE flips it once per ready -> stale
  transition, so that transition is one log row, not one per sweep.
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'change_log',
        sa.Column('revision', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('key', sa.String(length=253), nullable=False),
        sa.Column('op', sa.String(length=4), nullable=False),
        sa.Column('node', sa.String(length=253), nullable=False),
        sa.Column('subnets', sa.Text(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('revision'),
        sqlite_autoincrement=True,
    )
    floor = op.create_table(
        'change_log_floor',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('floor', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(floor, [{'id': 1, 'floor': 0}])
    op.add_column('nodes', sa.Column('ready', sa.Boolean(), nullable=False,
                                     server_default=sa.text('true')))


def downgrade() -> None:
    with op.batch_alter_table('nodes') as batch:
        batch.drop_column('ready')
    op.drop_table('change_log_floor')
    op.drop_table('change_log')
