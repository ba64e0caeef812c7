"""Running the `b24-form-gateway` command in tests: the installed script, a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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
