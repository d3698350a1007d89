"""custom attributes: the contacts' extra fields declared in the source mapping, beside the mirror

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'


def upgrade() -> None:
    op.create_table(
        'lifecycle_contact_attributes',
        sa.Column('contact_id', sa.String(length=64), primary_key=True),
        sa.Column('attributes', sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('lifecycle_contact_attributes')
