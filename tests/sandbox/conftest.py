"""The emulator's own test fixtures: one emulator served by real uvicorn for the session, reset
before each test, and a small client that speaks its webhook and control API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.sandbox import Emulator, EmulatorConfig, create_emulator_app
from tests.servers import running

WEBHOOK = "/rest/1/sandbox/"
FIXTURES = Path(__file__).parent.parent / "fixtures"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def fixture_lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line]


def quiet_config(**overrides: Any) -> EmulatorConfig:
    """No request limit unless a test asks for one; a fixed seed for random faults."""
    values: dict[str, Any] = {"rate_per_second": 0, "seed": 7}
    values.update(overrides)
    return EmulatorConfig(**values)


@dataclass
class Sandbox:
    emulator: Emulator
    client: httpx.Client

    def call(self, method: str, params: dict[str, Any] | None = None) -> httpx.Response:
        """A JSON POST to the webhook."""
        return self.client.post(WEBHOOK + method, json=params or {})

    def ok(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """The `result` of a call that must succeed."""
        response = self.call(method, params)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def form(self, method: str, body: str) -> httpx.Response:
        """A form-encoded POST with a body written by hand."""
        return self.client.post(WEBHOOK + method, content=body, headers=FORM)

    def state(self) -> dict[str, Any]:
        response = self.client.get("/_control/state")
        assert response.status_code == 200
        state: dict[str, Any] = response.json()
        return state

    def records(self, entity: str) -> list[dict[str, Any]]:
        return list(self.state()["records"][entity])

    def control(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(f"/_control/{path}", json=body)


@pytest.fixture(scope="session")
def _served() -> Iterator[tuple[Emulator, str]]:
    emulator = Emulator(quiet_config())
    with running(create_emulator_app(emulator)) as server:
        yield emulator, server.url


@pytest.fixture
def sandbox(_served: tuple[Emulator, str]) -> Iterator[Sandbox]:
    emulator, url = _served
    emulator.reset()
    emulator.config = quiet_config()
    with httpx.Client(base_url=url, timeout=5) as client:
        yield Sandbox(emulator, client)
