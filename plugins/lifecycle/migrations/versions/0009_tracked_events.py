"""tracked events: the track endpoint's inbox, read by the engine beside the CRM's events

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'


def upgrade() -> None:
    op.create_table(
        'lifecycle_tracked_events',
        sa.Column('event_id', sa.String(length=64), primary_key=True),
        sa.Column('message_id', sa.String(length=200), nullable=False, unique=True),
        sa.Column('contact_id', sa.String(length=64), nullable=False),
        sa.Column('event_type', sa.String(length=50), nullable=False),
        sa.Column('occurred_at', sa.DateTime(), nullable=False),
        sa.Column('received_at', sa.DateTime(), nullable=False),
        sa.Column('properties', sa.JSON(), nullable=True),
    )
    op.create_index('ix_tracked_events_type_received', 'lifecycle_tracked_events', ['event_type', 'received_at'])
    op.create_index(
        'ix_tracked_events_contact_type_time', 'lifecycle_tracked_events', ['contact_id', 'event_type', 'occurred_at']
    )


def downgrade() -> None:
    op.drop_index('ix_tracked_events_contact_type_time', table_name='lifecycle_tracked_events')
    op.drop_index('ix_tracked_events_type_received', table_name='lifecycle_tracked_events')
    op.drop_table('lifecycle_tracked_events')
