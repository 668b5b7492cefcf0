"""config generation; partial indexes off the pod path; free ranges by last offset

Revision ID: 0002
Revises: 0001

* `ipam_config`: one counter every pool/subnet/namespace-default change bumps. Replicas keep
  that configuration in memory; each pod-path transaction reads this row to know whether its
  copy is still the database's truth, and on PostgreSQL locks it FOR SHARE so a concurrent
  admin change (which updates the row first) is serialised against it.
* The sticky-retention and quarantine-sweep indexes only ever serve idle ports and
  quarantined addresses; as partial indexes an allocation or release no longer writes them
  (15 -> 13 pages per allocation on SQLite).
* `ix_free_ranges_last`: giving an offset back looks for the range ending just below it;
  without this index that is a scan over a fragmented subnet's ranges.
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

IDLE = sa.text("state = 'idle'")
QUARANTINED = sa.text("state = 'quarantined'")


def upgrade() -> None:
    table = op.create_table(
        'ipam_config',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('generation', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(table, [{'id': 1, 'generation': 1}])
    op.drop_index('ix_ports_pool_state_updated', table_name='ports')
    op.create_index('ix_ports_idle', 'ports', ['pool_id', 'updated_at'],
                    sqlite_where=IDLE, postgresql_where=IDLE)
    op.drop_index('ix_addresses_state_free_at', table_name='addresses')
    op.create_index('ix_addresses_quarantine', 'addresses', ['free_at'],
                    sqlite_where=QUARANTINED, postgresql_where=QUARANTINED)
    op.create_index('ix_free_ranges_last', 'free_ranges', ['subnet_id', 'last_off'])


def downgrade() -> None:
    op.drop_index('ix_free_ranges_last', table_name='free_ranges')
    op.drop_index('ix_addresses_quarantine', table_name='addresses')
    op.create_index('ix_addresses_state_free_at', 'addresses', ['state', 'free_at'])
    op.drop_index('ix_ports_idle', table_name='ports')
    op.create_index('ix_ports_pool_state_updated', 'ports', ['pool_id', 'state', 'updated_at'])
    op.drop_table('ipam_config')
