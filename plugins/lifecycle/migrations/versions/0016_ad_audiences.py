"""paid-audience sync: what each program's ad audience holds, and each sync's figures

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0016'
down_revision = '0015'


def upgrade() -> None:
    op.create_table(
        'lifecycle_ad_audience_members',
        sa.Column('program', sa.String(length=64), nullable=False),
        sa.Column('audience', sa.String(length=64), nullable=False),
        sa.Column('email_sha256', sa.String(length=64), nullable=False),
        sa.Column('phone_sha256', sa.String(length=64), nullable=False),
        sa.Column('added_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('program', 'audience', 'email_sha256', 'phone_sha256'),
    )
    op.create_table(
        'lifecycle_ad_audience_syncs',
        sa.Column('sync_id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('program', sa.String(length=64), nullable=False),
        sa.Column('audience', sa.String(length=64), nullable=False),
        sa.Column('run_id', sa.String(length=250), nullable=False),
        sa.Column('as_of', sa.DateTime(), nullable=False),
        sa.Column('synced_at', sa.DateTime(), nullable=False),
        sa.Column('added', sa.Integer(), nullable=False),
        sa.Column('removed', sa.Integer(), nullable=False),
        sa.Column('size', sa.Integer(), nullable=False),
    )
    op.create_index(
        'ix_ad_audience_syncs_program', 'lifecycle_ad_audience_syncs', ['program', 'audience', 'synced_at']
    )


def downgrade() -> None:
    op.drop_index('ix_ad_audience_syncs_program', table_name='lifecycle_ad_audience_syncs')
    op.drop_table('lifecycle_ad_audience_syncs')
    op.drop_table('lifecycle_ad_audience_members')
