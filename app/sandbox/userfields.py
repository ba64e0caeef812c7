"""The portal's custom fields (UF_CRM_*): those of the configuration and those made at run time by
crm.<entity>.userfield.add, with the server's name rules and crm.<entity>.userfield.list
(docs/bitrix24.md §6.1, §6.2). Pure: the store keeps the list, the emulator passes it in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.sandbox.entities import EntityType, Record
from app.sandbox.errors import core_error, crm_error
from app.sandbox.listing import Page, parse_filter, select_rows, sort_records
from app.sandbox.params import Params, as_array, as_int, is_truthy, param

# docs: api-reference/crm/quote/user-field/crm-quote-user-field-add.md (USER_TYPE_ID values).
USER_TYPES = (
    "string",
    "integer",
    "double",
    "boolean",
    "datetime",
    "date",
    "money",
    "url",
    "address",
    "enumeration",
    "file",
    "employee",
    "crm_status",
    "iblock_section",
    "iblock_element",
    "crm",
)
MAX_NAME_LENGTH = 50
_VALID_NAME = re.compile(r"[A-Z0-9_]+")


@dataclass
class UserField:
    """One custom field of one entity type; `origin` is "config" or "rest" (made at run time)."""

    id: int
    entity: str  # EntityType.name: "quote"
    entity_id: str  # the user-field entity: "CRM_QUOTE"
    field_name: str
    user_type_id: str = "string"
    label: str = ""
    multiple: bool = False
    mandatory: bool = False
    xml_id: str | None = None
    sort: int = 100
    origin: str = "rest"

    def describe(self, *, required: bool = False) -> dict[str, object]:
        """The crm.<entity>.fields entry: dynamic, titled by its code, labelled by LABEL."""
        label = self.label or self.field_name
        return {
            "type": self.user_type_id,
            "isRequired": self.mandatory or required,
            "isReadOnly": False,
            "isImmutable": False,
            "isMultiple": self.multiple,
            "isDynamic": True,
            "title": self.field_name,
            "listLabel": label,
            "formLabel": label,
            "filterLabel": label,
        }

    def row(self) -> Record:
        """One row of crm.<entity>.userfield.list, numbers as strings and flags Y/N (docs:
        api-reference/crm/quote/user-field/crm-quote-user-field-list.md)."""
        return {
            "ID": str(self.id),
            "ENTITY_ID": self.entity_id,
            "FIELD_NAME": self.field_name,
            "USER_TYPE_ID": self.user_type_id,
            "XML_ID": self.xml_id,
            "SORT": str(self.sort),
            "MULTIPLE": "Y" if self.multiple else "N",
            "MANDATORY": "Y" if self.mandatory else "N",
            "SHOW_FILTER": "N",
            "SHOW_IN_LIST": "Y",
            "EDIT_IN_LIST": "Y",
            "IS_SEARCHABLE": "N",
            "SETTINGS": {},
            "EDIT_FORM_LABEL": self.label or None,
            "LIST_COLUMN_LABEL": self.label or None,
            "LIST_FILTER_LABEL": self.label or None,
            "ERROR_MESSAGE": None,
            "HELP_MESSAGE": None,
        }


def normalise_name(raw: object) -> str:
    """FIELD_NAME as the server stores it (docs: crm-quote-user-field-add.md): upper case, the
    prefix UF_CRM_ always present (`X` → `UF_CRM_X`, `UF_X` → `UF_CRM_X`), at most 50 characters
    with the prefix, only A-Z, 0-9 and _ (else ERROR_CORE)."""
    name = raw.strip().upper() if isinstance(raw, str) else ""
    if not name:
        raise crm_error("The 'FIELD_NAME' field is not found.")
    if not name.startswith("UF_CRM_"):
        name = "UF_CRM_" + (name[3:] if name.startswith("UF_") else name)
    if len(name) > MAX_NAME_LENGTH:
        raise core_error("Field name is too long (more than 50 characters).")
    if not _VALID_NAME.fullmatch(name):
        raise core_error(
            "Field name contains invalid characters. Allowed characters are: A-Z, 0-9 and _."
        )
    return name


def add(
    entity: EntityType, params: Params, existing: Sequence[UserField], *, new_id: int
) -> UserField:
    """crm.<entity>.userfield.add: the new field (the caller stores it and answers its id).

    A name the entity already has fails as CUserTypeEntity::Add does (main/classes/general/
    usertype.php, USER_TYPE_ADD_ALREADY_ERROR), surfaced as ERROR_CORE.
    """
    fields = as_array(param(params, "fields"))
    if fields is None:
        raise crm_error("The 'FIELD_NAME' field is not found.")
    name = normalise_name(fields.get("FIELD_NAME"))
    type_id = fields.get("USER_TYPE_ID")
    if not isinstance(type_id, str) or not type_id.strip():
        raise crm_error("The 'USER_TYPE_ID' field is not found.")
    if type_id.strip() not in USER_TYPES:
        raise core_error("Invalid custom type specified.")
    if any(field.field_name == name for field in existing):
        raise core_error(f"The field {name} for entity {entity.uf_entity_id} already exists.")
    label = fields.get("LABEL")
    xml_id = fields.get("XML_ID")
    sort = as_int(fields.get("SORT"))
    return UserField(
        id=new_id,
        entity=entity.name,
        entity_id=entity.uf_entity_id,
        field_name=name,
        user_type_id=type_id.strip(),
        label=label if isinstance(label, str) else "",
        multiple=is_truthy(fields.get("MULTIPLE")) and type_id.strip() != "boolean",
        mandatory=is_truthy(fields.get("MANDATORY")),
        xml_id=xml_id if isinstance(xml_id, str) else None,
        sort=sort if sort is not None and sort > 0 else 100,
    )


def list_fields(fields: Sequence[UserField], params: Params) -> Page:
    """crm.<entity>.userfield.list (docs: crm-quote-user-field-list.md): `filter` on the row keys
    (FIELD_NAME, USER_TYPE_ID, ...), `order`, all rows at once with `total`."""
    conditions = parse_filter(param(params, "filter"))
    rows = select_rows([field.row() for field in fields], conditions)
    rows = sort_records(rows, param(params, "order") or {"SORT": "ASC"})
    return Page(rows, total=len(rows))
