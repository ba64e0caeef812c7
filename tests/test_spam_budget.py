"""Spam is kept as evidence, not as payload; a storage budget answers 503 before the disk fills.

The gateway runs as a real server over a real SQLite file (sizes measured on disk) and, for the
per-form budget, on every backend."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.retention import erase_expired
from app.store import NewSubmission, Status, Store, create_engine, migrate
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
ADMIN = "spam-review-admin-token-0123456789abcdef"
MIB = 1024 * 1024


def database_bytes(path: Path) -> int:
    """The SQLite file and its write-ahead log as they take up the disk, once the log is
    checkpointed into the file.

    The log itself is scratch space of a fixed ceiling: SQLite moves it into the file every
    1,000 pages (4 MiB) and starts it over, whatever the rows hold. Sequential posts of any
    size, one commit each, fill it to that ceiling; what stays is what the file keeps.
    """
    with sqlite3.connect(path) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def large_spam(n: int) -> dict[str, str]:
    """A 60 KB honeypot hit: six fields of 5,000 Cyrillic letters (10 KB each in UTF-8, and
    six bytes a letter once escaped into JSON)."""
    fields = {f"extra_{i}": chr(0x0430 + (n + i) % 32) * 5000 for i in range(6)}
    return {"phone": f"+1555{n:07d}", "_gotcha": "https://spam.example/", **fields}


async def test_200_large_spam_posts_grow_the_database_by_less_than_2_mib(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    path = tmp_path / "spam.db"
    gateway = await make_gateway(
        portal, DATABASE_URL=f"sqlite+aiosqlite:///{path}", ADMIN_TOKEN=ADMIN
    )
    async with gateway.client() as client:
        # The first insert allocates the table's and indexes' pages: not what spam costs.
        first = await client.post("/forms/contact", json=large_spam(0))
        assert first.status_code == 202
        before = await asyncio.to_thread(database_bytes, path)
        sent = 0
        for n in range(1, 201):
            body = json.dumps(large_spam(n), ensure_ascii=False).encode()
            assert len(body) > 60_000
            sent += len(body)
            response = await client.post(
                "/forms/contact", content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 202 and response.json()["status"] == "accepted"
        real = await client.post("/forms/contact", data={"phone": "+15550009999"})
        grown = await asyncio.to_thread(database_bytes, path) - before
        listing = await client.get(
            "/admin/submissions",
            params={"status": "spam", "limit": 1},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        shown = await client.get(
            f"/admin/submissions/{first.json()['id']}",
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
    assert sent > 200 * 60_000
    assert grown < 2 * MIB, f"{grown} bytes for {sent} bytes of spam"
    # The evidence: form, reason, time, client key and the content's hash; nothing posted.
    store = await gateway.store()
    row = await store.get(first.json()["id"])
    assert row is not None and row.status is Status.SPAM
    assert (row.fields, row.crm, row.trace, row.trace_problem) == ({}, {}, None, None)
    assert (row.form_id, row.spam_reason, row.client_key) == ("contact", "honeypot", "127.0.0.1")
    assert len(row.body_hash) == 64 and int(row.body_hash, 16) >= 0
    assert listing.json()["total"] == 201
    assert listing.json()["items"][0]["spam_reason"] == "honeypot"
    evidence = shown.json()
    assert evidence["status"] == "spam" and evidence["spam_reason"] == "honeypot"
    assert evidence["client_key"] == "127.0.0.1"
    assert evidence["content_sha256"] == row.body_hash
    assert evidence["fields"] == {} and evidence["commands"] == []
    assert "+15550000000" not in shown.text and "spam.example" not in shown.text
    # Real submissions keep their fields and are delivered as before.
    leads = await wait_for(
        lambda: [r for r in portal.records("lead") if r["ORIGIN_ID"] == real.json()["id"]]
    )
    assert leads[0]["PHONE"][0]["VALUE"] == "+15550009999"


async def test_the_same_spam_posted_twice_has_the_same_content_hash_and_a_key_replays_it(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    spam = {"phone": "+15550001111", "_gotcha": "x", "message": "buy now"}
    async with gateway.client() as client:
        one = await client.post("/forms/contact", data=spam)
        two = await client.post("/forms/contact", json=spam)
        other = await client.post("/forms/contact", data={**spam, "message": "buy later"})
        keyed = await client.post("/forms/contact", data=spam, headers={"Idempotency-Key": "bot-1"})
        replay = await client.post(
            "/forms/contact", data=spam, headers={"Idempotency-Key": "bot-1"}
        )
        conflict = await client.post(
            "/forms/contact",
            data={**spam, "message": "x"},
            headers={"Idempotency-Key": "bot-1"},
        )
    store = await gateway.store()
    rows = [await store.get(r.json()["id"]) for r in (one, two, other)]
    assert all(r is not None and r.status is Status.SPAM for r in rows)
    hashes = [r.body_hash for r in rows if r is not None]
    assert hashes[0] == hashes[1] != hashes[2]
    assert replay.json() == keyed.json() and conflict.status_code == 409


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{wanted}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


BUDGET_FORMS = """
[forms.contact]

