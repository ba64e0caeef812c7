"""Retention erases for real: after a pass, the erased values are in none of SQLite's files (the
database, its write-ahead log, its shared-memory index), whatever the SQLite build's default;
failed submissions are erased after the retry horizon plus the retention period, not before."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, make_url
from sqlalchemy.pool import Pool

from app.retention import erase_expired
from app.store import NewSubmission, Status, Store, create_engine, migrate
from app.store.submissions import AttemptRecord, Outcome
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
DAYS = 30
HORIZON = 3 * 24 * 3600.0


def _secure_delete_off(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA secure_delete=OFF")
    cursor.close()


@pytest.fixture(params=["as_built", "built_without_secure_delete"])
def sqlite_build(request: pytest.FixtureRequest) -> Iterator[str]:
    """The SQLite library as installed, or as a build whose secure_delete default is off (the
    upstream default; Debian's build turns it on): every new connection of every engine in
    this process starts with it off, before the store's own settings run."""
    if request.param == "as_built":
        yield request.param
        return
    event.listen(Pool, "connect", _secure_delete_off, insert=True)
    try:
        yield request.param
    finally:
        event.remove(Pool, "connect", _secure_delete_off)


def database_files(url: str) -> bytes:
    path = Path(str(make_url(url).database))
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return b"".join(f.read_bytes() for f in files if f.exists())


def markers(n: int) -> dict[str, str]:
    """Values no uuid, timestamp or page header can contain by chance."""
    return {
        "name": f"Xanthippa{n}qv",
        "email": f"xanthippa{n}.qv@erasure.example",
        "phone": f"+4915550{n:03d}77",
        "trace": f'{{"url":"https://landing-{n}-qv.example/"}}',
        "key": f"idem-xanthippa-{n}-qv",
    }


def needles(n: int) -> list[bytes]:
    m = markers(n)
    return [
        m["name"].encode(),
        m["email"].encode(),
        m["phone"][1:].encode(),  # the digits, however the phone was formatted
        f"landing-{n}-qv".encode(),
        m["key"].encode(),
    ]


async def post(gateway: Gateway, n: int) -> str:
    m = markers(n)
    async with gateway.client() as client:
        response = await client.post(
            "/forms/contact",
            data={"name": m["name"], "email": m["email"], "phone": m["phone"], "trace": m["trace"]},
            headers={"Idempotency-Key": m["key"]},
        )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def wait_status(store: Store, ids: list[str], status: Status) -> None:
    async def reached() -> bool:
        rows = [await store.get(i) for i in ids]
        return all(row is not None and row.status is status for row in rows)

    await wait_for(reached, within=20)


async def test_erased_values_are_in_none_of_the_sqlite_files_afterwards(
    portal: Portal, make_gateway: MakeGateway, sqlite_build: str
) -> None:
    gateway = await make_gateway(portal)
    store = await gateway.store()
    # Two submissions the portal refuses (failed at once, the refusal naming the visitor),
    # then two it takes.
    portal.faults(
        fail_methods={
            "crm.lead.add": {
                "count": 2,
                "status": 400,
                "error": "ERROR_CORE",
                "description": f"Field NAME {markers(0)['name']} is not valid",
            }
        }
    )
    failed = [await post(gateway, n) for n in (0, 1)]
    await wait_status(store, failed, Status.FAILED)
    delivered = [await post(gateway, n) for n in (2, 3)]
    await wait_status(store, delivered, Status.DELIVERED)
    failed_row = await store.get(failed[0])
    assert failed_row is not None and markers(0)["name"] in (failed_row.last_error or "")

    before = database_files(gateway.db_url)
    assert all(needle in before for n in range(4) for needle in needles(n))

    # Past the retention, and for the failed ones past the retry horizon too; the gateway
    # keeps running (its connections open, as in production).
    later = datetime.now(UTC) + timedelta(days=DAYS, seconds=HORIZON) + timedelta(hours=1)
    assert await erase_expired(store, days=DAYS, horizon_seconds=HORIZON, now=later) == 4

    after = database_files(gateway.db_url)
    found = [needle for n in range(4) for needle in needles(n) if needle in after]
    assert found == []
    expected = dict.fromkeys(failed, Status.FAILED) | dict.fromkeys(delivered, Status.DELIVERED)
    for submission_id, status in expected.items():
        row = await store.get(submission_id)
        assert row is not None and row.status is status and row.fields == {}
        assert all(a.excerpt is None for a in await store.attempts_of(submission_id))
    # The gateway still takes and delivers submissions afterwards.
    await wait_status(store, [await post(gateway, 4)], Status.DELIVERED)


async def test_every_sqlite_connection_turns_secure_delete_on_whatever_the_build_default(
    tmp_path: Path, sqlite_build: str
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}")
    try:
        async with engine.connect() as first, engine.connect() as second:
            for conn in (first, second):
                assert (await conn.exec_driver_sql("PRAGMA secure_delete")).scalar_one() == 1
    finally:
        await engine.dispose()


# --------------------------------------------------------------------------- failed submissions


async def failed_submission(store: Store, n: int, *, accepted: datetime) -> str:
    """A submission accepted then, refused by the portal at once, as the worker records it."""
    m = markers(n)
    new = NewSubmission(
        id=f"failed-{n}",
        form_id="contact",
        entity="lead",
        fields={"name": [m["name"]], "email": [m["email"]]},
        crm={"entity": "lead", "main": "lead", "records": {"lead": {"NAME": m["name"]}}},
        body_hash=f"hash-{n}",
        idempotency_key=m["key"],
        trace=m["trace"],
    )
    await store.enqueue(new, now=accepted)
    await fail(store, new.id, at=accepted)
    return new.id


async def fail(store: Store, submission_id: str, *, at: datetime) -> None:
    [claimed] = await store.claim_due(now=at, limit=1, lease=timedelta(minutes=5))
    assert claimed.id == submission_id
    record = AttemptRecord(
        claimed.attempts, at, at, "failed", error_code="", excerpt=f"{claimed.fields} rejected"
    )
    await store.record_outcomes([Outcome(submission_id, record, error="rejected")], now=at)


async def kept(store: Store, submission_id: str) -> bool:
    row = await store.get(submission_id)
    assert row is not None
    return row.fields != {} and row.trace is not None


async def test_failed_submissions_are_erased_after_the_retry_horizon_plus_retention_not_before(
    backend_database_url: str,
) -> None:
    store = Store(create_engine(backend_database_url))
    await migrate(store.engine)
    accepted = datetime(2026, 1, 1, tzinfo=UTC)
    due = accepted + timedelta(days=DAYS, seconds=HORIZON)
    try:
        plain = await failed_submission(store, 0, accepted=accepted)
        # Retried by hand ten days later and refused again: its horizon restarted then.
        retried = await failed_submission(store, 1, accepted=accepted)
        assert await store.requeue(retried, now=accepted + timedelta(days=10))
        await fail(store, retried, at=accepted + timedelta(days=10))

        # After the retention alone, and a minute short of horizon + retention: kept.
        for moment in (accepted + timedelta(days=DAYS, hours=1), due - timedelta(minutes=1)):
            assert await erase_expired(store, days=DAYS, horizon_seconds=HORIZON, now=moment) == 0
            assert await kept(store, plain) and await kept(store, retried)

        assert (
            await erase_expired(
                store, days=DAYS, horizon_seconds=HORIZON, now=due + timedelta(minutes=1)
            )
            == 1
        )
        row = await store.get(plain)
        assert row is not None
        assert (row.status, row.fields, row.trace, row.idempotency_key, row.last_error) == (
            Status.FAILED,
            {},
            None,
            None,
            None,
        )
        assert markers(0)["name"] not in str(row.crm)
        assert [a.excerpt for a in await store.attempts_of(plain)] == [None]
        assert await kept(store, retried)
        # Nothing is left to deliver: a retry by hand refuses it.
        assert not await store.requeue(plain, now=due + timedelta(minutes=2))

        later = accepted + timedelta(days=10 + DAYS, seconds=HORIZON, minutes=1)
        assert await erase_expired(store, days=DAYS, horizon_seconds=HORIZON, now=later) == 1
        assert not await kept(store, retried)
        assert await store.requeue_failed(now=later) == 0
    finally:
        await store.engine.dispose()


async def test_a_checkpoint_a_reader_holds_up_is_finished_by_the_next_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'held.db'}"
    store = Store(create_engine(url))
    await migrate(store.engine)
    accepted = datetime(2026, 1, 1, tzinfo=UTC)
    later = accepted + timedelta(days=DAYS, seconds=HORIZON, hours=1)
    reader = sqlite3.connect(tmp_path / "held.db")
    try:
        await failed_submission(store, 5, accepted=accepted)
        # A reader whose snapshot still shows the values: the log must keep them meanwhile.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM submissions").fetchall()
        with caplog.at_level(logging.WARNING, logger="app.retention"):
            assert await erase_expired(store, days=DAYS, horizon_seconds=HORIZON, now=later) == 1
        assert [r.getMessage() for r in caplog.records] == ["retention.checkpoint_incomplete"]
        assert needles(5)[0] in database_files(url)

        reader.rollback()
        assert await erase_expired(store, days=DAYS, horizon_seconds=HORIZON, now=later) == 0
        assert [n for n in needles(5) if n in database_files(url)] == []
    finally:
        reader.close()
        await store.engine.dispose()
