"""Running the `b24-form-gateway` command in tests: the installed script, a clean environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port


def console_script() -> str:
    return str(Path(sys.executable).parent / "b24-form-gateway")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the gateway's own settings, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("B24_", "DATABASE_URL", "FORMS_FILE", "ADMIN_TOKEN"))
    }
    env.update(extra)
    return env


def run_cli(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [console_script(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Served:
    """`b24-form-gateway serve` running as its own process (so its memory is its own)."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @classmethod
    def start(cls, cwd: Path, **settings: str) -> Served:
        """Start `serve` on a free loopback port with `settings` as its environment."""
        port = free_port()
        log_path = cwd / "serve.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [console_script(), "serve", "--port", str(port)],
                cwd=cwd,
                env=clean_env(**settings),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return cls(proc, port, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("serve answered no /healthz within 60 s")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def status(self, field: str) -> int:
        """A `/proc/PID/status` figure in kB, e.g. `VmRSS`, `VmHWM`."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        assert match, f"no {field} in /proc/{self.proc.pid}/status"
        return int(match.group(1))

    def reset_peak_memory(self) -> None:
        """Start VmHWM afresh from the current RSS (Linux clear_refs)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")


@contextmanager
def serving(*folders: Path, **settings: str) -> Iterator[list[Served]]:
    """`serve` in each folder, started side by side, until each answers /healthz."""
    started = [Served.start(folder, **settings) for folder in folders]
    try:
        for served in started:
            served.wait_healthy()
        yield started
    finally:
        for served in started:
            served.stop()
