"""The shipped alert rules and Grafana dashboard name only metrics the app really exports."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.store import Status
from tests.conftest import Gateway, Portal, wait_for

ROOT = Path(__file__).parents[1]
METRIC = re.compile(r"\b(gateway_[a-z_]+)\b")
MakeGateway = Callable[..., Awaitable[Gateway]]


def alert_rules() -> list[dict[str, str]]:
    data = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    data = json.loads((ROOT / "deploy" / "grafana" / "dashboard.json").read_text())
    return [t["expr"] for panel in data["panels"] for t in panel["targets"]]


def test_the_four_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "GatewayDeliveryStalled",
        "GatewayOldestUndeliveredTooOld",
        "GatewayFailedSubmissions",
        "GatewayPortalAuthErrors",
    } <= names


async def test_every_expression_names_exported_metrics(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    # A run that exercises every family: accepted, spam, delivered, a portal error.
    portal.control("config", {"scopes": ["user"]})
    try:
        gateway = await make_gateway(portal)
        async with gateway.client() as client:
            await client.post("/forms/contact", data={"phone": "+15550001111"})
            store = await gateway.store()

            async def failed() -> bool:
                return (await store.count_by_status())[Status.FAILED] == 1

            await wait_for(failed)
            text = (await client.get("/metrics")).text
    finally:
        portal.control("config", {"scopes": ["crm", "user", "basic"]})
    exported: set[str] = set()
    for family in text_string_to_metric_families(text):
        exported.update(sample.name for sample in family.samples)
    expressions = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    named = {name for expr in expressions for name in METRIC.findall(expr)}
    assert named, "no metric found in the expressions"
    assert named <= exported, sorted(named - exported)
    assert 'gateway_portal_errors_total{code="insufficient_scope",kind="config"}' in text
