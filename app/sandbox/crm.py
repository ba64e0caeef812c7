"""The legacy crm.* methods (docs/bitrix24.md §6, §7): `*.add/update/get/list/fields` for lead,
deal, contact, company and quote, crm.duplicate.findbycomm and crm.status.list, over the store.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime

from app.sandbox.entities import (
    GET_SELECT,
    TRACE_IDS,
    WRITE_ONLY,
    EntityType,
    Record,
    directory_rows,
    read_record,
)
from app.sandbox.errors import RestError, core_error, crm_error
from app.sandbox.listing import (
    Page,
    paginate,
    parse_filter,
    parse_select,
    parse_start,
    select_rows,
    sort_records,
)
from app.sandbox.params import Params, as_array, as_int, as_list, is_truthy, param
from app.sandbox.store import Store
from app.sandbox.tracking import attach_on_add, attach_on_update
from app.sandbox.userfields import UserField

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_EMAIL_CAPTIONS = {
    "WORK": "Work e-mail",
    "HOME": "Personal e-mail",
    "MAILING": "Newsletter e-mail",
    "OTHER": "Other e-mail",
}
_DEFAULT_VALUE_TYPE = {"PHONE": "WORK", "EMAIL": "WORK", "WEB": "WORK", "IM": "OTHER"}
_DUPLICATE_TYPES = ("LEAD", "CONTACT", "COMPANY")
_MAX_COMMUNICATION_VALUES = 20
# crm.<entity>.update of a missing id (docs/bitrix24.md §6.1; server: crm/classes/general/
# restservice.php CCrm<Entity>RestProxy::innerUpdate; docs: crm-quote-update.md). The lead docs
# say "Not found"; the server source says "Lead is not found".
_UPDATE_NOT_FOUND = {
    "lead": "Lead is not found",
    "deal": "Not found",
    "contact": "Contact is not found",
    "company": "Company is not found",
    "quote": "Quote is not found",
}
ACCESS_DENIED = "Access denied."


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def add(
    store: Store,
    entity: EntityType,
    params: Params,
    *,
    user_id: int,
    now: float,
    required: Sequence[str] = (),
    user_fields: Collection[str] = (),
) -> int:
    """crm.*.add: validates, stores the known fields, returns the new id as an integer (§6.1).

    `required`: fields an admin made required; all missing ones are named in one message.
    `user_fields`: the portal's custom fields; other UF_ codes are unknown like any other.
    """
    fields = as_array(param(params, "fields"))
    if fields is None:
        raise crm_error("Parameter 'fields' must be array.")
    if entity.title_caption is not None and _blank(fields.get("TITLE")):
        raise crm_error(f'The field "{entity.title_caption}" is required.<br />')
    missing = [code for code in required if _empty(fields.get(code))]
    if missing:
        raise crm_error("".join(f'The field "{code}" is required.<br />' for code in missing))
    multifields = {
        code: _multifield_values(code, fields[code])
        for code in entity.multifields
        if code in fields
    }
    if entity.checks_email:
        for value_type, value in multifields.get("EMAIL", []):
            if not _EMAIL.fullmatch(str(value).strip()):
                caption = _EMAIL_CAPTIONS.get(value_type, "E-mail")
                raise core_error(f'The field "{caption}" contains an invalid address')

    entity_id = store.allocate_id(entity.name)
    record: Record = {"ID": entity_id}
    record.update(_writable(entity, fields, multifields, user_fields))
    for code, values in multifields.items():
        if values:
            record[code] = [
                {
                    "ID": store.allocate_multifield_id(),
                    "VALUE_TYPE": value_type,
                    "VALUE": value,
                    "TYPE_ID": code,
                }
                for value_type, value in values
            ]
    _fill_server_fields(entity, record, user_id=user_id, created_at=iso(now))
    store.records[entity.name][entity_id] = record
    # Every REST add of the five types gets a trace, quotes included (docs/bitrix24.md §8.2;
    # server: crm/lib/tracking/entity.php Entity::onRestAfterAdd, $allowedTypes has Quote).
    attach_on_add(store, entity, record, created_at=iso(now))
    return entity_id


def update(
    store: Store,
    entity: EntityType,
    params: Params,
    *,
    user_id: int,
    now: float,
    user_fields: Collection[str] = (),
    can_edit: Callable[[str, int], bool] = lambda _owner, _id: True,
) -> bool:
    """crm.*.update `{"id": N, "fields": {...}}` → `true` (docs/bitrix24.md §6.1; server:
    CCrmRestProxyBase::update, CCrm<Entity>RestProxy::innerUpdate).

    Unknown and read-only fields are ignored as on add (internalizeFields). A record the webhook
    user may not edit answers "Access denied."; the deal checks existence first, the others
    their permission first. Only a numeric TRACE links the record to a trace: update has none of
    the add's automatic trace nor the deal's CONTACT_ID/COMPANY_ID links (§0 fact 17; server:
    crm/lib/tracking/entity.php Entity::onRestAfterUpdate).
    """
    entity_id = as_int(param(params, "id"))
    if entity_id is None or entity_id <= 0:
        raise crm_error("ID is not defined or invalid.")
    fields = as_array(param(params, "fields"))
    if fields is None:
        raise crm_error("Parameter 'fields' must be array.")
    record = store.records[entity.name].get(entity_id)
    if entity.name == "deal" and record is None:
        raise crm_error(_UPDATE_NOT_FOUND["deal"])
    if not can_edit(entity.owner, entity_id):
        raise crm_error(ACCESS_DENIED)
    if record is None:
        raise crm_error(_UPDATE_NOT_FOUND[entity.name])
    if entity.title_caption is not None and "TITLE" in fields and _blank(fields.get("TITLE")):
        raise crm_error(f'The field "{entity.title_caption}" is required.<br />')
    multifields = {
        code: _multifield_updates(code, fields[code])
        for code in entity.multifields
        if code in fields
    }
    if entity.checks_email:
        for _, value_type, value, deleted in multifields.get("EMAIL", []):
            if not deleted and not _EMAIL.fullmatch(str(value).strip()):
                caption = _EMAIL_CAPTIONS.get(value_type, "E-mail")
                raise core_error(f'The field "{caption}" contains an invalid address')
    record.update(_writable(entity, fields, multifields, user_fields))
    for code, changes in multifields.items():
        _apply_multifield_updates(store, record, code, changes)
    record["MODIFY_BY_ID"] = user_id
    record["DATE_MODIFY"] = iso(now)
    if "HAS_PHONE" in entity.fields:
        record["HAS_PHONE"] = "Y" if record.get("PHONE") else "N"
        record["HAS_EMAIL"] = "Y" if record.get("EMAIL") else "N"
    attach_on_update(store, entity, record, fields)
    return True


def _writable(
    entity: EntityType,
    fields: Mapping[str, object],
    multifields: Collection[str],
    user_fields: Collection[str],
) -> Record:
    """The fields a REST add/update writes: catalogue fields that are not read-only, the portal's
    custom fields and TRACE. Unknown codes (a UF_ field the portal lacks included) are dropped,
    not stored (docs/bitrix24.md §6.1; server: CCrmRestProxyBase::internalizeFields, no field info
    -> unset($fields[$k]))."""
    out: Record = {}
    for code, value in fields.items():
        spec = entity.fields.get(code)
        if code in multifields:
            continue  # handled separately
        if (spec is not None and not spec.read_only) or code in user_fields or code in WRITE_ONLY:
            out[code] = value
    return out


def get(
    store: Store, entity: EntityType, params: Params, user_fields: Collection[str] = ()
) -> Record:
    entity_id = as_int(param(params, "id"))
    if entity_id is None or entity_id <= 0:
        raise crm_error("ID is not defined or invalid.")
    record = store.records[entity.name].get(entity_id)
    if record is None:
        raise crm_error("Not found")
    return read_record(entity, record, GET_SELECT, user_fields)


def list_records(
    store: Store, entity: EntityType, params: Params, user_fields: Collection[str] = ()
) -> Page:
    """crm.*.list: filter keys naming no field of the entity are dropped (§0 fact 13, §7.1)."""
    known = {code: spec.type for code, spec in entity.fields.items()}
    known.update(dict.fromkeys(user_fields, "string"))
    conditions = parse_filter(param(params, "filter"), known)
    select = parse_select(param(params, "select"))
    matches = select_rows(list(store.records[entity.name].values()), conditions)
    ordered = sort_records(matches, param(params, "order"))
    page = paginate(ordered, parse_start(param(params, "start")))
    rows = [read_record(entity, record, select, user_fields) for record in page.rows]
    return Page(rows, total=page.total, next=page.next)


def describe_fields(
    entity: EntityType, *, user_fields: Sequence[UserField] = (), required: Sequence[str] = ()
) -> dict[str, object]:
    """crm.*.fields: the catalogue, the portal's custom fields, admin-required flags (§6.1)."""
    out: dict[str, object] = {}
    for code, spec in entity.fields.items():
        described = spec.describe()
        if code in required:
            described["isRequired"] = True
        out[code] = described
    for field in user_fields:
        out.setdefault(field.field_name, field.describe(required=field.field_name in required))
    return out


