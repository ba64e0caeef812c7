"""Opens the database (SQLite tuned for durability, or PostgreSQL) and migrates it with Alembic."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x62_32_34_6D_67  # "b24mg", an arbitrary advisory-lock key
BUSY_TIMEOUT_MS = 30_000  # how long a SQLite statement waits for another's lock


def create_engine(url: str) -> AsyncEngine:
    """An async engine; for SQLite the file's folder is created, WAL + full sync and
    secure_delete set on every connection."""
    parsed = make_url(url)
    # hide_parameters: a database error's message must not carry the row's values (names,
    # phones, emails) into a logged traceback.
    if parsed.get_backend_name() != "sqlite":
        return create_async_engine(url, pool_pre_ping=True, hide_parameters=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        try:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise database_problem(exc, url) or exc from exc
    engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets the intake write while the worker reads; synchronous=FULL makes a
        # committed row survive a crash or power loss, which is what a 202 promises.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Retention must erase, not merely unlink: with secure_delete, content a statement
        # removes (an erased row's old values, freed pages) is overwritten with zeros. Some
        # builds default to it (Debian's), others do not; say it rather than rely on that.
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    return engine


class DatabaseUnavailable(Exception):
    """DATABASE_URL names a database that cannot be reached or opened. The message says which
    (never the password) and what to check, in one line."""


def database_problem(exc: BaseException, url: str) -> DatabaseUnavailable | None:
    """What went wrong reaching the database, for a person; None when `exc` is not that."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        where = f"the SQLite database {parsed.database}"
        hint = "check DATABASE_URL and that the folder exists and is writable by this user"
    else:
        where = f"PostgreSQL at {parsed.host or 'localhost'}:{parsed.port or 5432}"
        where += f" (database {parsed.database})" if parsed.database else ""
        hint = "check DATABASE_URL and that the server is running and lets this user in"
    reason = _reason(exc)
    if reason is None:
        return None
    if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
        hint = "it has no gateway schema: run `b24-form-gateway migrate`, or check DATABASE_URL"
    return DatabaseUnavailable(f"cannot use {where}: {reason}; {hint}")


def _reason(exc: BaseException) -> str | None:
    """The root cause in a few words, from the exception or what it wraps."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, TimeoutError):
            return "no answer in time"
        if isinstance(seen, PermissionError):
            return "permission denied"
        if isinstance(seen, FileNotFoundError):
            return "its folder does not exist"
        if isinstance(seen, OSError):
            return seen.strerror or type(seen).__name__
        if isinstance(seen, DBAPIError):
            original = seen.orig
            # The driver's own sentence ("database "x" does not exist", "password
            # authentication failed for user "u"", "unable to open database file"): first line.
            text = str(original.args[0] if original is not None and original.args else seen)
            return text.splitlines()[0][:200] if text else type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (safe to run at every start)."""

    def _upgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Replicas start together: one migrates, the others wait here, then find the
                # schema current. Without it two could both try to create the tables.
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            await conn.run_sync(_upgrade)
    except (OSError, DBAPIError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        if (problem := database_problem(exc, url)) is not None:
            raise problem from exc
        raise


async def schema_state(url: str) -> str:
    """ "current", "behind" (an older revision: `migrate` or `serve` upgrades it) or "empty" (no
    gateway schema yet); DatabaseUnavailable when the database cannot be used. Changes nothing:
    an SQLite file that does not exist is "empty" and is not created."""
    parsed = make_url(url)
    if missing_sqlite_file(url):
        return "empty"
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = create_async_engine(url, hide_parameters=True)
    try:
        async with engine.connect() as conn:
            current = await conn.run_sync(
                lambda sync: MigrationContext.configure(sync).get_current_revision()
            )
    except (OSError, DBAPIError) as exc:
        if problem := database_problem(exc, parsed.render_as_string(hide_password=True)):
            raise problem from exc
        raise
    finally:
        await engine.dispose()
    if current is None:
        return "empty"
    return "current" if current == head else "behind"


def missing_sqlite_file(url: str) -> bool:
    """Whether `url` names a SQLite file that does not exist (memory and URI databases do)."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return False
    return not database.startswith("file:") and not Path(database).expanduser().exists()
