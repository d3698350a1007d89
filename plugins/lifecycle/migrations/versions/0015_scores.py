"""predictive scores: trained models with their validation figures, and each contact's scores

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0015'
down_revision = '0014'


def upgrade() -> None:
    op.create_table(
        'lifecycle_score_models',
        sa.Column('score', sa.String(length=64), primary_key=True),
        sa.Column('model_version', sa.String(length=64), primary_key=True),
        sa.Column('trained_at', sa.DateTime(), nullable=False),
        sa.Column('as_of', sa.DateTime(), nullable=False),
        sa.Column('algorithm', sa.String(length=64), nullable=False),
        sa.Column('features', sa.JSON(), nullable=False),
        sa.Column('n_train', sa.Integer(), nullable=False),
        sa.Column('n_valid', sa.Integer(), nullable=False),
        sa.Column('auc', sa.Float(), nullable=True),
        sa.Column('baseline_auc', sa.Float(), nullable=True),
        sa.Column('brier', sa.Float(), nullable=True),
        sa.Column('calibration', sa.JSON(), nullable=True),
        sa.Column('distribution', sa.JSON(), nullable=True),
        sa.Column('published', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
    )
    op.create_table(
        'lifecycle_scores',
        sa.Column('contact_id', sa.String(length=64), primary_key=True),
        sa.Column('score', sa.String(length=64), primary_key=True),
        sa.Column('value', sa.Float(), nullable=False),
        sa.Column('decile', sa.Integer(), nullable=False),
        sa.Column('model_version', sa.String(length=64), nullable=False),
        sa.Column('as_of', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_lifecycle_scores_score_value', 'lifecycle_scores', ['score', 'value'])


def downgrade() -> None:
    op.drop_index('ix_lifecycle_scores_score_value', table_name='lifecycle_scores')
    op.drop_table('lifecycle_scores')
    op.drop_table('lifecycle_score_models')
