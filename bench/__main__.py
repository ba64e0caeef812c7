"""All benchmarks in one run (under 5 minutes on 2 cores): `python -m bench` or `make bench`.

Prints each benchmark's JSON, then the ratios against their goals.
"""

from __future__ import annotations

import asyncio
import json

from bench import drain, front_door, ingest


def main() -> None:
    results = {
        "ingest": ingest.run(3, 6, 16, {}),
        "front_door": front_door.run(3, 6, 16),
        "drain_leads": asyncio.run(drain.run(10000, 2.0, 50, "lead")),
        "drain_deals": asyncio.run(drain.run(1200, 2.0, 50, "deal")),
    }
    for name, result in results.items():
        result.pop("per_round", None)
        print(f"== {name}\n{json.dumps(result, indent=2)}")
    print("== ratios")
    print(f"ingest gateway/bare requests/s: {results['ingest']['ratio_rps']} (goal >= 0.5)")
    print(f"ingest peak RSS MB: {results['ingest']['gateway_peak_rss_mb']} (goal < 150)")
    print(f"front door on/off requests/s: {results['front_door']['ratio_rps_on_vs_off']}")
    for name in ("drain_leads", "drain_deals"):
        r = results[name]
        print(
            f"{name} steady/ceiling: {r.get('steady_ratio')} (goal >= 0.9), "
            f"503s: {r['query_limit_exceeded']} (goal 0)"
        )


if __name__ == "__main__":
    main()
