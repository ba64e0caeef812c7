"""Front-door cost: the ingest run with origin checks, the per-client rate limit (set high so
it never refuses) and idempotency keys on, against the same run with them off, alternating.

    python -m bench.front_door [--rounds 3] [--seconds 8] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

from bench.ingest import HERE, start, stop, wrk

CONFIGS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # name: (gateway settings, wrk environment)
    "on": (
        {"ALLOWED_ORIGINS": "https://shop.example", "RATE_LIMIT_PER_IP": "1000000/minute"},
        {"WRK_IDEMPOTENCY": "1"},
    ),
    "off": ({"RATE_LIMIT_PER_IP": "0"}, {}),
}


def run(rounds: int, seconds: int, connections: int) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="b24-front-door-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("B24_", "ALLOWED_"))}
    base_env["PYTHONPATH"] = str(HERE.parent)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for n in range(rounds):
        for name, (settings, load_env) in CONFIGS.items():
            env = {
                **base_env,
                "WORKER": "false",
                "LOG_LEVEL": "WARNING",
                "DATABASE_URL": f"sqlite+aiosqlite:///{workdir / f'{name}-{n}.db'}",
                "STORAGE_MAX_SUBMISSIONS_PER_FORM_HOUR": "1000000000",  # as in bench.ingest
                **settings,
            }
            proc, url = start("app.main:app", env, workdir)
            try:
                wrk(url, 2, connections, {**base_env, **load_env})
                results[name].append(wrk(url, seconds, connections, {**base_env, **load_env}))
            finally:
                stop(proc)

    def median(name: str, key: str) -> float:
        return round(statistics.median(r[key] for r in results[name]), 2)

    keys = ("rps", "p50_ms", "p99_ms", "non_2xx")
    return {
        "rounds": rounds,
        "seconds_each": seconds,
        "connections": connections,
        **{name: {k: median(name, k) for k in keys} for name in CONFIGS},
        "ratio_rps_on_vs_off": round(median("on", "rps") / median("off", "rps"), 3),
        "per_round": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="front-door checks on vs off")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(run(args.rounds, args.seconds, args.connections), indent=2))


if __name__ == "__main__":
    main()
