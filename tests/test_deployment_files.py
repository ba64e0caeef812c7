"""docker-compose.yml: two API replicas and a worker on PostgreSQL, wired as the README says."""

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_runs_two_api_replicas_a_worker_and_postgres() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "gateway-a", "gateway-b", "worker"}
    for name in ("gateway-a", "gateway-b"):
        env = services[name]["environment"]
        assert env["WORKER"] == "false"
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = services["worker"]
    assert worker["command"] == ["b24-form-gateway", "worker"]
    assert worker["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    # The webhook is a secret: it comes from the .env file, never from the compose file.
    assert all(s.get("env_file") == ".env" for n, s in services.items() if n != "postgres")
    assert all("B24_WEBHOOK_URL" not in s.get("environment", {}) for s in services.values())


def test_every_compose_command_is_a_real_cli_command() -> None:
    from app.main import cli

    for service in compose()["services"].values():
        command = service.get("command")
        if command:
            assert command[0] == "b24-form-gateway"
            try:
                cli([*command[1:], "--help"])
            except SystemExit as exc:  # argparse prints the help and exits 0
                assert exc.code == 0
