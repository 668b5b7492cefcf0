"""sync: lease token, outbox rejections, dead letters

Revision ID: 0004
Revises: 0003

`leases.token`: bumped by each takeover; a holder retires outbox rows only while its token is
still the lease's (a holder that lost the lease mid-batch cannot retire the new holder's
rows). `outbox.rejections`: how many times ONOS rejected the row. `dead_letters`: rows
rejected `--onos-dead-letter-after` times, out of the outbox so they stop blocking their
object, until an admin skips or retries them.
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('leases', sa.Column('token', sa.BigInteger(), nullable=False,
                                      server_default=sa.text('0')))
    op.add_column('outbox', sa.Column('rejections', sa.Integer(), nullable=False,
                                      server_default=sa.text('0')))
    op.create_table(
        'dead_letters',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('object_id', sa.String(length=36), nullable=False),
        sa.Column('op', sa.String(length=16), nullable=False),
        sa.Column('payload', sa.Text(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('dead_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('dead_letters')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('rejections')
    with op.batch_alter_table('leases') as batch:
        batch.drop_column('token')
