"""channel reason: why a message went on its channel (a step's channel choice or fallback)

Revision ID: 0017
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0015'


def upgrade() -> None:
    with op.batch_alter_table('lifecycle_messages') as batch:
        batch.add_column(sa.Column('channel_reason', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('lifecycle_messages') as batch:
        batch.drop_column('channel_reason')
