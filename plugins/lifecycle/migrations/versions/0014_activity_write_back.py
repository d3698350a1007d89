"""activity write-back: which sent messages were posted to the CRM as activities

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'


def upgrade() -> None:
    op.create_table(
        'lifecycle_activity_writebacks',
        sa.Column('message_id', sa.Integer(), primary_key=True),
        sa.Column('program', sa.String(length=64), nullable=False),
        sa.Column('activity_id', sa.String(length=128), nullable=True),
        sa.Column('posted_at', sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('lifecycle_activity_writebacks')
