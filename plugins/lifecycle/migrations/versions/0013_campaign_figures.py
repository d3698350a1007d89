"""campaign figures: the Campaigns page's figures per program as of its newest run, precomputed

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'


def upgrade() -> None:
    op.create_table(
        'lifecycle_campaign_figures',
        sa.Column('program', sa.String(length=64), primary_key=True),
        sa.Column('as_of', sa.DateTime(), nullable=False),
        sa.Column('run_id', sa.String(length=250), nullable=False),
        sa.Column('computed_at', sa.DateTime(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('payload', sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('lifecycle_campaign_figures')
