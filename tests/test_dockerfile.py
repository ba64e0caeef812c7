"""Holds the Dockerfile to its contract without a Docker engine (none runs in CI).

The fast tests read the Dockerfile with dockerfile-parse and check what an operator relies on:
slim Python base, non-root user, health check, data volume, exec-form command, exposed port.
The slow test runs the Dockerfile's own RUN and CMD text in a fresh virtualenv: only the
environment differs from a build.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from subprocess import Popen

import httpx
import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Docker's default SHELL: a RUN or HEALTHCHECK in shell form runs as `/bin/sh -c TEXT`.
DEFAULT_SHELL = ("/bin/sh", "-c")
# Commands that need root and the image's own filesystem (creating the system user, chown of
# /app/data). A RUN line using one is skipped in the virtualenv run: it cannot work outside an
# image, and it installs nothing the service needs to start.
ROOT_ONLY = re.compile(r"\b(useradd|groupadd|adduser|addgroup|chown|apt-get|apk)\b")
STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 15.0


# --------------------------------------------------------------------------- reading it


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword, its argument text, its first line."""

    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, read by dockerfile-parse (continuations joined, comments out)."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    return [
        Instruction(item["instruction"].upper(), item["value"].strip(), item["startline"] + 1)
        for item in parser.structure
        if item["instruction"] != "COMMENT"
    ]


def exec_form(args: str) -> list[str] | None:
    """The argv of a JSON (exec) form argument, or None for shell form."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None  # Docker treats invalid JSON as shell form too.
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions from the last FROM on: what the shipped image is built from."""
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """Variables set by the stage's ENV lines, later lines winning."""
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword != "ENV":
            continue
        words = shlex.split(ins.args)
        if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
            env[words[0]] = ins.args.split(None, 1)[1] if len(words) > 1 else ""
            continue
        for word in words:
            key, _, value = word.partition("=")
            env[key] = value
    return env


def workdir_of(stage: list[Instruction], upto: int | None = None) -> str:
    """The working directory after the stage's WORKDIR lines (before index `upto`)."""
    workdir = "/"
    for ins in stage[:upto]:
        if ins.keyword == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, ins.args))
    return workdir


@dataclass(frozen=True, slots=True)
class HealthCheck:
    options: dict[str, str]
    command: list[str] | str  # argv (exec form) or shell text


def healthcheck_of(stage: list[Instruction]) -> HealthCheck | None:
    found = [ins for ins in stage if ins.keyword == "HEALTHCHECK"]
    if not found:
        return None
    match = re.fullmatch(r"((?:--[\w-]+=\S+\s+)*)(CMD|NONE)\b\s*(.*)", found[-1].args, re.S)
    assert match, f"line {found[-1].line}: cannot read HEALTHCHECK {found[-1].args!r}"
    if match[2] == "NONE":
        return None
    options = dict(opt[2:].split("=", 1) for opt in match[1].split())
    return HealthCheck(options, exec_form(match[3]) or match[3])


