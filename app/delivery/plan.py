"""Turns stored submissions into Bitrix24 commands. Pure: no I/O.

Every record carries ORIGINATOR_ID (the gateway) and ORIGIN_ID (the submission id), so that a
later attempt can find what an interrupted one created (bitrix24-api.md §7.1, §11).
"""

from __future__ import annotations

from typing import Any

from app.bitrix import command
from app.store import Submission


def lead_fields(submission: Submission, *, originator_id: str) -> dict[str, Any]:
    """crm.lead.add `fields`: the mapped fields, the origin ids, and the trace as it arrived."""
    fields: dict[str, Any] = dict(submission.crm.get("lead", {}))
    fields["ORIGINATOR_ID"] = originator_id
    fields["ORIGIN_ID"] = submission.id
    if submission.trace is not None:
        # The getTrace() string unmodified, or an existing trace's id (§8.2 step 1).
        fields["TRACE"] = submission.trace
    return fields


def lead_add(submission: Submission, *, originator_id: str) -> str:
    params = {
        "fields": lead_fields(submission, originator_id=originator_id),
        "params": {"REGISTER_SONET_EVENT": "Y"},
    }
    return command("crm.lead.add", params)


def lead_lookup(submission: Submission, *, originator_id: str) -> str:
    """crm.lead.list by ORIGIN_ID: did an attempt whose answer was lost create the lead?"""
    params = {
        "filter": {"=ORIGINATOR_ID": originator_id, "=ORIGIN_ID": submission.id},
        "select": ["ID"],
        "order": {"ID": "ASC"},
        "start": -1,
    }
    return command("crm.lead.list", params)


def found_id(result: object) -> int | None:
    """The lowest id in a list result (rows come back with string ids, §2.2), or None."""
    if isinstance(result, dict):
        rows = list(result.values())
    elif isinstance(result, list):
        rows = result
    else:
        rows = []
    ids = []
    for row in rows:
        if isinstance(row, dict):
            try:
                ids.append(int(row.get("ID", "")))
            except (TypeError, ValueError):
                continue
    return min(ids) if ids else None


def created_id(result: object) -> int | None:
    """The id an add returned (a JSON integer, §0.7), or None when it is not one."""
    if isinstance(result, bool):
        return None
    if isinstance(result, int):
        return result if result > 0 else None
    if isinstance(result, str) and result.isdigit():
        return int(result) or None
    return None
