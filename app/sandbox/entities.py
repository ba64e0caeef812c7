"""The CRM entity types the emulator knows (lead, deal, contact, company, quote): their fields as
crm.*.fields reports them, the stock directories of crm.status.list, and how a stored record reads
back through legacy get/list, numbers as strings (docs/bitrix24.md §2.2, §6). Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

Record = dict[str, object]

MULTIFIELDS = ("PHONE", "EMAIL", "WEB", "IM")
UTM_FIELDS = ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")
# Emulator-only: the ids of the traces linked to a record. Readable only when named in `select`.
TRACE_IDS = "TRACE_IDS"
# Accepted by add/update but never listed by crm.*.fields nor read back: the Sales Intelligence
# trace (docs/bitrix24.md §8.2; server: crm/lib/tracking/entity.php Entity::onRestAfterAdd reads
# $fields['TRACE'] after CCrmRestProxyBase::internalizeFields kept it).
WRITE_ONLY = ("TRACE",)


@dataclass(frozen=True)
class Field:
    type: str
    title: str
    required: bool = False
    read_only: bool = False
    multiple: bool = False
    status_type: str | None = None
    deprecated: bool = False

    def describe(self) -> dict[str, object]:
        """One entry of crm.*.fields."""
        out: dict[str, object] = {
            "type": self.type,
            "isRequired": self.required,
            "isReadOnly": self.read_only,
            "isImmutable": False,
            "isMultiple": self.multiple,
            "isDynamic": False,
            "title": self.title,
        }
        if self.status_type is not None:
            out["statusType"] = self.status_type
        if self.deprecated:
            out["isDeprecated"] = True
        return out

    @property
    def plain(self) -> bool:
        """Part of `select: ["*"]` (multifields must be named, §7.1)."""
        return self.type != "crm_multifield"


@dataclass(frozen=True)
class EntityType:
    name: str  # method segment and state key: "lead"
    owner: str  # CCrmOwnerType name used by traces and duplicates: "LEAD"
    fields: Mapping[str, Field]
    auto_title: str | None = None  # "Lead #{id}" when TITLE is empty (§6.2)
    title_caption: str | None = None  # TITLE is required; its caption for the error text
    checks_email: bool = False  # contact/company reject an invalid e-mail (§3)
    defaults: Mapping[str, object] = field(default_factory=dict)

    @property
    def multifields(self) -> tuple[str, ...]:
        return tuple(code for code in MULTIFIELDS if code in self.fields)

    @property
    def uf_entity_id(self) -> str:
        """The user-field entity of the type ("CRM_QUOTE"), as CCrmQuote::$sUFEntityID names it."""
        return f"CRM_{self.owner}"


def _fields(*groups: Iterable[tuple[str, Field]]) -> dict[str, Field]:
    return {code: spec for group in groups for code, spec in group}


_STRING = "string"
_ID = [("ID", Field("integer", "ID", read_only=True))]
_UTM = [(code, Field(_STRING, code.replace("_", " ").title())) for code in UTM_FIELDS]
_TAIL = [
    ("ASSIGNED_BY_ID", Field("user", "Responsible person")),
    ("CREATED_BY_ID", Field("user", "Created by", read_only=True)),
    ("MODIFY_BY_ID", Field("user", "Modified by", read_only=True)),
    ("DATE_CREATE", Field("datetime", "Created on", read_only=True)),
    ("DATE_MODIFY", Field("datetime", "Modified on", read_only=True)),
    ("OPENED", Field("char", "Available to everyone")),
    ("COMMENTS", Field(_STRING, "Comment")),
    ("ORIGINATOR_ID", Field(_STRING, "External source")),
    ("ORIGIN_ID", Field(_STRING, "Item ID in data source")),
    *_UTM,
]
_MULTI = [
    (code, Field("crm_multifield", title, multiple=True))
    for code, title in (
        ("PHONE", "Phone"),
        ("EMAIL", "E-mail"),
        ("WEB", "Website"),
        ("IM", "Messenger"),
    )
]
_PERSON = [
    ("HONORIFIC", Field("crm_status", "Salutation", status_type="HONORIFIC")),
    ("NAME", Field(_STRING, "First name")),
    ("SECOND_NAME", Field(_STRING, "Middle name")),
    ("LAST_NAME", Field(_STRING, "Last name")),
    ("BIRTHDATE", Field("date", "Date of birth")),
    ("POST", Field(_STRING, "Position")),
    ("ADDRESS", Field(_STRING, "Address")),
]
_SOURCE = [
    ("SOURCE_ID", Field("crm_status", "Source", status_type="SOURCE")),
    ("SOURCE_DESCRIPTION", Field(_STRING, "Source information")),
]
_MONEY = [
    ("CURRENCY_ID", Field("crm_currency", "Currency")),
    ("OPPORTUNITY", Field("double", "Total")),
]
_HAS = [
    ("HAS_PHONE", Field("char", "Has phone", read_only=True)),
    ("HAS_EMAIL", Field("char", "Has e-mail", read_only=True)),
]
_CONTACTS = [
    ("CONTACT_ID", Field("crm_contact", "Contact")),
    ("CONTACT_IDS", Field("crm_contact", "Contacts", multiple=True)),
]
_COMPANY = [("COMPANY_ID", Field("crm_company", "Company"))]
_DATES = [
    ("BEGINDATE", Field("date", "Start date")),
    ("CLOSEDATE", Field("date", "End date")),
    ("CLOSED", Field("char", "Closed")),
]

LEAD = EntityType(
    name="lead",
    owner="LEAD",
    fields=_fields(
        _ID,
        [("TITLE", Field(_STRING, "Lead name", required=True))],
        _PERSON,
        [("COMPANY_TITLE", Field(_STRING, "Company name"))],
        _SOURCE,
        [
            ("STATUS_ID", Field("crm_status", "Stage", status_type="STATUS")),
            ("STATUS_DESCRIPTION", Field(_STRING, "Additional info about stage")),
            ("IS_RETURN_CUSTOMER", Field("char", "Repeat lead", read_only=True)),
        ],
        _MONEY,
        _CONTACTS,
        _COMPANY,
        _HAS,
        _TAIL,
        _MULTI,
    ),
    # The server fills it although crm.lead.fields calls TITLE required (§6.2).
    auto_title="Lead #{id}",
    defaults={"STATUS_ID": "NEW", "OPENED": "Y"},
)

DEAL = EntityType(
    name="deal",
    owner="DEAL",
    fields=_fields(
        _ID,
        [
            ("TITLE", Field(_STRING, "Name", required=True)),
            ("TYPE_ID", Field("crm_status", "Type", status_type="DEAL_TYPE")),
            ("CATEGORY_ID", Field("crm_category", "Pipeline")),
            ("STAGE_ID", Field("crm_status", "Deal stage", status_type="DEAL_STAGE")),
            ("PROBABILITY", Field("integer", "Probability")),
        ],
        _MONEY,
        _COMPANY,
        _CONTACTS,
        _DATES,
        _SOURCE,
        [("LEAD_ID", Field("crm_lead", "Lead", read_only=True))],
        _TAIL,
    ),
    auto_title="Deal #{id}",
    defaults={"CATEGORY_ID": 0, "OPENED": "Y", "CLOSED": "N"},
)

CONTACT = EntityType(
    name="contact",
    owner="CONTACT",
    fields=_fields(
        _ID,
        _PERSON,
        [("TYPE_ID", Field("crm_status", "Contact type", status_type="CONTACT_TYPE"))],
        _SOURCE,
        [
            ("EXPORT", Field("char", "Included in export")),
            ("COMPANY_ID", Field("crm_company", "Company")),
            ("COMPANY_IDS", Field("crm_company", "Companies", multiple=True)),
            ("LEAD_ID", Field("crm_lead", "Lead", read_only=True)),
            ("ORIGIN_VERSION", Field(_STRING, "Original version")),
        ],
        _HAS,
        _TAIL,
        _MULTI,
    ),
    checks_email=True,
    defaults={"OPENED": "Y", "EXPORT": "Y"},
)

COMPANY = EntityType(
    name="company",
    owner="COMPANY",
    fields=_fields(
        _ID,
        [
            ("TITLE", Field(_STRING, "Company name", required=True)),
            ("COMPANY_TYPE", Field("crm_status", "Company type", status_type="COMPANY_TYPE")),
            ("INDUSTRY", Field("crm_status", "Industry", status_type="INDUSTRY")),
            ("EMPLOYEES", Field("crm_status", "Employees", status_type="EMPLOYEES_LIST")),
            ("CURRENCY_ID", Field("crm_currency", "Currency")),
            ("REVENUE", Field("double", "Annual revenue")),
            ("ADDRESS", Field(_STRING, "Address")),
            ("IS_MY_COMPANY", Field("char", "My company")),
            ("LEAD_ID", Field("crm_lead", "Lead", read_only=True)),
            ("ORIGIN_VERSION", Field(_STRING, "Original version")),
        ],
        _HAS,
        _TAIL,
        _MULTI,
    ),
    title_caption="Company name",
    checks_email=True,
    defaults={"OPENED": "Y", "IS_MY_COMPANY": "N"},
)

# The estimate's own field set (docs/bitrix24.md §0 fact 14, §6.5; docs:
# api-reference/crm/quote/crm-quote-fields.md): no ORIGINATOR_ID / ORIGIN_ID and no PHONE / EMAIL
# multifields, so those keys are ignored on add and dropped from filters; QUOTE_NUMBER read-only.
QUOTE = EntityType(
    name="quote",
    owner="QUOTE",
    fields=_fields(
        _ID,
        [
            ("QUOTE_NUMBER", Field(_STRING, "Estimate Number", read_only=True)),
            ("TITLE", Field(_STRING, "Subject", required=True)),
            ("STATUS_ID", Field("crm_status", "Estimate Stage", status_type="QUOTE_STATUS")),
            ("CURRENCY_ID", Field("crm_currency", "Currency")),
            ("OPPORTUNITY", Field("double", "Amount")),
            ("TAX_VALUE", Field("double", "Tax Rate")),
            ("COMPANY_ID", Field("crm_company", "Company")),
            ("MYCOMPANY_ID", Field("crm_company", "Your Company Details")),
            ("CONTACT_ID", Field("crm_contact", "Contact", deprecated=True)),
            ("CONTACT_IDS", Field("crm_contact", "CONTACT_IDS", multiple=True)),
            ("BEGINDATE", Field("date", "Issue Date")),
            ("CLOSEDATE", Field("date", "Deadline")),
            ("ACTUAL_DATE", Field("date", "ACTUAL_DATE")),
            ("OPENED", Field("char", "Available to Everyone")),
            ("CLOSED", Field("char", "Closed")),
            ("COMMENTS", Field(_STRING, "Comment")),
            ("CONTENT", Field(_STRING, "Content")),
            ("TERMS", Field(_STRING, "Terms")),
            ("CLIENT_TITLE", Field(_STRING, "Client")),
            ("CLIENT_ADDR", Field(_STRING, "Address")),
            ("CLIENT_CONTACT", Field(_STRING, "Contact Person")),
            ("CLIENT_EMAIL", Field(_STRING, "E-mail")),
            ("CLIENT_PHONE", Field(_STRING, "Phone")),
            ("CLIENT_TP_ID", Field(_STRING, "Tax ID")),
            ("CLIENT_TPA_ID", Field(_STRING, "KPP")),
            ("ASSIGNED_BY_ID", Field("user", "Responsible")),
            ("CREATED_BY_ID", Field("user", "Created By", read_only=True)),
            ("MODIFY_BY_ID", Field("user", "Modified By", read_only=True)),
            ("DATE_CREATE", Field("datetime", "Creation Date", read_only=True)),
            ("DATE_MODIFY", Field("datetime", "Modification Date", read_only=True)),
            ("LEAD_ID", Field("crm_lead", "Lead")),
            ("DEAL_ID", Field("crm_deal", "Deal")),
            ("PERSON_TYPE_ID", Field("integer", "Client Type")),
            ("LOCATION_ID", Field("location", "Location")),
        ],
        _UTM,
        [
            ("LAST_ACTIVITY_TIME", Field("datetime", "LAST_ACTIVITY_TIME", read_only=True)),
            ("LAST_ACTIVITY_BY", Field("user", "LAST_ACTIVITY_BY", read_only=True)),
            ("LAST_COMMUNICATION_TIME", Field(_STRING, "LAST_COMMUNICATION_TIME", read_only=True)),
        ],
    ),
    title_caption="Subject",
    defaults={"STATUS_ID": "DRAFT", "OPENED": "Y", "CLOSED": "N"},
)

ENTITY_TYPES: dict[str, EntityType] = {e.name: e for e in (LEAD, DEAL, CONTACT, COMPANY, QUOTE)}
BY_OWNER: dict[str, EntityType] = {e.owner: e for e in ENTITY_TYPES.values()}

# crm.status.list: the stock directories of a fresh portal (§6.4), (ENTITY_ID, STATUS_ID, NAME).
DIRECTORIES: tuple[tuple[str, str, str], ...] = (
    ("SOURCE", "CALL", "Call"),
    ("SOURCE", "EMAIL", "E-Mail"),
    ("SOURCE", "WEB", "Website"),
    ("SOURCE", "ADVERTISING", "Advertising"),
    ("SOURCE", "PARTNER", "Existing client"),
    ("SOURCE", "RECOMMENDATION", "By recommendation"),
    ("SOURCE", "TRADE_SHOW", "Show/Exhibition"),
    ("SOURCE", "WEBFORM", "CRM form"),
    ("SOURCE", "CALLBACK", "Callback"),
    ("SOURCE", "RC_GENERATOR", "Sales boost"),
    ("SOURCE", "STORE", "Online Store"),
    ("SOURCE", "OTHER", "Other"),
    ("STATUS", "NEW", "Unassigned"),
    ("STATUS", "IN_PROCESS", "In progress"),
    ("STATUS", "PROCESSED", "Processed"),
    ("STATUS", "JUNK", "Junk lead"),
    ("STATUS", "CONVERTED", "Good lead"),
    ("DEAL_STAGE", "NEW", "New"),
    ("DEAL_STAGE", "PREPARATION", "Preparing documents"),
    ("DEAL_STAGE", "PREPAYMENT_INVOICE", "Invoice"),
    ("DEAL_STAGE", "EXECUTING", "In progress"),
    ("DEAL_STAGE", "FINAL_INVOICE", "Final invoice"),
    ("DEAL_STAGE", "WON", "Deal won"),
    ("DEAL_STAGE", "LOSE", "Deal lost"),
    ("DEAL_STAGE", "APOLOGY", "Analyze failure"),
    ("DEAL_TYPE", "SALE", "Sales"),
    ("DEAL_TYPE", "COMPLEX", "Complex sale"),
    ("DEAL_TYPE", "GOODS", "Merchandise sales"),
    ("DEAL_TYPE", "SERVICES", "Services sales"),
    ("DEAL_TYPE", "SERVICE", "After-sales service"),
    ("CONTACT_TYPE", "CLIENT", "Clients"),
    ("CONTACT_TYPE", "SUPPLIER", "Suppliers"),
    ("CONTACT_TYPE", "PARTNER", "Partners"),
    ("CONTACT_TYPE", "OTHER", "Other"),
    ("COMPANY_TYPE", "CUSTOMER", "Client"),
    ("COMPANY_TYPE", "SUPPLIER", "Supplier"),
    ("COMPANY_TYPE", "COMPETITOR", "Competitor"),
    ("COMPANY_TYPE", "PARTNER", "Partner"),
    ("COMPANY_TYPE", "OTHER", "Other"),
    ("HONORIFIC", "HNR_EN_1", "Mr."),
    ("HONORIFIC", "HNR_EN_2", "Mrs."),
    ("HONORIFIC", "HNR_EN_3", "Ms."),
    ("HONORIFIC", "HNR_EN_4", "Dr."),
    ("QUOTE_STATUS", "DRAFT", "New"),
    ("QUOTE_STATUS", "SENT", "Sent to client"),
    ("QUOTE_STATUS", "APPROVED", "Approved"),
    ("QUOTE_STATUS", "DECLAINED", "Declined"),
)


def directory_rows() -> list[Record]:
    rows: list[Record] = []
    sort = 0
    previous = ""
    for index, (entity_id, status_id, name) in enumerate(DIRECTORIES, start=1):
        sort = sort + 10 if entity_id == previous else 10
        previous = entity_id
        rows.append(
            {
                "ID": str(index),
                "ENTITY_ID": entity_id,
                "STATUS_ID": status_id,
                "NAME": name,
                "NAME_INIT": name,
                "SORT": str(sort),
                "SYSTEM": "Y",
                "CATEGORY_ID": None,
                "COLOR": None,
                "SEMANTICS": None,
            }
        )
    return rows


# --- reading records back the legacy way (§2.2) -------------------------------------------------

GET_SELECT = ("*", "UF_*", *MULTIFIELDS)


def read_record(
    entity: EntityType,
    record: Record,
    select: Sequence[str],
    user_fields: Collection[str] = (),
) -> Record:
    """The record as legacy get/list return it: `ID` first, values as strings, missing as null.

    `select` entries: `*` (plain catalogue fields), `UF_*` (the portal's custom fields), a field
    code, or `TRACE_IDS`. Codes that are neither catalogue fields nor custom fields the portal has
    (`user_fields`) are left out: the select goes through CSqlUtil::PrepareSql, which skips names
    missing from its field map (docs/bitrix24.md §0 fact 13, §6.1).
    """
    names: dict[str, None] = {"ID": None}
    for item in select:
        if item == "*":
            names.update((code, None) for code, spec in entity.fields.items() if spec.plain)
        elif item == "UF_*":
            names.update((code, None) for code in user_fields)
        elif item in entity.fields or item in user_fields or item == TRACE_IDS:
            names[item] = None
    out: Record = {}
    for name in names:
        spec = entity.fields.get(name)
        value = record.get(name)
        if spec is not None and not spec.plain:
            if isinstance(value, list) and value:
                out[name] = [legacy_value(item) for item in value]
            continue
        if name == TRACE_IDS:
            out[name] = legacy_value(record.get(TRACE_IDS, []))
            continue
        if value is None and spec is not None and spec.type in ("date", "datetime"):
            out[name] = ""  # empty dates read back as "" (§2.2)
            continue
        out[name] = legacy_value(value, double=spec is not None and spec.type == "double")
    return out


def legacy_value(value: object, *, double: bool = False) -> object:
    """Numbers become strings ("5", "15000.00"), flags "Y"/"N", arrays keep their shape."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, int | float):
        return f"{float(value):.2f}" if double else str(value)
    if isinstance(value, str):
        if double:
            try:
                return f"{float(value):.2f}"
            except ValueError:
                return value
        return value
    if isinstance(value, dict):
        return {str(k): legacy_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [legacy_value(v) for v in value]
    return str(value)
