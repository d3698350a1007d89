"""data quality: contact quality snapshot and data-quality figures

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'


def upgrade() -> None:
    op.create_table('lifecycle_contact_quality',
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.Column('email_normalized', sa.String(length=320), nullable=True),
    sa.Column('email_valid', sa.Boolean(), nullable=True),
    sa.Column('email_problem', sa.String(length=200), nullable=True),
    sa.Column('phone_e164', sa.String(length=20), nullable=True),
    sa.Column('phone_valid', sa.Boolean(), nullable=True),
    sa.Column('phone_problem', sa.String(length=100), nullable=True),
    sa.Column('missing_fields', sa.String(length=200), nullable=True),
    sa.Column('survivor_id', sa.String(length=64), nullable=True),
    sa.Column('duplicate_key', sa.String(length=400), nullable=True),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('checked_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('contact_id')
    )
    with op.batch_alter_table('lifecycle_contact_quality', schema=None) as batch_op:
        batch_op.create_index('ix_contact_quality_email', ['email_normalized'], unique=False)
        batch_op.create_index('ix_contact_quality_phone', ['phone_e164'], unique=False)
        batch_op.create_index('ix_contact_quality_survivor', ['survivor_id'], unique=False)

    op.create_table('lifecycle_data_quality',
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('as_of', sa.DateTime(), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'metric')
    )
    with op.batch_alter_table('lifecycle_data_quality', schema=None) as batch_op:
        batch_op.create_index('ix_data_quality_metric_asof', ['metric', 'as_of'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('lifecycle_data_quality', schema=None) as batch_op:
        batch_op.drop_index('ix_data_quality_metric_asof')

    op.drop_table('lifecycle_data_quality')
    with op.batch_alter_table('lifecycle_contact_quality', schema=None) as batch_op:
        batch_op.drop_index('ix_contact_quality_survivor')
        batch_op.drop_index('ix_contact_quality_phone')
        batch_op.drop_index('ix_contact_quality_email')

    op.drop_table('lifecycle_contact_quality')