[forms.other]
"""


async def test_past_a_forms_hourly_budget_intake_answers_503_and_counts_it(
    portal: Portal,
    make_gateway: MakeGateway,
    tmp_path: Path,
    backend_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    forms = tmp_path / "forms.toml"
    forms.write_text(BUDGET_FORMS)
    gateway = await make_gateway(
        portal,
        DATABASE_URL=backend_database_url,
        FORMS_FILE=forms,
        STORAGE_MAX_SUBMISSIONS_PER_FORM_HOUR=5,
    )
    caplog.set_level(logging.WARNING, logger="app.intake")
    async with gateway.client() as client:
        answers = []
        for n in range(5):
            # Spam counts too: it is what fills a disk.
            fields = {"phone": f"+155500000{n:02d}", **({"_gotcha": "x"} if n % 2 else {})}
            answers.append(await client.post("/forms/contact", data=fields))
        assert [a.status_code for a in answers] == [202] * 5
        refused = await client.post("/forms/contact", data={"phone": "+15550000099"})
        spam_refused = await client.post(
            "/forms/contact", data={"phone": "+15550000098", "_gotcha": "x"}
        )
        # Another form has its own budget.
        elsewhere = await client.post("/forms/other", data={"phone": "+15550000097"})
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == spam_refused.status_code == 503
    assert refused.json() == {"error": "this form takes no more submissions for now; try later"}
    assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert elsewhere.status_code == 202
    assert metric(metrics, "gateway_storage_refused_total", form="contact", reason="form_hour") == 2
    store = await gateway.store()
    assert (await store.search(form_id="contact")).total == 5
    # A flood is refused thousands of times a minute; the log says so once a minute.
    events = [r for r in caplog.records if r.getMessage() == "intake.storage_budget_exceeded"]
    assert [(getattr(r, "form_id", None), getattr(r, "reason", None)) for r in events] == [
        ("contact", "form_hour")
    ]


async def test_below_the_disk_watermark_intake_answers_503_and_the_metric_shows_free_space(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    path = tmp_path / "watermark.db"
    free = (await asyncio.to_thread(shutil.disk_usage, tmp_path)).free
    gateway = await make_gateway(
        portal,
        DATABASE_URL=f"sqlite+aiosqlite:///{path}",
        # Ten times what the disk has free: every post is past the watermark.
        STORAGE_MIN_FREE_MB=free * 10 // (1024 * 1024),
    )
    async with gateway.client() as client:
        refused = await client.post("/forms/contact", data={"phone": "+15550001111"})
        metrics = (await client.get("/metrics")).text
        healthy = await client.get("/healthz")
    assert refused.status_code == 503 and healthy.status_code == 200
    assert refused.json() == {"error": "the gateway's disk is nearly full; try later"}
    assert int(refused.headers["retry-after"]) >= 1
    assert metric(metrics, "gateway_storage_refused_total", form="contact", reason="disk") == 1
    assert 0 < metric(metrics, "gateway_storage_free_bytes") <= free * 2
    store = await gateway.store()
    assert (await store.search()).total == 0


async def test_retention_erases_a_spam_rows_client_key_and_keeps_its_reason(
    tmp_path: Path,
) -> None:
    store = Store(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'retention.db'}"))
    await migrate(store.engine)
    now = datetime.now(UTC)
    try:
        for days, submission_id in ((40, "old"), (10, "recent")):
            spam = NewSubmission.spam(
                submission_id=submission_id,
                form_id="contact",
                entity="lead",
                body_hash="ab" * 32,
                reason="honeypot",
                client_key="2001:db8:1:2::/64",
            )
            await store.enqueue(spam, now=now - timedelta(days=days))
        assert await erase_expired(store, days=30, horizon_seconds=3 * 86400, now=now) == 1
        old, recent = await store.get("old"), await store.get("recent")
        assert old is not None and recent is not None
        assert (old.client_key, old.body_hash, old.spam_reason) == (None, "erased", "honeypot")
        assert (recent.client_key, recent.body_hash) == ("2001:db8:1:2::/64", "ab" * 32)
    finally:
        await store.engine.dispose()
