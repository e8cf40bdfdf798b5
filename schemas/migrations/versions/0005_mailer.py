"""mailer: the mail_sent ledger (one row per auth event id that asks for a mail)

Revision ID: 0005_mailer
Revises: 0004_autonomy
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_mailer'
down_revision = '0004_autonomy'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('mail_sent',
    sa.Column('event_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_mail_sent'))
    )
    with op.batch_alter_table('mail_sent', schema=None) as batch_op:
        batch_op.create_index('ix_mail_sent_status_updated', ['status', 'updated_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('mail_sent', schema=None) as batch_op:
        batch_op.drop_index('ix_mail_sent_status_updated')
    op.drop_table('mail_sent')
