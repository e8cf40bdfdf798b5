"""autonomy: tenant default/maximum level, tenant-wide and per-user rules, audit trail; per-request level, rule, task, context, action, decision

Revision ID: 0004_autonomy
Revises: 0003_webhooks
"""

import sqlalchemy as sa
from alembic import op

revision = '0004_autonomy'
down_revision = '0003_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('autonomy_tenant_settings',
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('default_level', sa.String(length=16), nullable=False),
    sa.Column('max_level', sa.String(length=16), nullable=False),
    sa.Column('updated_by', sa.String(length=40), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_autonomy_tenant_settings_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('tenant_id', name=op.f('pk_autonomy_tenant_settings'))
    )
    op.create_table('autonomy_rules',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('scope', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=40), nullable=False),
    sa.Column('task', sa.String(length=100), nullable=False),
    sa.Column('context', sa.String(length=100), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_autonomy_rules_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autonomy_rules')),
    sa.UniqueConstraint('tenant_id', 'scope', 'user_id', 'task', 'context', name='uq_autonomy_rules_key'),
    # scope is the rule's kind; user_id its owner ('' = tenant-wide). Spelled out (not imported from the
    # models) so this revision keeps creating the same table whatever the models become.
    sa.CheckConstraint(
        "(scope = 'default' AND user_id <> '' AND task = '' AND context = '')"
        " OR (scope = 'task' AND task <> '' AND context = '')"
        " OR (scope = 'context' AND task = '' AND context <> '')"
        " OR (scope = 'task_context' AND task <> '' AND context <> '')",
        name=op.f('ck_autonomy_rules_key_shape')),
    )
    with op.batch_alter_table('autonomy_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_autonomy_rules_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('autonomy_audit',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('request_id', sa.String(length=40), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=40), nullable=False),
    sa.Column('actor_kind', sa.String(length=16), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], name=op.f('fk_autonomy_audit_tenant_id_tenants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_autonomy_audit'))
    )
    with op.batch_alter_table('autonomy_audit', schema=None) as batch_op:
        batch_op.create_index('ix_autonomy_audit_request_at', ['request_id', 'at'], unique=False)

    with op.batch_alter_table('requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submitted_by', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('autonomy_level', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('autonomy_rule', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('task', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('context', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('action', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('decision', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('decided_by', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('requests', schema=None) as batch_op:
        for column in ('decided_at', 'decided_by', 'decision', 'action', 'context', 'task', 'autonomy_rule',
                       'autonomy_level', 'submitted_by'):
            batch_op.drop_column(column)
    with op.batch_alter_table('autonomy_audit', schema=None) as batch_op:
        batch_op.drop_index('ix_autonomy_audit_request_at')
    op.drop_table('autonomy_audit')
    with op.batch_alter_table('autonomy_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_autonomy_rules_tenant_id'))
    op.drop_table('autonomy_rules')
    op.drop_table('autonomy_tenant_settings')
