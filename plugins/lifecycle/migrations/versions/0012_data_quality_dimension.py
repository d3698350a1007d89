"""data quality dimension: figures of a part of the CRM (a consent region, a topic) beside the whole

The primary key gains the column, so the table is rebuilt (the same way on every dialect): a new
table, the rows copied, the old one dropped and the new one renamed.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'

TABLE = 'lifecycle_data_quality'
INDEX = 'ix_data_quality_metric_asof'


def _rebuild(with_dimension: bool) -> None:
    new = f'{TABLE}_new'
    key = ['run_id', 'metric', *(['dimension'] if with_dimension else [])]
    op.create_table(
        new,
        sa.Column('run_id', sa.String(length=250), nullable=False),
        sa.Column('as_of', sa.DateTime(), nullable=False),
        sa.Column('metric', sa.String(length=64), nullable=False),
        *([sa.Column('dimension', sa.String(length=64), nullable=False, server_default='')] if with_dimension else []),
        sa.Column('value', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(*key),
    )
    where = '' if with_dimension else " WHERE dimension = ''"
    op.execute(f'INSERT INTO {new} (run_id, as_of, metric, value) SELECT run_id, as_of, metric, value FROM {TABLE}{where}')
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_table(TABLE)
    op.rename_table(new, TABLE)
    if op.get_bind().dialect.name == 'postgresql':
        # PostgreSQL keeps the key's name from the table it was made on; give it the table's own.
        op.execute(f'ALTER TABLE {TABLE} RENAME CONSTRAINT {new}_pkey TO {TABLE}_pkey')
    op.create_index(INDEX, TABLE, ['metric', 'as_of'], unique=False)


def upgrade() -> None:
    _rebuild(with_dimension=True)


def downgrade() -> None:
    _rebuild(with_dimension=False)
