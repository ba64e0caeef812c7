"""Exactly once under lost answers: with 20% of the calls that add records committed and then
dropped, 200 deals and 200 leads produce exactly 200 of each, with no duplicate record."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

from app.store import Status, Store
from tests.conftest import Gateway, Portal, new_portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
FORMS = """
[forms.contact]
entity = "lead"

[forms.order]
entity = "deal"
"""
TRACE = '{"url":"https://shop.example/","tags":{"list":{"utm_source":"google"}}}'


async def post_all(gateway: Gateway, requests: list[tuple[str, dict[str, str]]]) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def one(client_form: tuple[str, dict[str, str]]) -> str:
        form, fields = client_form
        async with limit, gateway.client() as client:
            response = await client.post(f"/forms/{form}", data=fields)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    return list(await asyncio.gather(*(one(r) for r in requests)))


def duplicates(portal: Portal, entity: str) -> dict[str, int]:
    counts = Counter(str(r.get("ORIGIN_ID")) for r in portal.records(entity))
    return {origin: n for origin, n in counts.items() if n > 1}


async def count_delivered(store: Store) -> int:
    return (await store.count_by_status())[Status.DELIVERED]


async def test_lost_answers_create_nothing_twice(make_gateway: MakeGateway, tmp_path: Path) -> None:
    portal = new_portal(rate_per_second=100, burst=200, seed=7)
    try:
        forms = tmp_path / "forms.toml"
        forms.write_text(FORMS)
        gateway = await make_gateway(
            portal, FORMS_FILE=str(forms), BITRIX_RATE_PER_SECOND=100, BITRIX_BURST=200
        )
        portal.faults(lose_add_rate=0.2)
        requests: list[tuple[str, dict[str, str]]] = []
        for i in range(200):
            requests.append(("contact", {"phone": f"+1555100{i:04d}", "trace": TRACE}))
            requests.append(
                (
                    "order",
                    {
                        "name": f"Buyer {i}",
                        "phone": f"+1555200{i:04d}",
                        "email": f"buyer{i}@example.com",
                        "company": f"Company {i}",
                        "trace": TRACE,
                    },
                )
            )
        ids = await post_all(gateway, requests)
        assert len(set(ids)) == 400
        store = await gateway.store()
        await wait_for(lambda: _all_delivered(store), within=120, interval=0.2)

        state = portal.state()
        assert state["counts"]["lost_responses"] >= 5  # the fault really hit
        for entity in ("lead", "deal", "contact", "company"):
            assert duplicates(portal, entity) == {}, entity
        assert len(portal.records("lead")) == 200
        assert len(portal.records("deal")) == 200
        assert len(portal.records("contact")) == 200
        assert len(portal.records("company")) == 200
        deal_origins = {r["ORIGIN_ID"] for r in portal.records("deal")}
        lead_origins = {r["ORIGIN_ID"] for r in portal.records("lead")}
        assert deal_origins | lead_origins == set(ids)
        # Every deal package has its trace (repeats after a lost answer are allowed).
        linked = {
            int(e["ID"])
            for t in state["traces"]
            if t["CREATED_BY_METHOD"] == "crm.tracking.trace.add"
            for e in t["ENTITIES"]
            if e["TYPE"] == "DEAL"
        }
        assert linked == {r["ID"] for r in portal.records("deal")}
    finally:
        portal.server.stop()


async def _all_delivered(store: Store) -> bool:
    return await count_delivered(store) == 400
