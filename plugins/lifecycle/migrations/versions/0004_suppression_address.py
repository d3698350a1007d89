"""suppressions by address: an opt-out, bounce or spam report also holds for the normalised address

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'


def upgrade() -> None:
    with op.batch_alter_table('lifecycle_suppressions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address', sa.String(length=320), nullable=True))
        batch_op.create_index('ix_suppressions_address', ['address', 'channel'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('lifecycle_suppressions', schema=None) as batch_op:
        batch_op.drop_index('ix_suppressions_address')
        batch_op.drop_column('address')
