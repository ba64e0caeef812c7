"""The newcomer's path: `b24-form-gateway serve` in an empty folder runs in sandbox mode, and a
posted form shows up on the sandbox page; `uvicorn app.main:app` works too; bad settings stop
start-up with a message naming the variable; secrets and personal data stay out of the log."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.pages import SAMPLE_TRACE
from tests.cli import clean_env, console_script, run_cli
from tests.servers import free_port


@dataclass
class Process:
    proc: subprocess.Popen[str]
    log_path: Path

    @property
    def output(self) -> str:
        return self.log_path.read_text()


@contextmanager
def process(args: list[str], cwd: Path, env: dict[str, str]) -> Iterator[Process]:
    log_path = cwd / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True
        )
        try:
            yield Process(proc, log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(url: str, running: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise AssertionError(f"exited with {running.proc.returncode}:\n{running.output}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("no /healthz within 30 s")


def test_serve_in_an_empty_folder_runs_in_sandbox_mode_and_shows_the_lead(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [console_script(), "serve", "--port", str(port)]
    with process(command, tmp_path, clean_env()) as proc:
        wait_healthy(url, proc)
        index = httpx.get(url + "/")
        assert "Sandbox mode" in index.text
        # The demo page's own form: an HTML post with the sample trace.
        page = httpx.post(
            url + "/forms/contact",
            data={"name": "Demo", "phone": "+49 170 1234567", "trace": SAMPLE_TRACE},
            headers={"Accept": "text/html"},
        )
        assert page.status_code == 200 and "Thank you" in page.text
        accepted = httpx.post(url + "/forms/contact", json={"email": "demo@example.com"})
        submission_id = accepted.json()["id"]

        deadline = time.monotonic() + 15
        while submission_id not in httpx.get(url + "/sandbox/").text:
            assert time.monotonic() < deadline, "the lead never appeared on the sandbox page"
            time.sleep(0.1)
        records = httpx.get(url + "/sandbox/_control/state").json()["records"]["lead"]
        assert [r["TRACE"] for r in records if r.get("NAME") == "Demo"] == [SAMPLE_TRACE]
        ready = httpx.get(url + "/readyz").json()
        assert ready["sandbox"] is True and ready["database"] == "ok"
    assert (tmp_path / "data" / "gateway.db").is_file()
    assert "sandbox.mode" in proc.output


def test_uvicorn_app_main_app_works(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    with process(command, tmp_path, clean_env()) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        response = httpx.post(
            f"http://127.0.0.1:{port}/forms/contact", json={"phone": "+15550001111"}
        )
        assert response.status_code == 202


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"PORT": "eighty"}, ["PORT"]),
        ({"B24_WEBHOOK_URL": "http://portal.example/rest/1/s3cr3t/"}, ["B24_WEBHOOK_URL"]),
        ({"FORMS_FILE": "forms.toml"}, ["forms.toml", "[forms.x]", "entity"]),
    ],
)
def test_a_bad_setting_stops_start_up_naming_it(
    tmp_path: Path, env: dict[str, str], names: list[str]
) -> None:
    (tmp_path / "forms.toml").write_text("[forms.x]\nentity = 'invoice'\n")
    result = run_cli(["serve"], tmp_path, clean_env(**env))
    assert result.returncode == 2
    for name in names:
        assert name in result.stderr
    assert "s3cr3t" not in result.stderr


def test_the_log_holds_no_secret_and_no_personal_data(tmp_path: Path) -> None:
    # A real webhook URL (the emulator on loopback), and a submission full of personal data.
    from app.sandbox import Emulator, EmulatorConfig, create_emulator_app
    from tests.servers import running

    emulator = Emulator(EmulatorConfig(secret="hush-hush-0042"))
    with running(create_emulator_app(emulator)) as portal:
        port = free_port()
        env = clean_env(
            B24_WEBHOOK_URL=f"{portal.url}/rest/1/hush-hush-0042/",
            LOG_LEVEL="DEBUG",
            LOG_FORMAT="json",
        )
        command = [console_script(), "serve", "--port", str(port)]
        with process(command, tmp_path, env) as proc:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
            response = httpx.post(
                f"http://127.0.0.1:{port}/forms/contact",
                data={
                    "name": "Zebulon",
                    "phone": "+4917099887766",
                    "email": "zebulon@example.org",
                    "trace": '{"url":"https://private.example/"}',
                },
            )
            assert response.status_code == 202
            deadline = time.monotonic() + 15
            while not emulator.snapshot()["records"]["lead"]:  # type: ignore[index]
                assert time.monotonic() < deadline
                time.sleep(0.1)
        log = proc.output
    assert "delivery.delivered" in log
    for secret in ("hush-hush-0042", "Zebulon", "4917099887766", "zebulon@", "private.example"):
        assert secret not in log


def test_the_emulator_runs_standalone(tmp_path: Path) -> None:
    port = free_port()
    command = [console_script(), "sandbox", "--port", str(port), "--secret", "local-code"]
    with process(command, tmp_path, clean_env()) as proc:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.proc.poll() is None, proc.output
            try:
                response = httpx.post(
                    f"{base}/rest/1/local-code/crm.lead.add.json",
                    json={"fields": {"TITLE": "Hello", "PHONE": [{"VALUE": "+1 555 0100"}]}},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        assert response.status_code == 200 and response.json()["result"] == 1
        wrong = httpx.post(f"{base}/rest/1/other/crm.lead.add", json={"fields": {}})
        assert wrong.status_code == 401 and wrong.json()["error"] == "INVALID_CREDENTIALS"


def test_migrate_creates_the_schema_and_the_worker_refuses_sandbox_mode(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    result = run_cli(["migrate"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.db").is_file()
    result = run_cli(["worker"], tmp_path, env)
    assert result.returncode == 2 and "B24_WEBHOOK_URL" in result.stderr


def test_log_lines_carry_the_request_id_and_the_submission_id(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(LOG_FORMAT="json")
    with process([console_script(), "serve", "--port", str(port)], tmp_path, env) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        response = httpx.post(
            f"http://127.0.0.1:{port}/forms/contact",
            json={"phone": "+15550001111"},
            headers={"X-Request-ID": "req-abc123"},
        )
        assert response.headers["x-request-id"] == "req-abc123"
        submission_id = response.json()["id"]
        deadline = time.monotonic() + 15
        while "delivery.delivered" not in proc.output:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    lines = [json.loads(line) for line in proc.output.splitlines() if line.startswith("{")]
    accepted = [e for e in lines if e["event"] == "intake.accepted"]
    assert accepted and accepted[0]["request_id"] == "req-abc123"
    assert accepted[0]["submission_id"] == submission_id
    delivered = [e for e in lines if e["event"] == "delivery.delivered"]
    assert delivered and delivered[0]["submission_id"] == submission_id


@pytest.mark.parametrize(
    ("database_url", "says"),
    [
        (f"postgresql://gateway:pw-s3cr3t@127.0.0.1:{free_port()}/gateway", "connection refused"),
        ("postgres://gateway:pw-s3cr3t@name.invalid:5432/gateway", "does not resolve"),
        ("sqlite:////proc/no-such-folder/gateway.db", "its folder does not exist"),
    ],
)
@pytest.mark.parametrize("command", [["migrate"], ["worker"], ["submissions", "list"]])
def test_an_unusable_database_is_one_plain_line_and_exit_2(
    tmp_path: Path, database_url: str, says: str, command: list[str]
) -> None:
    env = clean_env(DATABASE_URL=database_url, B24_WEBHOOK_URL="http://127.0.0.1:9/rest/1/abcdef/")
    result = run_cli(command, tmp_path, env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    assert says in lines[0] and "DATABASE_URL" in lines[0]
    assert "s3cr3t" not in result.stderr


def test_a_second_serve_on_a_taken_port_stops_before_touching_the_database(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = tmp_path / "first"
    first.mkdir()
    with process([console_script(), "serve", "--port", str(port)], first, clean_env()) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        second = tmp_path / "second"
        second.mkdir()
        result = run_cli(["serve", "--port", str(port)], second, clean_env())
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "PORT" in line
    assert not (second / "data").exists()  # nothing migrated, no worker started


def test_serve_with_an_unusable_database_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"postgresql://gateway:pw-s3cr3t@127.0.0.1:{free_port()}/gateway"
    result = run_cli(["serve", "--port", str(free_port())], tmp_path, clean_env(DATABASE_URL=url))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "connection refused" in line and "DATABASE_URL" in line and "s3cr3t" not in line


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"FORMS_FILE": "missing.toml"}, "FORMS_FILE"),
        ({"DATABASE_URL": "postgresql://gateway@127.0.0.1:9/gateway"}, "connection refused"),
    ],
)
def test_uvicorn_app_main_app_stops_on_a_bad_configuration_in_one_line(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(free_port())]
    result = subprocess.run(
        command, cwd=tmp_path, env=clean_env(**env), capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert says in result.stderr and "Application startup failed" in result.stderr
    assert "Traceback" not in result.stderr
