"""released objects, for resync deletes

Revision ID: 0003
Revises: 0002

`released`: the networks, subnets and ports the store released (and the outbox told ONOS to
delete), with when. A full resync replays these deletes, since ONOS offers no read-back to
find an object that came back there; the controller's sweep prunes rows older than a week.
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'released',
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('object_id', sa.String(length=36), nullable=False),
        sa.Column('released_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('kind', 'object_id'),
    )
    op.create_index('ix_released_at', 'released', ['released_at'])


def downgrade() -> None:
    op.drop_index('ix_released_at', table_name='released')
    op.drop_table('released')
