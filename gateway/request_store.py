"""Group commit for new request rows: concurrent submits share one multi-row INSERT and one commit.

A submit awaits its own row's commit, so durability is unchanged; under load one transaction carries
many rows, which is what lets the submit path keep up with a bare endpoint.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine


class GroupCommitInserter:
    def __init__(self, engine: AsyncEngine, table: Table, max_batch: int = 256) -> None:
        self.engine = engine
        self.table = table
        self.max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.rows = 0

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
                async with self.engine.begin() as conn:
                    await conn.execute(self.table.insert(), [row for row, _ in batch])
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
