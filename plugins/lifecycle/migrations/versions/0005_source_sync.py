"""source sync: what the last copy of each mapped entity from the source read (watermark, rows, checksum)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'


def upgrade() -> None:
    op.create_table(
        'lifecycle_source_sync',
        sa.Column('entity', sa.String(length=32), primary_key=True),
        sa.Column('mapping', sa.String(length=64), nullable=False),
        sa.Column('watermarks', sa.JSON(), nullable=True),
        sa.Column('row_count', sa.Integer(), nullable=False),
        sa.Column('checksum', sa.String(length=32), nullable=False),
        sa.Column('synced_at', sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('lifecycle_source_sync')
