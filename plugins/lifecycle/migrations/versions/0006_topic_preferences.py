"""topic preferences: a contact's opt-outs and opt-ins per subscription topic, with source and proof

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'


def upgrade() -> None:
    op.create_table(
        'lifecycle_topic_preferences',
        sa.Column('preference_id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('contact_id', sa.String(length=64), nullable=False),
        sa.Column('topic', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('source', sa.String(length=50), nullable=False),
        sa.Column('captured_at', sa.DateTime(), nullable=False),
        sa.Column('proof', sa.Text(), nullable=True),
    )
    op.create_index(
        'ix_topic_preferences_lookup', 'lifecycle_topic_preferences', ['contact_id', 'topic', 'captured_at']
    )


def downgrade() -> None:
    op.drop_index('ix_topic_preferences_lookup', table_name='lifecycle_topic_preferences')
    op.drop_table('lifecycle_topic_preferences')
