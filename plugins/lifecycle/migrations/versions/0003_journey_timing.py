"""journey timing: the trigger's time and the last run that planned a message, per enrollment

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'


def upgrade() -> None:
    with op.batch_alter_table('lifecycle_enrollments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('triggered_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_planned_at', sa.DateTime(), nullable=True))
    # Enrollments from before: their last step counts as planned (at most one message per run holds).
    op.execute('UPDATE lifecycle_enrollments SET last_planned_at = last_step_at')


def downgrade() -> None:
    with op.batch_alter_table('lifecycle_enrollments', schema=None) as batch_op:
        batch_op.drop_column('last_planned_at')
        batch_op.drop_column('triggered_at')