def seconds(duration: str) -> float:
    """A Docker duration such as `30s`, `1m30s` or `500ms`, in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


@pytest.fixture(scope="module")
def stage() -> list[Instruction]:
    return final_stage(parse_dockerfile(DOCKERFILE.read_text()))


def only(stage: list[Instruction], keyword: str) -> Instruction:
    found = [ins for ins in stage if ins.keyword == keyword]
    assert found, f"the final stage has no {keyword}"
    return found[-1]  # Docker uses the last CMD / HEALTHCHECK / USER.


# --------------------------------------------------------------------------- how it is read


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM a\nrun echo hi\n", [("FROM", "a", 1), ("RUN", "echo hi", 2)]),
        ("# syntax=docker/dockerfile:1\n\nENV A=1", [("ENV", "A=1", 3)]),
        ("RUN a \\\n    && b\n", [("RUN", "a     && b", 1)]),
    ],
)
def test_parser_joins_continuations_and_drops_comments(
    text: str, expected: list[tuple[str, str, int]]
) -> None:
    assert [(i.keyword, i.args, i.line) for i in parse_dockerfile(text)] == expected


def test_parser_reads_exec_form_only_from_a_json_list() -> None:
    assert exec_form('["a", "b c"]') == ["a", "b c"]
    assert exec_form("a b") is None
    assert exec_form("[not json") is None


# --------------------------------------------------------------------------- the contract


def test_image_is_the_slim_official_python_311(stage: list[Instruction]) -> None:
    image = stage[0].args.split()[0]
    assert re.fullmatch(r"(docker\.io/(library/)?)?python:3\.11(\.\d+)?-slim(-\w+)?(@\S+)?", image)


def test_runs_as_a_fixed_non_root_user_set_before_the_command(stage: list[Instruction]) -> None:
    users = [i for i, ins in enumerate(stage) if ins.keyword == "USER"]
    cmd = stage.index(only(stage, "CMD"))
    assert users and users[-1] < cmd, "USER must come before CMD"
    user = stage[users[-1]].args.split(":")[0]
    assert user not in ("root", "0", ""), f"runs as {user!r}"


def test_healthcheck_probes_healthz_with_the_standard_library(stage: list[Instruction]) -> None:
    check = healthcheck_of(stage)
    assert check is not None, "no HEALTHCHECK"
    text = " ".join(check.command) if isinstance(check.command, list) else check.command
    assert "/healthz" in text
    assert not re.search(r"\b(curl|wget)\b", text), "the slim image has neither curl nor wget"
    assert seconds(check.options["interval"]) <= 60
    assert 1 <= seconds(check.options["timeout"]) < seconds(check.options["interval"])
    assert 1 <= int(check.options["retries"]) <= 10


def test_data_folder_is_a_volume(stage: list[Instruction]) -> None:
    # The sandbox default DATABASE_URL is SQLite at ./data/gateway.db, relative to WORKDIR.
    args = only(stage, "VOLUME").args
    volumes = exec_form(args) or args.split()
    assert posixpath.join(workdir_of(stage), "data") in volumes


def test_command_is_the_exec_form_serve(stage: list[Instruction]) -> None:
    assert exec_form(only(stage, "CMD").args) == ["b24-form-gateway", "serve"]
    assert not any(ins.keyword == "ENTRYPOINT" for ins in stage)


def test_listens_on_all_interfaces_at_the_exposed_port(stage: list[Instruction]) -> None:
    env = env_of(stage)
    exposed = {port.split("/")[0] for port in only(stage, "EXPOSE").args.split()}
    assert env.get("HOST") == "0.0.0.0"
    assert env.get("PORT") in exposed


def test_installs_the_package_without_dev_extras_or_a_pip_cache(stage: list[Instruction]) -> None:
    installs = [ins.args for ins in stage if ins.keyword == "RUN" and "pip install" in ins.args]
    assert installs, "no RUN pip install"
    for text in installs:
        assert "--no-cache-dir" in text
        assert "[dev]" not in text and " -e " not in text


def test_dockerignore_keeps_what_copy_needs_and_drops_the_rest(stage: list[Instruction]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for source in copy_sources(stage):
        assert not any(fnmatch(source.rstrip("/"), p) for p in patterns), f"{source} is ignored"
    for dropped in (".git", ".venv", "data", ".pytest_cache"):
        assert dropped in patterns


def copy_sources(stage: list[Instruction]) -> list[str]:
    sources: list[str] = []
    for ins in stage:
        if ins.keyword == "COPY":
            words = exec_form(ins.args) or shlex.split(ins.args)
            sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


# --------------------------------------------------------------------------- built and run


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def copy_into_context(ins: Instruction, *, workdir: str, context: Path) -> None:
    """Does a COPY from the repository into `context`, which stands for the image's WORKDIR."""
    words = exec_form(ins.args) or shlex.split(ins.args)
    assert not any(w.startswith("--from") for w in words), "multi-stage COPY is not modelled"
    *sources, dest = [w for w in words if not w.startswith("--")]  # --chown: needs root
    target = posixpath.normpath(posixpath.join(workdir, dest))
    rel = posixpath.relpath(target, workdir)
    assert not rel.startswith(".."), f"line {ins.line}: COPY outside WORKDIR is not modelled"
    into_dir = dest.endswith("/") or len(sources) > 1
    for source in sources:
        origin = ROOT / source
        host = context / rel
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(origin, host, ignore=ignore, dirs_exist_ok=True)
        else:
            file_target = host / origin.name if into_dir else host
            file_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, file_target)


