"""All benchmarks in one run (about 6 minutes on 2 cores): `python -m bench` or `make bench`.

The drain after an outage comes first (leads, then deal packages), then ingest, the front door,
the clean-start drains and the per-client limiter (in process; with Redis when one listens at
127.0.0.1:6379; without the previous limiter's contrast); each prints its JSON, then the two
drains side by side and the ratios against their goals. To fit the time, this run is smaller
than the benchmarks' own defaults: a 10 s outage (`python -m bench.drain --after-outage`
defaults to 20 s), and clean backlogs of 5,000 leads and 600 deal packages (defaults 10,000 and
1,500).
"""

from __future__ import annotations

import asyncio
import json

from bench import drain, front_door, ingest, limiter

OUTAGE_SECONDS = 10.0
AFTER_OUTAGE = {"lead": 1000, "deal": 300}
CLEAN = {"lead": 5000, "deal": 600}
LIMITER_REDIS_URL = "redis://127.0.0.1:6379/0"
DRAIN_LIMIT_SECONDS = 150.0  # after an outage: a drain still going then is reported unfinished


def main() -> None:
    results = {
        "drain_leads_after_outage": asyncio.run(
            drain.run_after_outage(
                AFTER_OUTAGE["lead"], 2.0, 50, "lead", OUTAGE_SECONDS, DRAIN_LIMIT_SECONDS
            )
        ),
        "drain_deals_after_outage": asyncio.run(
            drain.run_after_outage(
                AFTER_OUTAGE["deal"], 2.0, 50, "deal", OUTAGE_SECONDS, DRAIN_LIMIT_SECONDS
            )
        ),
        "ingest": ingest.run(3, 6, 16, {}),
        "front_door": front_door.run(3, 6, 16),
        "drain_leads": asyncio.run(drain.run(CLEAN["lead"], 2.0, 50, "lead")),
        "drain_deals": asyncio.run(drain.run(CLEAN["deal"], 2.0, 50, "deal")),
        "limiter": limiter.run(previous_clients=0, redis_url=LIMITER_REDIS_URL),
    }
    for name, result in results.items():
        result.pop("per_round", None)
        print(f"== {name}\n{json.dumps(result, indent=2)}")
    print(
        f"== drain side by side (after outage: {OUTAGE_SECONDS:g} s outage, every submission "
        "tried with backoff, the portal back with its bucket full; clean start: empty bucket; "
        "smaller backlogs than the defaults, to fit the run)"
    )
    print(side_by_side(results))
    print("== ratios")
    valid = "" if results["ingest"]["valid"] else " (INVALID: some posts were refused)"
    print(f"ingest gateway/bare requests/s: {results['ingest']['ratio_rps']} (goal >= 0.5){valid}")
    print(f"ingest peak RSS MB: {results['ingest']['gateway_peak_rss_mb']} (goal < 150)")
    print(f"front door on/off requests/s: {results['front_door']['ratio_rps_on_vs_off']}")
    bounded = results["limiter"]["bounded"]
    assert isinstance(bounded, dict)
    print(
        f"limiter: {bounded['kept']} of {bounded['clients']} clients kept, RSS growth "
        f"{bounded['rss_growth_mib']} MiB, per check {bounded['per_check_us_10_clients']} us "
        f"(10 clients) / {bounded['per_check_us_all_distinct']} us (all distinct)"
    )
    for name in ("drain_leads_after_outage", "drain_deals_after_outage"):
        r = results[name]
        met = r["met"]
        assert isinstance(met, dict)
        missed = [goal for goal, ok in met.items() if not ok]
        print(
            f"{name} first->last/ceiling: {r['ratio_first_to_last']} (goal >= 0.9), "
            f"QUERY_LIMIT_EXCEEDED: {r['query_limit_exceeded']} (goal <= 1), "
            f"requests/submission: {r['requests_per_submission']}, "
            f"first delivery: {r['first_delivery_s']} s (goal <= 2), "
            f"lost/duplicated: {r['lost']}/{r['duplicated']}; "
            f"goals missed: {', '.join(missed) or 'none'}"
        )
    for name in ("drain_leads", "drain_deals"):
        r = results[name]
        print(
            f"{name} steady/ceiling: {r.get('steady_ratio')} (goal >= 0.9), "
            f"503s: {r['query_limit_exceeded']} (goal 0)"
        )


ROWS = (
    ("submissions", "submissions", ""),
    ("delivered within the run", "delivered", ""),
    ("per s, first to last delivery", "per_s_first_to_last", ""),
    ("  / ceiling", "ratio_first_to_last", ">= 0.9 after outage"),
    ("steady per s / ceiling", "steady_ratio", ">= 0.9 clean"),
    ("QUERY_LIMIT_EXCEEDED", "query_limit_exceeded", "<= 1 after outage, 0 clean"),
    ("portal requests", "portal_requests", ""),
    ("requests per submission", "requests_per_submission", "<= 0.03 lead, 0.21 deal"),
    ("first delivery, s", "first_delivery_s", "<= 2 (clean: from gateway start)"),
    ("lost", "lost", "0"),
    ("duplicated", "duplicated", "0"),
)


def side_by_side(results: dict[str, dict[str, object]]) -> str:
    columns = {
        "leads after outage": results["drain_leads_after_outage"],
        "leads clean": results["drain_leads"],
        "deals after outage": results["drain_deals_after_outage"],
        "deals clean": results["drain_deals"],
    }
    lines = [
        f"{'':30}" + "".join(f"{name:>20}" for name in columns) + "  goal",
    ]
    for label, key, goal in ROWS:
        cells = []
        for result in columns.values():
            value = result.get(key, "-")
            cells.append(f"{'-' if value is None else value!s:>20}")
        lines.append(f"{label:30}" + "".join(cells) + f"  {goal}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
