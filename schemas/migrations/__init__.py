"""Alembic migrations for the relational schema (SQLite and PostgreSQL)."""