def status_list(params: Params) -> Page:
    """crm.status.list over the stock directories; no paging, `total` given."""
    conditions = parse_filter(param(params, "filter"))
    rows = select_rows(directory_rows(), conditions)
    order = param(params, "order") or {"SORT": "ASC"}
    rows = sort_records(rows, order)
    return Page(rows, total=len(rows))


def find_by_comm(store: Store, params: Params) -> dict[str, object]:
    """crm.duplicate.findbycomm (§7.2): ids grouped by type, only types with hits; `[]` if none.

    The spec's wording: the `error` code is the sentence itself.
    """
    raw_type = param(params, "type")
    kind = raw_type.strip().upper() if isinstance(raw_type, str) else ""
    if kind not in ("PHONE", "EMAIL"):
        if not kind:
            raise RestError(
                400, "Communication type is not defined", "Parameter 'type' is required."
            )
        message = f"Communication type '{kind}' is not supported in current context"
        raise RestError(400, message, message + ".")
    values = as_list(param(params, "values"))
    if not values:
        raise RestError(
            400, "Communication values is not defined", "Parameter 'values' is required."
        )
    entity_type = _entity_type_param(params)
    if entity_type == "DEAL":
        raise RestError(400, "", "Deal is not supported in current context.")
    kinds = (entity_type,) if entity_type in _DUPLICATE_TYPES else _DUPLICATE_TYPES

    wanted: list[str] = []
    for value in values:
        # The server skips non-strings and empties and reads at most 20 distinct values.
        if not isinstance(value, str) or not value:
            continue
        normalised = _normalise(kind, value)
        if normalised and normalised not in wanted:
            wanted.append(normalised)
        if len(wanted) >= _MAX_COMMUNICATION_VALUES:
            break
    found: dict[str, object] = {}
    for owner in kinds:
        entity_name = owner.lower()
        ids: list[int] = []
        for value in wanted:
            matches = [
                entity_id
                for entity_id, record in sorted(store.records[entity_name].items())
                if value in _communications(kind, record)
            ]
            ids.extend(i for i in matches[:_MAX_COMMUNICATION_VALUES] if i not in ids)
        if ids:
            found[owner] = ids
    return found


