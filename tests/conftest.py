"""Shared fixtures: the Bitrix24 emulator as a real server, and gateways started against it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from app.main import create_app
from app.sandbox import Emulator, EmulatorConfig, create_emulator_app
from app.settings import Settings
from app.store import Store, create_engine
from tests.servers import RunningServer

PORTAL_SECRET = "test-secret-0123"


@dataclass
class Portal:
    """The emulator server and its control API."""

    server: RunningServer
    emulator: Emulator

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def webhook_url(self) -> str:
        return f"{self.server.url}/rest/1/{PORTAL_SECRET}/"

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            if body is None:
                response = client.get(f"/_control/{path}")
            else:
                response = client.post(f"/_control/{path}", json=body)
            response.raise_for_status()
            return response.json()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.control("state")
        return state

    def records(self, entity: str = "lead") -> list[dict[str, Any]]:
        return list(self.state()["records"][entity])

    def faults(self, **faults: Any) -> None:
        self.control("faults", faults)

    def reset(self) -> None:
        self.control("reset", {})


def new_portal(**config: Any) -> Portal:
    emulator = Emulator(EmulatorConfig(secret=PORTAL_SECRET, **config))
    server = RunningServer(create_emulator_app(emulator))
    server.start()
    return Portal(server, emulator)


@pytest.fixture(scope="session")
def _session_portal() -> Iterator[Portal]:
    portal = new_portal()
    yield portal
    portal.server.stop()


@pytest.fixture
def portal(_session_portal: Portal) -> Iterator[Portal]:
    """The shared emulator, reset for this test; its configuration is restored afterwards."""
    config = dataclasses.replace(_session_portal.emulator.config)
    _session_portal.reset()
    yield _session_portal
    _session_portal.emulator.config = config


PG_URL = os.environ.get("TEST_DATABASE_URL")
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


async def fresh_postgres(url: str) -> str:
    """Empty the test PostgreSQL database (tests run one at a time) and return its URL."""
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS delivery_attempts, submissions CASCADE"))
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await engine.dispose()
    return url


@pytest.fixture
async def database_url(tmp_path: Path) -> str:
    """The gateway's database in a test: a fresh SQLite file. Modules that must hold on every
    backend override this fixture with `backend_database_url` (SQLite and PostgreSQL)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(params=BACKENDS)
async def backend_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    assert PG_URL is not None
    return await fresh_postgres(PG_URL)


def gateway_settings(
    portal: Portal | None, tmp_path: Path, database_url: str | None = None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "B24_WEBHOOK_URL": portal.webhook_url if portal else None,
        "DATABASE_URL": database_url or f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        "WORKER_POLL_SECONDS": 0.05,
        "RETRY_BASE_SECONDS": 0.05,
        "RETRY_MAX_DELAY_SECONDS": 0.3,
        "BITRIX_TIMEOUT_SECONDS": 5,
        "UNKNOWN_OUTCOME_WAIT_SECONDS": 2,
        # Tests post many forms from one address; the front-door tests turn the limit on.
        "RATE_LIMIT_PER_IP": "0",
        "_env_file": None,
    }
    values.update(overrides)
    return Settings.load(**values)


@dataclass
class Gateway:
    server: RunningServer
    settings: Settings
    db_url: str
    _stores: list[Store] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=15)

    async def store(self) -> Store:
        """A separate connection to the gateway's database, in the test's event loop."""
        store = Store(create_engine(self.db_url))
        self._stores.append(store)
        return store


@pytest.fixture
async def make_gateway(
    tmp_path: Path, database_url: str
) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    started: list[Gateway] = []

    async def make(portal: Portal | None, **overrides: Any) -> Gateway:
        settings = gateway_settings(portal, tmp_path, database_url, **overrides)
        server = RunningServer(create_app(settings))
        await asyncio.to_thread(server.start)
        gateway = Gateway(server, settings, settings.DATABASE_URL)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await asyncio.to_thread(gateway.server.stop)
        for store in gateway._stores:
            await store.engine.dispose()


async def wait_for(
    predicate: Callable[[], Any], *, within: float = 15.0, interval: float = 0.05
) -> Any:
    """Poll until `predicate()` (sync or async) returns something truthy; return it."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)
