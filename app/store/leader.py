"""Which process may deliver: one elected worker per database, so the portal's request limit
holds in total however many replicas and worker processes run (docs/bitrix24.md §4.1).

PostgreSQL: a session-level advisory lock held on a dedicated connection. When the holder dies
(even by kill -9), its connection closes and the server frees the lock, so a standby takes over;
rows it had claimed come back when their lease expires. SQLite serves one process: it always leads.
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("app.store")

# An arbitrary constant: the advisory-lock key of "the delivering worker" in this database.
LEADER_LOCK_KEY = 0x62_32_34_66_67  # "b24fg"


class Leadership:
    """Held by at most one process per database; `hold()` acquires it or checks it is held."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._exclusive = engine.dialect.name == "postgresql"

    @property
    def held(self) -> bool:
        return not self._exclusive or self._conn is not None

    async def hold(self) -> bool:
        """True when this process leads: newly elected, or still holding the lock."""
        if not self._exclusive:
            return True
        try:
            if self._conn is not None:
                await self._conn.execute(text("SELECT 1"))  # the lock lives as long as this
                return True
            conn = await self._engine.connect()
            # Autocommit: the lock belongs to the session; no transaction stays open with it.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            got = (
                await conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}
                )
            ).scalar_one()
            if not got:
                await conn.close()
                return False
            self._conn = conn
            log.info("worker.elected")
            return True
        except SQLAlchemyError:
            log.warning("worker.leadership_lost")
            await self._drop()
            return False

    async def release(self) -> None:
        if self._conn is None:
            return
        # Closing the connection frees the lock anyway; unlocking first just makes it prompt.
        with contextlib.suppress(SQLAlchemyError):
            await self._conn.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK_KEY}
            )
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close()
            except SQLAlchemyError:
                await conn.invalidate()
