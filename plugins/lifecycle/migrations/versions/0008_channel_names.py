"""channel names up to 32 characters: the ledger's and the suppression list's channel columns widen from 10

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'

COLUMNS = {
    'lifecycle_messages': (('channel', False), ('fallback_channel', True), ('planned_channel', False)),
    'lifecycle_suppressions': (('channel', False),),
}


def _resize(old: int, new: int) -> None:
    for table, columns in COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column, nullable in columns:
                batch_op.alter_column(
                    column, existing_type=sa.String(length=old), type_=sa.String(length=new), existing_nullable=nullable
                )


def upgrade() -> None:
    _resize(10, 32)


def downgrade() -> None:
    _resize(32, 10)
