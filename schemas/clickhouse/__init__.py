"""ClickHouse DDL, versioned: ``NNNN_name.sql`` files applied in order by ``lotabots usage migrate``.

``server/`` holds statements for ClickHouse server deployments only (roles, users, settings profiles),
which chDB (no access control) cannot run.
"""
