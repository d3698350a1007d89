"""consent captures: subscriptions from forms (pending until confirmed) and imported paper forms, with their proof

Revision ID: 0011
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'


def upgrade() -> None:
    op.create_table(
        'lifecycle_consent_captures',
        sa.Column('capture_id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('address', sa.String(length=320), nullable=False),
        sa.Column('channel', sa.String(length=32), nullable=False),
        sa.Column('purpose', sa.String(length=20), nullable=False),
        sa.Column('status', sa.String(length=10), nullable=False),
        sa.Column('source', sa.String(length=50), nullable=False),
        sa.Column('form_id', sa.String(length=64), nullable=False),
        sa.Column('form_version', sa.String(length=32), nullable=False),
        sa.Column('consent_text', sa.Text(), nullable=False),
        sa.Column('captured_at', sa.DateTime(), nullable=False),
        sa.Column('confirmed_at', sa.DateTime(), nullable=True),
        sa.Column('ip_address', sa.String(length=45), nullable=True),
        sa.Column('ip_key', sa.String(length=32), nullable=True),
        sa.Column('contact_id', sa.String(length=64), nullable=True),
        sa.Column('import_key', sa.String(length=64), nullable=True, unique=True),
    )
    op.create_index(
        'ix_consent_captures_address', 'lifecycle_consent_captures', ['address', 'channel', 'purpose']
    )
    op.create_index(
        'ix_consent_captures_contact', 'lifecycle_consent_captures', ['contact_id', 'channel', 'purpose']
    )
    op.create_index('ix_consent_captures_ip', 'lifecycle_consent_captures', ['ip_key', 'captured_at'])


def downgrade() -> None:
    op.drop_index('ix_consent_captures_ip', table_name='lifecycle_consent_captures')
    op.drop_index('ix_consent_captures_contact', table_name='lifecycle_consent_captures')
    op.drop_index('ix_consent_captures_address', table_name='lifecycle_consent_captures')
    op.drop_table('lifecycle_consent_captures')
