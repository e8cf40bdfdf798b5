"""Group commit for new request rows: concurrent submits share one multi-row INSERT and one commit.

A submit awaits its own row's commit, so durability is unchanged; under load one transaction carries
many rows, which is what lets the submit path keep up with a bare endpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine


class _PgArrayInsert:
    """PostgreSQL: the whole batch as ONE statement, `INSERT … SELECT … FROM unnest($1::text[], …)`, sent
    in autocommit (a single statement is its own transaction): one round trip, arrays encoded by asyncpg
    in C, instead of BEGIN + a multi-row insert through SQLAlchemy's parameter processing + COMMIT."""

    _PG_TYPES = ((Boolean, "boolean"), (BigInteger, "int8"), (Integer, "int4"), (Float, "float8"),
                 (DateTime, "timestamptz"))

    def __init__(self, table: Table) -> None:
        self.columns = [c.name for c in table.columns]
        self.json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
        selects, params = [], []
        for i, column in enumerate(table.columns, start=1):
            pg = next((name for kind, name in self._PG_TYPES if isinstance(column.type, kind)), "text")
            params.append(f"${i}::{pg}[]")
            selects.append(f'c{i}::json' if column.name in self.json_columns else f"c{i}")
        aliases = ", ".join(f"c{i}" for i in range(1, len(self.columns) + 1))
        self.sql = (f'INSERT INTO {table.name} ({", ".join(self.columns)}) SELECT {", ".join(selects)} '
                    f"FROM unnest({', '.join(params)}) AS t({aliases})")

    def arrays(self, rows: list[dict[str, Any]]) -> list[list[Any]]:
        out = []
        for name in self.columns:
            if name in self.json_columns:
                out.append([None if r.get(name) is None else orjson.dumps(r[name]).decode() for r in rows])
            else:
                out.append([r.get(name) for r in rows])
        return out


class GroupCommitInserter:
    def __init__(self, engine: AsyncEngine, table: Table, max_batch: int = 256) -> None:
        self.engine = engine
        self.table = table
        self.max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.rows = 0
        self._pg = _PgArrayInsert(table) if engine.dialect.name == "postgresql" else None

    async def insert(self, row: dict[str, Any]) -> None:
        """Insert `row`; returns once it is committed. Raises IntegrityError for this row alone."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                await self._write([row for row, _ in batch])
            except IntegrityError:
                await self._one_by_one(batch)  # find the offending row(s); the others still commit
                continue
            except Exception as exc:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(batch)
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._pg is None:
            async with self.engine.begin() as conn:
                await conn.execute(self.table.insert(), rows)
            return
        import asyncpg

        async with self.engine.connect() as conn:
            raw = (await conn.get_raw_connection()).driver_connection
            try:
                await raw.execute(self._pg.sql, *self._pg.arrays(rows))
            except asyncpg.IntegrityConstraintViolationError as exc:
                raise IntegrityError(self._pg.sql, None, exc) from exc

    async def _one_by_one(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        for row, fut in batch:
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(self.table.insert(), [row])
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(None)
