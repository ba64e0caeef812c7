"""Sales Intelligence traces (docs/bitrix24.md §8): the automatic trace of a REST add (§8.2), the
numeric TRACE of a REST update, and the two REST methods crm.tracking.trace.add / .delete (§8.3),
with the server's exact messages.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable

from app.sandbox.entities import UTM_FIELDS, EntityType, Record
from app.sandbox.errors import core_error
from app.sandbox.params import Params, as_array, as_int, as_list, is_php_numeric, php_string
from app.sandbox.store import Store

# The order of the server's message, which is also the order it lists them in.
ALLOWED_TYPES = ("COMPANY", "CONTACT", "DEAL", "LEAD", "QUOTE")


def attach_on_add(store: Store, entity: EntityType, record: Record, *, created_at: str) -> None:
    """What the server does after a REST add (§8.2, Tracking\\Entity::onRestAfterAdd)."""
    entity_id = record["ID"]
    if not isinstance(entity_id, int):
        return
    raw = record.get("TRACE")
    trace = None
    if is_php_numeric(raw):
        # A numeric TRACE is the id of an existing trace; an unknown id falls through.
        existing_id = _php_int(raw)
        trace = store.traces.get(existing_id) if existing_id is not None else None
    if trace is None:
        data = _parse_leniently(raw)
        _merge_utm(data, record)
        trace = store.add_trace(
            raw=_raw_text(raw), data=data, origin=f"crm.{entity.name}.add", created_at=created_at
        )
    if "rest" not in trace.channels:
        trace.channels.append("rest")
    store.link(trace, entity.owner, entity_id)
    if entity.name == "deal":
        contact_id = as_int(record.get("CONTACT_ID"))
        if contact_id is not None and contact_id > 0:
            store.link(trace, "CONTACT", contact_id)
        company_id = as_int(record.get("COMPANY_ID"))
        if company_id is not None and company_id > 0:
            # Server bug kept on purpose (§8.2 step 3): COMPANY_ID is linked with the CONTACT type,
            # i.e. to whichever contact has that id. Clients must link companies explicitly.
            store.link(trace, "CONTACT", company_id)


def attach_on_update(
    store: Store, entity: EntityType, record: Record, fields: dict[str, object]
) -> None:
    """What the server does after a REST update (docs/bitrix24.md §0 fact 17, §8.2; server:
    crm/lib/tracking/entity.php Entity::onRestAfterUpdate): only a numeric TRACE links the record
    to that trace (channel rest). Otherwise a trace is saved only when its utm_source matches a
    Sales Intelligence source, which the emulator has none of; and unlike the add, the deal's
    CONTACT_ID / COMPANY_ID are never linked."""
    entity_id = record["ID"]
    raw = fields.get("TRACE")
    if not isinstance(entity_id, int) or _php_empty(raw) or not is_php_numeric(raw):
        return
    trace_id = _php_int(raw)
    trace = store.traces.get(trace_id) if trace_id is not None else None
    if trace is None:
        return
    if "rest" not in trace.channels:
        trace.channels.append("rest")
    store.link(trace, entity.owner, entity_id)


def trace_add(
    store: Store,
    params: Params,
    *,
    created_at: str,
    can_edit: Callable[[str, int], bool] = lambda _owner, _id: True,
) -> int:
    """crm.tracking.trace.add (§8.3). Parameter names are exact: this method reads
    `$query['TRACE']` and `$query['ENTITIES']` directly, not through the crm.* case resolver.
    `can_edit(owner, id)`: whether the webhook user may edit that record."""
    raw = params.get("TRACE")
    if _php_empty(raw):
        raise core_error("Parameter `TRACE` required.")
    text = _raw_text(raw) if isinstance(raw, str | int | float) else None
    try:
        if text is None:
            raise ValueError("an array is not a JSON string")
        # Any JSON passes this check, a bare number included (§8.3: "never send a bare number").
        parsed = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise core_error("Can not parse JSON in parameter `TRACE`.") from None
    links: list[tuple[str, int]] = []
    for item in as_list(params.get("ENTITIES")) or []:
        # Every entity is checked before anything is created (§8.3).
        entity = as_array(item) or {}
        kind = entity.get("TYPE")
        if not isinstance(kind, str) or kind not in ALLOWED_TYPES:
            raise core_error(
                "Wrong TYPE in parameter `ENTITIES`. Allowed types: " + ",".join(ALLOWED_TYPES)
            )
        raw_id = entity.get("ID")
        entity_id = _php_int(raw_id) if is_php_numeric(raw_id) else None
        if entity_id is None or _php_float(raw_id) <= 0:
            raise core_error("Wrong ID in parameter `ENTITIES`.")
        if store.find(kind, entity_id) is None or not can_edit(kind, entity_id):
            # The edit-permission check; a missing record fails it too (docs/bitrix24.md §0
            # fact 10, §8.3; server: crm/lib/tracking/rest.php, EntityAuthorization).
            raise core_error(
                f"You have no access to entity `{kind}` with ID `{php_string(raw_id)}`."
            )
        links.append((kind, entity_id))
    trace = store.add_trace(
        raw=text,
        data=parsed if isinstance(parsed, dict) else {},
        origin="crm.tracking.trace.add",
        created_at=created_at,
    )
    for kind, entity_id in links:
        store.link(trace, kind, entity_id)
    return trace.id


def trace_delete(store: Store, params: Params) -> None:
    """crm.tracking.trace.delete: `{"result": null}`, also for an unknown id (the server's
    delete of a missing row is silent)."""
    raw = params.get("id")
    trace_id = None if _php_empty(raw) else _php_int(raw)
    if not trace_id:
        raise core_error("Parameter `id` required.")
    store.delete_trace(trace_id)


def _parse_leniently(raw: object) -> dict[str, object]:
    """Trace::create: a parse error or a non-object gives an empty trace (§8.2 step 2)."""
    if isinstance(raw, dict):
        return copy.deepcopy({str(k): v for k, v in raw.items()})
    if not isinstance(raw, str):
        return {}
    try:
        parsed = json.loads(raw, parse_constant=_reject_constant)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _merge_utm(data: dict[str, object], record: Record) -> None:
    """Trace::addUtm for each non-empty UTM_* field of the record (§8.2 step 2)."""
    utm = {code.lower(): record.get(code) for code in UTM_FIELDS if record.get(code)}
    if not utm:
        return
    tags = data.get("tags")
    if not isinstance(tags, dict):
        tags = data["tags"] = {}
    tag_list = tags.get("list")
    if not isinstance(tag_list, dict):
        tag_list = tags["list"] = {}
    tag_list.update(utm)


def _raw_text(raw: object) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict | list):
        return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
    return php_string(raw)


def _php_empty(value: object) -> bool:
    """PHP `empty()`: null, "", "0", 0, false and empty arrays."""
    return value in (None, "", "0", 0, False) or value == [] or value == {}


def _php_float(value: object) -> float:
    try:
        return float(str(value).strip()) if not isinstance(value, int | float) else float(value)
    except ValueError:
        return 0.0


def _php_int(value: object) -> int | None:
    """PHP `(int)` of a numeric value ("12.7" → 12); None when it does not fit."""
    number = _php_float(value)
    return int(number) if math.isfinite(number) else None


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