def profile(user_id: int) -> Record:
    return {
        "ID": str(user_id),
        "ADMIN": True,
        "NAME": "Sandbox",
        "LAST_NAME": "",
        "PERSONAL_GENDER": "",
        "TIME_ZONE": "",
        "TIME_ZONE_OFFSET": 0,
    }


def _fill_server_fields(
    entity: EntityType, record: Record, *, user_id: int, created_at: str
) -> None:
    entity_id = record["ID"]
    for code, value in entity.defaults.items():
        if _blank(record.get(code)):
            record[code] = value
    if entity.auto_title is not None and _blank(record.get("TITLE")):
        record["TITLE"] = entity.auto_title.format(id=entity_id)
    if entity.name == "quote":
        # The default numbering is the id (docs: api-reference/crm/quote/crm-quote-get.md).
        record["QUOTE_NUMBER"] = str(entity_id)
    if entity.name == "deal" and _blank(record.get("STAGE_ID")):
        category = as_int(record.get("CATEGORY_ID")) or 0
        record["STAGE_ID"] = f"C{category}:NEW" if category > 0 else "NEW"
    if _blank(record.get("ASSIGNED_BY_ID")):
        record["ASSIGNED_BY_ID"] = user_id
    record["CREATED_BY_ID"] = user_id
    record["MODIFY_BY_ID"] = user_id
    record["DATE_CREATE"] = created_at
    record["DATE_MODIFY"] = created_at
    if "HAS_PHONE" in entity.fields:
        record["HAS_PHONE"] = "Y" if record.get("PHONE") else "N"
        record["HAS_EMAIL"] = "Y" if record.get("EMAIL") else "N"
    if entity.name == "lead":
        returning = any((as_int(record.get(c)) or 0) > 0 for c in ("CONTACT_ID", "COMPANY_ID"))
        record["IS_RETURN_CUSTOMER"] = "Y" if returning else "N"
    record[TRACE_IDS] = []


