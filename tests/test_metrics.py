"""/metrics after a delivery run: every metric family is there with the right values."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client.parser import text_string_to_metric_families

from app.store import Status
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_metrics_after_a_delivery_run(portal: Portal, make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        for i in range(3):
            await client.post("/forms/contact", data={"phone": f"+1555000000{i}"})
        await client.post("/forms/contact", data={"phone": "+15550000009", "_gotcha": "bot"})
        await client.post("/forms/contact", data={"name": "no contact"})
        await client.post("/forms/evil-{random}", data={"phone": "+15550000009"})
        store = await gateway.store()

        async def delivered() -> bool:
            return (await store.count_by_status())[Status.DELIVERED] == 3

        await wait_for(delivered)
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    values = samples(response.text)

    def value(name: str, **labels: str) -> float:
        return values.get((name, tuple(sorted(labels.items()))), 0.0)

    received = "gateway_submissions_received_total"
    assert value(received, form="contact", outcome="accepted") == 3
    assert value(received, form="contact", outcome="spam") == 1
    assert value(received, form="contact", outcome="invalid") == 1
    assert value(received, form="unknown", outcome="rejected") == 1
    assert value("gateway_deliveries_total", result="delivered") == 3
    assert value("gateway_queue_depth", status="delivered") == 3
    assert value("gateway_queue_depth", status="spam") == 1
    assert value("gateway_queue_depth", status="accepted") == 0
    assert value("gateway_oldest_undelivered_age_seconds") == 0
    batches = value("gateway_portal_requests_total", method="batch", status="200")
    assert batches >= 1
    assert value("gateway_portal_request_duration_seconds_count", method="batch") == batches
    assert ("gateway_rate_limiter_wait_seconds_total", ()) in values
    assert "evil" not in response.text
