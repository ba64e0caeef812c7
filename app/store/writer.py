"""Serialises this process's writes and commits concurrent inserts together (group commit).

SQLite has one writer at a time; letting sessions race for its lock means sleeping in its busy
handler (tens to hundreds of ms under load). One asyncio lock per store removes the race, and
submissions that arrive while a commit is running are inserted by the next transaction together,
so one fsync covers many. A caller still gets its answer only after its row is committed.
PostgreSQL has real concurrent writers: there the lock is a no-op and each insert commits alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

MAX_GROUP = 256


class Writer:
    def __init__(self, engine: AsyncEngine, table: Table) -> None:
        self._engine = engine
        self._table = table
        self._serial = engine.dialect.name == "sqlite"
        self._lock = asyncio.Lock() if self._serial else None
        self._pending: list[tuple[Mapping[str, Any], asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, serialised within this process where the database needs it."""
        if self._lock is None:
            async with self._engine.begin() as conn:
                yield conn
            return
        async with self._lock, self._engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """No other write of this process runs meanwhile (no transaction is opened)."""
        if self._lock is None:
            yield
            return
        async with self._lock:
            yield

    async def insert(self, values: Mapping[str, Any]) -> bool:
        """Insert one row; False when a unique key already holds it (nothing is written)."""
        if not self._serial:
            async with self.begin() as conn:
                return await self._insert(conn, values)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((values, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._pending:
            group, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
            try:
                async with self.begin() as conn:
                    created = await self._insert_many(conn, [values for values, _ in group])
            except BaseException as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), was_created in zip(group, created, strict=True):
                if not future.done():
                    future.set_result(was_created)

    def _statement(self) -> Any:
        dialect = sqlite if self._engine.dialect.name == "sqlite" else postgresql
        # ON CONFLICT DO NOTHING: an idempotency-key clash must not abort the others' group.
        return dialect.insert(self._table).on_conflict_do_nothing()

    async def _insert(self, conn: AsyncConnection, values: Mapping[str, Any]) -> bool:
        result = await conn.execute(self._statement(), [dict(values)])
        return bool(result.rowcount)

    async def _insert_many(
        self, conn: AsyncConnection, rows: list[Mapping[str, Any]]
    ) -> list[bool]:
        """Insert rows in one statement; which were new is told by their (unique) ids."""
        result = await conn.execute(self._statement(), [dict(r) for r in rows])
        if result.rowcount == len(rows):
            return [True] * len(rows)
        ids = [r["id"] for r in rows]
        id_column = self._table.c.id
        found = set((await conn.execute(select(id_column).where(id_column.in_(ids)))).scalars())
        # A row whose id is there but was not ours cannot happen: ids are fresh uuid4s; a row
        # that clashed on its idempotency key left no row with its id.
        return [r["id"] in found for r in rows]
