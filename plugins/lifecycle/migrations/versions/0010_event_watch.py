"""event watch: each realtime program's watermarks over the trigger events, and what waits for a run

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'


def upgrade() -> None:
    op.create_table(
        'lifecycle_event_watch',
        sa.Column('program', sa.String(length=64), primary_key=True),
        sa.Column('mapping', sa.String(length=64), nullable=False),
        sa.Column('marks', sa.JSON(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('checked_at', sa.DateTime(), nullable=False),
        sa.Column('fired_at', sa.DateTime(), nullable=True),
        sa.Column('waiting', sa.Integer(), nullable=False),
        sa.Column('oldest_waiting', sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table('lifecycle_event_watch')
