"""docker-compose.yml and deploy/nginx/nginx.conf: nginx, the only published service, in front
of two API replicas, and a worker on PostgreSQL, wired as the README says. Where nginx is
installed, the config passes `nginx -t` and runs in front of two real gateways."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import crossplane
import httpx
import pytest
import uvicorn
import yaml
from dotenv import dotenv_values

from app.main import create_app
from app.settings import Settings
from tests.conftest import gateway_settings
from tests.servers import RunningServer, free_port

ROOT = Path(__file__).parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
REPLICAS = ("gateway-a", "gateway-b")
ACCEPTED = re.compile(
    r'gateway_submissions_received_total\{form="contact",outcome="accepted"\} (\S+)'
)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def nginx_directives() -> list[dict[str, Any]]:
    """Every directive of the config, blocks flattened, each with its `args` and `block`."""
    parsed = crossplane.parse(str(NGINX_CONF), single=True, check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]
    found: list[dict[str, Any]] = []

    def walk(block: list[dict[str, Any]]) -> None:
        for directive in block:
            found.append(directive)
            walk(directive.get("block", []))

    walk(parsed["config"][0]["parsed"])
    return found


def one(name: str, *, within: list[dict[str, Any]] | None = None) -> list[str]:
    matches = [
        d for d in (within if within is not None else nginx_directives()) if d["directive"] == name
    ]
    assert len(matches) == 1, f"{name}: {len(matches)} directives"
    args: list[str] = matches[0]["args"]
    return args


def seconds(value: str) -> float:
    assert value.endswith("s"), value
    return float(value[:-1])


def test_compose_runs_nginx_two_api_replicas_a_worker_and_postgres() -> None:
    services = compose()["services"]
    assert set(services) == {"proxy", "postgres", *REPLICAS, "worker"}
    for name in REPLICAS:
        env = services[name]["environment"]
        assert env["WORKER"] == "false"
        assert env["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    worker = services["worker"]
    assert worker["command"] == ["b24-form-gateway", "worker"]
    assert worker["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
    # The webhook is a secret: it comes from the .env file, never from the compose file.
    gateways = {n: s for n, s in services.items() if n not in ("postgres", "proxy")}
    assert all(s.get("env_file") == ".env" for s in gateways.values())
    assert all("B24_WEBHOOK_URL" not in s.get("environment", {}) for s in services.values())


def test_only_the_proxy_is_published_and_it_is_the_official_nginx_with_our_config() -> None:
    services = compose()["services"]
    assert [name for name, s in services.items() if s.get("ports")] == ["proxy"]
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    assert set(proxy["depends_on"]) == set(REPLICAS)
    listen = one("listen")
    assert [port.split(":")[1] for port in proxy["ports"]] == listen


def test_nginx_balances_both_replicas_and_names_the_client_to_them() -> None:
    directives = nginx_directives()
    upstreams = [d for d in directives if d["directive"] == "upstream"]
    assert len(upstreams) == 1
    servers = [d["args"][0] for d in upstreams[0]["block"] if d["directive"] == "server"]
    assert servers == [f"{name}:8000" for name in REPLICAS]
    assert one("proxy_pass") == [f"http://{upstreams[0]['args'][0]}"]
    headers = {
        d["args"][0]: d["args"][1] for d in directives if d["directive"] == "proxy_set_header"
    }
    # Replaced, not appended to: nothing a client wrote reaches the replicas.
    assert headers["X-Forwarded-For"] == "$remote_addr"


def test_the_replicas_trust_exactly_the_network_they_share_with_nginx() -> None:
    data = compose()
    services = data["services"]
    (network,) = services["proxy"]["networks"]
    (subnet,) = (pool["subnet"] for pool in data["networks"][network]["ipam"]["config"])
    for name in (*REPLICAS, "worker"):
        assert services[name]["networks"] == [network]
        trusted = services[name]["environment"]["TRUSTED_PROXIES"]
        assert [ipaddress.ip_network(t) for t in trusted.split(",")] == [
            ipaddress.ip_network(subnet)
        ]


def test_nginx_holds_clients_to_the_gateways_limits() -> None:
    defaults = Settings.load(_env_file=None)
    replica_env = compose()["services"]["gateway-a"]["environment"]
    assert seconds(one("client_header_timeout")[0]) == defaults.HTTP_HEADER_TIMEOUT_SECONDS
    assert seconds(one("client_body_timeout")[0]) == defaults.HTTP_BODY_TIMEOUT_SECONDS
    count, size = one("large_client_header_buffers")
    header_bytes = int(count) * int(size.removesuffix("k")) * 1024
    assert header_bytes == 16 * 1024
    # What nginx lets through, plus the few headers it adds, fits the replicas' cap.
    assert header_bytes + 512 <= int(replica_env["HTTP_MAX_HEADER_BYTES"])
    body_bytes = int(one("client_max_body_size")[0].removesuffix("k")) * 1024
    assert body_bytes >= defaults.MAX_BODY_BYTES
    assert int(one("client_body_buffer_size")[0].removesuffix("k")) * 1024 >= body_bytes
    # An upstream connection is dropped by nginx before uvicorn would close it under a request.
    upstream_idle = seconds(one("keepalive_timeout", within=upstream_block())[0])
    assert upstream_idle < uvicorn.Config(app=None).timeout_keep_alive


def upstream_block() -> list[dict[str, Any]]:
    (upstream,) = (d for d in nginx_directives() if d["directive"] == "upstream")
    block: list[dict[str, Any]] = upstream["block"]
    return block


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


# --- with nginx installed (Debian: apt-get install nginx-light) ---------------------------

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed")


def local_config(tmp_path: Path, *, listen: int, replicas: dict[str, int]) -> Path:
    """The config as compose runs it, with the replicas' names and the port on loopback."""
    text = NGINX_CONF.read_text()
    for name, port in replicas.items():
        assert f"server {name}:8000;" in text
        text = text.replace(f"server {name}:8000;", f"server 127.0.0.1:{port};")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{listen};")
    # One worker, so the round robin is one sequence; the image's user may not exist here.
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    assert "user nginx;" in text
    text = text.replace("user nginx;", "")
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


