"""channel reason: why a message went on its channel (a step's channel choice or fallback), and
the index that finds a contact's latest engagement (choose_by: last_engaged)

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0017'
down_revision = '0016'


def upgrade() -> None:
    with op.batch_alter_table('lifecycle_messages') as batch:
        batch.add_column(sa.Column('channel_reason', sa.String(length=200), nullable=True))
    op.create_index(
        'ix_provider_events_contact_time', 'lifecycle_provider_events', ['contact_id', 'occurred_at'], unique=False
    )


def downgrade() -> None:
    op.drop_index('ix_provider_events_contact_time', table_name='lifecycle_provider_events')
    with op.batch_alter_table('lifecycle_messages') as batch:
        batch.drop_column('channel_reason')