def _multifield_values(code: str, raw: object) -> list[tuple[str, object]]:
    """`[{"VALUE", "VALUE_TYPE"}, ...]` or the bracket form `{"0": {...}}` (§6.3).

    A non-array value is ignored, and so are items without a VALUE, as the server does.
    """
    values: list[tuple[str, object]] = []
    for item in as_list(raw) or []:
        entry = as_array(item)
        if entry is None:
            continue
        value = entry.get("VALUE")
        if _blank(value) or isinstance(value, dict | list):
            continue
        value_type = entry.get("VALUE_TYPE")
        if _blank(value_type):
            value_type = _DEFAULT_VALUE_TYPE[code]
        values.append((str(value_type), value))
    return values


def _multifield_updates(code: str, raw: object) -> list[tuple[int | None, str, object, bool]]:
    """Update items (docs/bitrix24.md §6.3): `(ID or None, VALUE_TYPE, VALUE, delete)`; an item
    with an ID changes or (`"DELETE": "Y"`) removes that value, one without an ID adds one."""
    changes: list[tuple[int | None, str, object, bool]] = []
    for item in as_list(raw) or []:
        entry = as_array(item)
        if entry is None:
            continue
        value_id = as_int(entry.get("ID"))
        deleted = is_truthy(entry.get("DELETE"))
        value = entry.get("VALUE")
        if not deleted and (_blank(value) or isinstance(value, dict | list)):
            continue
        value_type = entry.get("VALUE_TYPE")
        if _blank(value_type):
            value_type = _DEFAULT_VALUE_TYPE[code]
        changes.append((value_id, str(value_type), value, deleted))
    return changes


def _apply_multifield_updates(
    store: Store, record: Record, code: str, changes: list[tuple[int | None, str, object, bool]]
) -> None:
    current = record.get(code)
    items = [dict(i) for i in current if isinstance(i, dict)] if isinstance(current, list) else []
    for value_id, value_type, value, deleted in changes:
        existing = next((i for i in items if value_id is not None and i["ID"] == value_id), None)
        if existing is not None:
            if deleted:
                items.remove(existing)
            else:
                existing.update(VALUE_TYPE=value_type, VALUE=value)
        elif not deleted:
            items.append(
                {
                    "ID": store.allocate_multifield_id(),
                    "VALUE_TYPE": value_type,
                    "VALUE": value,
                    "TYPE_ID": code,
                }
            )
    if items:
        record[code] = items
    else:
        record.pop(code, None)


def _communications(kind: str, record: Record) -> set[str]:
    items = record.get(kind)
    if not isinstance(items, list):
        return set()
    return {
        _normalise(kind, str(item.get("VALUE")))
        for item in items
        if isinstance(item, dict) and item.get("VALUE") is not None
    }


def _normalise(kind: str, value: str) -> str:
    """Phones compare by their digits only (formatting ignored); e-mails case-insensitively."""
    if kind == "PHONE":
        return "".join(ch for ch in value if "0" <= ch <= "9")
    return value.strip().lower()


def _entity_type_param(params: Params) -> str:
    for name in ("entity_type", "entityType", "ENTITYTYPE"):
        value = param(params, name)
        if isinstance(value, str) and value.strip():
            return value.strip().upper()
    return ""


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _empty(value: object) -> bool:
    """Blank, or an empty array (a multifield or multiple field with nothing in it)."""
    return _blank(value) or (isinstance(value, list | dict) and not value)