def venv_env(venv: Path, image_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """This machine's environment (it holds the package index settings) plus the image's ENV,
    with the virtualenv first on PATH: the environment is the only thing that differs."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(image_env)
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    env.update(overrides)
    return env


def as_argv(command: list[str] | str) -> list[str]:
    return command if isinstance(command, list) else [*DEFAULT_SHELL, command]


@dataclass(slots=True)
class Built:
    venv: Path
    image_env: dict[str, str]


def build_in_venv(stage: list[Instruction], tmp_path: Path) -> Built:
    """Runs the stage's COPY and RUN lines against a fresh virtualenv; returns what it built."""
    assert not any(ins.keyword in ("SHELL", "ADD", "ARG") for ins in stage), "not modelled"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    context = tmp_path / "context"
    context.mkdir()
    installed = 0
    for index, ins in enumerate(stage):
        workdir = workdir_of(stage, index)
        if ins.keyword == "COPY":
            copy_into_context(ins, workdir=workdir, context=context)
        elif ins.keyword == "RUN":
            if ROOT_ONLY.search(ins.args):
                assert "pip install" not in ins.args, f"line {ins.line}: keep pip apart from root"
                continue
            env = venv_env(venv, env_of(stage[:index]))
            command = exec_form(ins.args) or ins.args
            done = subprocess.run(
                as_argv(command), cwd=context, env=env, capture_output=True, text=True, timeout=240
            )
            assert done.returncode == 0, f"line {ins.line} failed:\n{done.stdout}\n{done.stderr}"
            installed += "pip install" in ins.args
    assert installed, "no pip install line ran"
    return Built(venv, env_of(stage))


@contextmanager
def serving(
    argv: list[str], *, cwd: Path, env: dict[str, str], log: Path
) -> Iterator[Popen[bytes]]:
    """Runs the image's command; always reaps it, killing it if a test left it running."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def wait_healthy(url: str, process: Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the service exited early:\n{log.read_text()}"
        try:
            answer = httpx.get(url, timeout=2, trust_env=False)
        except httpx.TransportError:
            time.sleep(0.2)
            continue
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
        return
    pytest.fail(f"/healthz did not answer within {STARTUP_TIMEOUT_SECONDS} s:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.timeout(300)  # ~40 s here; a cold pip download in CI may take longer
def test_install_and_command_lines_run_in_a_fresh_virtualenv(
    stage: list[Instruction], tmp_path: Path
) -> None:
    built = build_in_venv(stage, tmp_path)
    run_dir = tmp_path / "run"  # empty, like the image's WORKDIR once the source is removed
    run_dir.mkdir()
    port = free_port()
    env = venv_env(built.venv, built.image_env, HOST="127.0.0.1", PORT=str(port))

    # The install is a real one, not the checkout: the package imports from the virtualenv.
    where = subprocess.run(
        ["python", "-c", "import app; print(app.__file__)"],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert Path(where.stdout.strip()).resolve().is_relative_to(built.venv.resolve())

    argv = exec_form(only(stage, "CMD").args)
    assert argv is not None
    assert shutil.which(argv[0], path=env["PATH"]) == str(built.venv / "bin" / argv[0])
    log = tmp_path / "serve.log"
    with serving(argv, cwd=run_dir, env=env, log=log) as process:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(f"{base}/healthz", process, log)

        form = {"name": "A", "phone": "+491701234567"}
        answer = httpx.post(f"{base}/forms/contact", json=form, timeout=10, trust_env=False)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "accepted" and answer.json()["id"]
        # Sandbox SQLite lands in ./data: the folder the image declares as its VOLUME.
        assert (run_dir / "data" / "gateway.db").is_file()

        check = healthcheck_of(stage)
        assert check is not None
        probe = subprocess.run(
            as_argv(check.command),
            cwd=run_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds(check.options.get("timeout", "30s")),
        )
        assert probe.returncode == 0, probe.stderr

        process.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        try:
            code = process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"no exit within {SHUTDOWN_TIMEOUT_SECONDS} s of SIGTERM:\n{log.read_text()}"
            )
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert code in (0, -signal.SIGTERM), log.read_text()
