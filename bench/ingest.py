"""Ingest benchmark: the gateway against a bare FastAPI endpoint, side by side in one run.

    python -m bench.ingest [--rounds 3] [--seconds 8] [--connections 16]

Both run under the same uvicorn settings and are loaded by the same wrk script (an urlencoded
form with a trace), alternating gateway and baseline each round. The gateway commits every
submission to SQLite (WAL, synchronous=FULL) before answering; its worker is off (an API-only
replica) so the figure is the intake alone. Reports requests/s, p50/p99 latency, the ratio, and
the gateway's peak RSS. Needs `wrk` (Debian package `wrk`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).parent
# The protocol and connection cap `serve` runs with (app/httpserver.py, default limits).
UVICORN = [
    *(sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"),
    *("--http", "app.httpserver:LimitedHttpProtocol", "--limit-concurrency", "501"),
]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(app: str, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [*UVICORN, app, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(url + "/forms/contact", data={"phone": "+15550000000"}, timeout=2)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{app} did not start")


def stop(proc: subprocess.Popen[bytes]) -> int:
    """Stop the server; returns its peak RSS in kB (VmHWM)."""
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    if status.exists():
        match = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
        peak = int(match.group(1)) if match else 0
    proc.terminate()
    proc.wait(timeout=30)
    return peak


def wrk(url: str, seconds: int, connections: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "post.lua"),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": _latency(out, "50%"),
        "p99_ms": _latency(out, "99%"),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def _latency(out: str, pct: str) -> float:
    match = re.search(rf"{re.escape(pct)}\s+([\d.]+)(us|ms|s)\b", out)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run(
    rounds: int, seconds: int, connections: int, gateway_env: dict[str, str]
) -> dict[str, object]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="b24-ingest-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("B24_")}
    base_env["PYTHONPATH"] = str(HERE.parent)
    env = {
        **base_env,
        "WORKER": "false",
        "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'ingest.db'}",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMIT_PER_IP": "0",
        # The storage budget stays on (its check is part of the path) but far above the run's
        # posts: every round writes to one database, and a refused post would be a cheap 503.
        "STORAGE_MAX_SUBMISSIONS_PER_FORM_HOUR": "1000000000",
        **gateway_env,
    }
    results: dict[str, list[dict[str, float]]] = {"gateway": [], "bare": []}
    peak_rss_kb = 0
    for _ in range(rounds):
        for name, app in (("gateway", "app.main:app"), ("bare", "bench.bare:app")):
            proc, url = start(app, env if name == "gateway" else base_env, workdir)
            try:
                wrk(url, 2, connections, base_env)  # warm-up
                results[name].append(wrk(url, seconds, connections, base_env))
            finally:
                rss = stop(proc)
            if name == "gateway":
                peak_rss_kb = max(peak_rss_kb, rss)

    def median(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in results[name]), 2)

    return {
        "rounds": rounds,
        "seconds_each": seconds,
        "connections": connections,
        "gateway": {k: median("gateway", k) for k in ("rps", "p50_ms", "p99_ms", "non_2xx")},
        "bare": {k: median("bare", k) for k in ("rps", "p50_ms", "p99_ms", "non_2xx")},
        "ratio_rps": round(median("gateway", "rps") / median("bare", "rps"), 3),
        # A refused post is cheaper than an accepted one: with any, the ratio measures nothing.
        "valid": all(r["non_2xx"] == 0 for rows in results.values() for r in rows),
        "gateway_peak_rss_mb": round(peak_rss_kb / 1024, 1),
        "per_round": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="gateway ingest vs a bare FastAPI endpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(run(args.rounds, args.seconds, args.connections, {}), indent=2))


if __name__ == "__main__":
    main()