@needs_nginx
def test_the_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    assert NGINX is not None
    conf = local_config(tmp_path, listen=free_port(), replicas={n: 8000 for n in REPLICAS})
    result = subprocess.run(
        [
            NGINX,
            "-t",
            "-q",
            "-e",
            "stderr",
            "-p",
            str(tmp_path),
            "-c",
            str(conf),
            "-g",
            f"pid {tmp_path / 'nginx.pid'};",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@contextlib.contextmanager
def nginx(conf: Path, port: int) -> Iterator[None]:
    assert NGINX is not None
    pid = conf.parent / "nginx.pid"
    proc = subprocess.Popen(
        [
            NGINX,
            "-e",
            "stderr",
            "-p",
            str(conf.parent),
            "-c",
            str(conf),
            "-g",
            f"daemon off; pid {pid};",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


def post_from(address: str, url: str, forwarded_for: str) -> int:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=10) as client:
        response = client.post(
            url + "/forms/contact",
            data={"phone": "+15550001234"},
            headers={"X-Forwarded-For": forwarded_for},
        )
        return response.status_code


@needs_nginx
def test_nginx_balances_both_replicas_and_their_limit_counts_real_clients(
    tmp_path: Path,
) -> None:
    settings = {"TRUSTED_PROXIES": ("127.0.0.1/32",), "RATE_LIMIT_PER_IP": "1/minute"}
    for name in REPLICAS:
        (tmp_path / name).mkdir()
    replicas = {
        name: RunningServer(create_app(gateway_settings(None, tmp_path / name, **settings)))
        for name in REPLICAS
    }
    port = free_port()
    conf = local_config(tmp_path, listen=port, replicas={n: r.port for n, r in replicas.items()})
    try:
        for replica in replicas.values():
            replica.start()
        with nginx(conf, port):
            url = f"http://127.0.0.1:{port}"
            # One client, a new forged X-Forwarded-For each time: the two replicas allow it
            # one post each, so one of three is refused; the forged addresses count for nothing.
            forged = [post_from("127.0.0.2", url, f"198.51.100.{i}") for i in range(3)]
            assert sorted(forged) == [202, 202, 429]
            # Another client behind the same nginx is not that one.
            assert post_from("127.0.0.3", url, "198.51.100.1") == 202
        for name, replica in replicas.items():
            metrics = httpx.get(replica.url + "/metrics").text
            accepted = ACCEPTED.search(metrics)
            assert accepted and float(accepted.group(1)) >= 1, f"{name} got no post"
    finally:
        for replica in replicas.values():
            replica.stop()


@pytest.mark.parametrize("service", ["gateway-a", "gateway-b", "worker"])
def test_with_env_example_copied_to_env_each_replica_listens_where_nginx_sends(
    service: str, tmp_path: Path
) -> None:
    """The README's steps: `cp .env.example .env`, set the webhook, `docker compose up`.
    Compose gives `environment` precedence over `env_file`: the settings each container
    gets are those of .env.example overridden by the compose file's."""
    env = {k: v for k, v in dotenv_values(ROOT / ".env.example").items() if v}
    env["B24_WEBHOOK_URL"] = "https://portal.example/rest/1/s3cr3tw3bhook/"
    env |= {k: str(v) for k, v in compose()["services"][service]["environment"].items()}
    settings = Settings.load(_env_file=None, **env)
    assert settings.HOST == "0.0.0.0"  # reachable from nginx, not only from itself
    assert not settings.sandbox
    assert settings.DATABASE_URL.startswith("postgresql+asyncpg://")
    upstream = {a for d in nginx_directives() if d["directive"] == "server" for a in d["args"]}
    if service != "worker":
        assert f"{service}:{settings.PORT}" in upstream
        assert settings.WORKER is False
