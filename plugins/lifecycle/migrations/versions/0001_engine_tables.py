"""engine tables

Revision ID: 0001
Revises: 
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None


def upgrade() -> None:
    op.create_table('lifecycle_audience',
    sa.Column('program', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('program', 'run_id', 'contact_id')
    )
    op.create_table('lifecycle_enrollments',
    sa.Column('enrollment_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('program', sa.String(length=64), nullable=False),
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.Column('entry', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('exit_reason', sa.String(length=64), nullable=True),
    sa.Column('enrolled_at', sa.DateTime(), nullable=False),
    sa.Column('exited_at', sa.DateTime(), nullable=True),
    sa.Column('next_step', sa.Integer(), nullable=False),
    sa.Column('last_step_at', sa.DateTime(), nullable=True),
    sa.Column('anchor_at', sa.DateTime(), nullable=True),
    sa.Column('group', sa.String(length=16), nullable=False),
    sa.Column('variant', sa.String(length=32), nullable=True),
    sa.Column('trigger', sa.JSON(), nullable=True),
    sa.Column('run_id', sa.String(length=250), nullable=True),
    sa.PrimaryKeyConstraint('enrollment_id'),
    sa.UniqueConstraint('program', 'contact_id', 'entry', name='uq_enrollment_entry')
    )
    with op.batch_alter_table('lifecycle_enrollments', schema=None) as batch_op:
        batch_op.create_index('ix_enrollments_contact', ['contact_id', 'state'], unique=False)
        batch_op.create_index('ix_enrollments_program_state', ['program', 'state', 'contact_id'], unique=False)

    op.create_table('lifecycle_kpis',
    sa.Column('kpi_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('program', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('as_of', sa.DateTime(), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('dimension', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('kpi_id'),
    sa.UniqueConstraint('program', 'run_id', 'metric', 'dimension', name='uq_kpi')
    )
    with op.batch_alter_table('lifecycle_kpis', schema=None) as batch_op:
        batch_op.create_index('ix_kpis_program_asof', ['program', 'as_of'], unique=False)

    op.create_table('lifecycle_messages',
    sa.Column('message_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('program', sa.String(length=64), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('enrollment_id', sa.Integer(), nullable=False),
    sa.Column('entry', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=64), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('fallback_channel', sa.String(length=10), nullable=True),
    sa.Column('planned_channel', sa.String(length=10), nullable=False),
    sa.Column('template', sa.String(length=200), nullable=False),
    sa.Column('variant', sa.String(length=32), nullable=True),
    sa.Column('group', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('due_at', sa.DateTime(), nullable=False),
    sa.Column('send_after', sa.DateTime(), nullable=True),
    sa.Column('send_run_id', sa.String(length=250), nullable=True),
    sa.Column('batch', sa.Integer(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('claim_token', sa.String(length=64), nullable=True),
    sa.Column('provider_message_id', sa.String(length=128), nullable=True),
    sa.Column('segments', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.String(length=250), nullable=False),
    sa.Column('planned_at', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('message_id'),
    sa.UniqueConstraint('idempotency_key')
    )
    with op.batch_alter_table('lifecycle_messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_contact_due', ['contact_id', 'due_at', 'status'], unique=False)
        batch_op.create_index('ix_messages_program_run_status', ['program', 'run_id', 'status'], unique=False)
        batch_op.create_index('ix_messages_program_status', ['program', 'status', 'send_after'], unique=False)
        batch_op.create_index('ix_messages_provider_id', ['provider_message_id'], unique=False)
        batch_op.create_index('ix_messages_send_batch', ['send_run_id', 'batch', 'status'], unique=False)

    op.create_table('lifecycle_provider_events',
    sa.Column('event_pk', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('provider', sa.String(length=20), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.Column('event_type', sa.String(length=40), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('provider_message_id', sa.String(length=128), nullable=True),
    sa.Column('contact_id', sa.String(length=64), nullable=True),
    sa.Column('occurred_at', sa.DateTime(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('event_pk'),
    sa.UniqueConstraint('provider', 'event_id', name='uq_provider_event')
    )
    with op.batch_alter_table('lifecycle_provider_events', schema=None) as batch_op:
        batch_op.create_index('ix_provider_events_message', ['message_id'], unique=False)

    op.create_table('lifecycle_suppressions',
    sa.Column('suppression_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('contact_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=10), nullable=False),
    sa.Column('reason', sa.String(length=40), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('proof', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('suppression_id'),
    sa.UniqueConstraint('contact_id', 'channel', 'reason', name='uq_suppression')
    )
    with op.batch_alter_table('lifecycle_suppressions', schema=None) as batch_op:
        batch_op.create_index('ix_suppressions_contact', ['contact_id', 'channel'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('lifecycle_suppressions', schema=None) as batch_op:
        batch_op.drop_index('ix_suppressions_contact')

    op.drop_table('lifecycle_suppressions')
    with op.batch_alter_table('lifecycle_provider_events', schema=None) as batch_op:
        batch_op.drop_index('ix_provider_events_message')

    op.drop_table('lifecycle_provider_events')
    with op.batch_alter_table('lifecycle_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_send_batch')
        batch_op.drop_index('ix_messages_provider_id')
        batch_op.drop_index('ix_messages_program_status')
        batch_op.drop_index('ix_messages_program_run_status')
        batch_op.drop_index('ix_messages_contact_due')

    op.drop_table('lifecycle_messages')
    with op.batch_alter_table('lifecycle_kpis', schema=None) as batch_op:
        batch_op.drop_index('ix_kpis_program_asof')

    op.drop_table('lifecycle_kpis')
    with op.batch_alter_table('lifecycle_enrollments', schema=None) as batch_op:
        batch_op.drop_index('ix_enrollments_program_state')
        batch_op.drop_index('ix_enrollments_contact')

    op.drop_table('lifecycle_enrollments')
    op.drop_table('lifecycle_audience')
