"""Form declarations (the TOML forms file, or the built-in `contact` form) and the field mapping.

Owns: which forms exist, what each requires, and how a submission's fields become Bitrix24 CRM
field values. Pure apart from reading the forms file once at start-up.
"""

from __future__ import annotations

import difflib
import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

from app.settings import origin_setting

FORM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BITRIX_FIELD_RE = re.compile(r"^(?:[A-Z][A-Z0-9_]*|UF_CRM_[A-Za-z0-9_]+)$")
# Fields the gateway itself owns on every record; a form may not set them.
RESERVED_FIELDS = frozenset({"ORIGINATOR_ID", "ORIGIN_ID", "TRACE", "ID"})

UTM_FIELDS = {
    "utm_source": "UTM_SOURCE",
    "utm_medium": "UTM_MEDIUM",
    "utm_campaign": "UTM_CAMPAIGN",
    "utm_content": "UTM_CONTENT",
    "utm_term": "UTM_TERM",
}
# Standard names understood on every form (docs/design.md "Forms file") and their lead field.
PERSON_FIELDS = {"name": "NAME", "last_name": "LAST_NAME", "second_name": "SECOND_NAME"}
STANDARD_FIELDS = frozenset(
    {*PERSON_FIELDS, "phone", "email", "message", "company", "title", *UTM_FIELDS, "trace"}
)
# Fields that steer the gateway and are never written to the CRM; so is every field whose name
# starts with `_` (form backends' convention: `_next`, `_subject`, `_gotcha`, ...).
CONTROL_FIELDS = frozenset({"trace", "submission_id"})
# Names other form backends give the standard fields, beside any case of the standard names
# themselves (`Email`, `NAME`): Formspree's reply-to address is the sender's e-mail.
FIELD_ALIASES = {"_replyto": "email", "_reply_to": "email"}
SUBJECT_FIELD = "_subject"  # a form backend's subject line: the record's title
# The title when the form sets none: who wrote, and through which form.
DEFAULT_TITLE = "Website request: {form}"
# SOURCE_ID on the records a submission creates, unless the form's defaults set it (§6.4 of
# docs/bitrix24.md: the stock "Website" source; an empty string leaves it unset).
DEFAULT_SOURCE_ID = "WEB"
DEFAULT_REQUIRED = ("phone|email",)
# The pages a visitor without JavaScript sees: built-in languages, and the texts a form may set.
LANGUAGES = ("en", "ru")
TEXT_KEYS = ("thank_you_title", "thank_you", "error_title", "error", "back")

Scalar = str | int | float | bool
FieldValue = Scalar | list[Scalar] | list[dict[str, str]]
CrmFields = dict[str, FieldValue]


class Entity(StrEnum):
    """The CRM record a form creates."""

    LEAD = "lead"
    """A lead, with the trace in TRACE of crm.lead.add."""
    DEAL = "deal"
    """A deal with its contact (and company), one trace linked to all of them."""
    CONTACT = "contact"
    """A contact only (subscription forms)."""
    QUOTE = "quote"
    """A quote (estimate)."""


class FormsError(Exception):
    """The forms file cannot be used; the message names the file, the form and the key."""


class _FormModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    entity: Entity = Entity.LEAD
    redirect_url: str | None = None
    title: str | None = None
    required: tuple[str, ...] = DEFAULT_REQUIRED
    honeypot: str | None = "_gotcha"
    contact: Literal["find_or_create", "always_create", "none"] = "find_or_create"
    company: Literal["create_if_named", "find_or_create", "none"] = "create_if_named"
    defaults: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    fields: dict[str, str] = Field(default_factory=dict)
    # The front door (README "The front door"): origins added to ALLOWED_ORIGINS for this
    # form, where an HTML post goes when its input is refused, the shortest plausible fill
    # time, and whether the captcha (when CAPTCHA_PROVIDER is set) guards this form.
    allowed_origins: tuple[str, ...] = ()
    error_redirect_url: str | None = None
    min_fill_seconds: float = Field(default=0, ge=0, le=3600)
    captcha: bool = True
    # The widget action (Turnstile `data-action`, reCAPTCHA v3 `action`) a token must have been
    # solved for; unset, any action passes.
    captcha_action: str | None = Field(default=None, min_length=1, max_length=64)
    # The thank-you and error pages of an HTML post without redirect: language and own texts.
    language: Literal["en", "ru"] = "en"
    texts: dict[str, str] = Field(default_factory=dict)
    # Whether a numeric trace (the id of an existing trace) is sent. getTrace() never returns
    # one, and on a public form an id would let a visitor attach their record to anyone's trace.
    trace_ids: bool = False

    @field_validator("redirect_url", "error_redirect_url")
    @classmethod
    def _check_redirect(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an absolute http(s) URL")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(origin_setting(origin) for origin in value))

    @field_validator("title")
    @classmethod
    def _check_title(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise ValueError(f"is not a valid template ({exc})") from None
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if not name.isidentifier() or spec or conversion:
                raise ValueError(f"may only name fields like {{name}}, not {{{name}}}")
        return value

    @field_validator("texts")
    @classmethod
    def _check_texts(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if key not in TEXT_KEYS:
                close = difflib.get_close_matches(key, TEXT_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"use {', '.join(TEXT_KEYS)}"
                raise ValueError(f"unknown text {key!r}; {hint}")
            if not text.strip() or len(text) > 2000:
                raise ValueError(f"{key}: 1 to 2000 characters")
        return value

    @field_validator("required")
    @classmethod
    def _check_required(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for group in value:
            names = group.split("|")
            if not all(n and re.match(r"^[A-Za-z0-9_.-]+$", n) for n in names):
                raise ValueError(f"{group!r} is not a field name or a|b alternatives")
        return value

    @field_validator("defaults")
    @classmethod
    def _check_defaults(cls, value: dict[str, Scalar | list[Scalar]]) -> dict[str, object]:
        for key in value:
            _check_bitrix_field(key)
        return dict(value)

    @field_validator("fields")
    @classmethod
    def _check_fields(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not re.match(r"^[A-Za-z0-9_.-]+$", source):
                raise ValueError(f"{source!r} is not a form field name")
            if source in CONTROL_FIELDS:
                raise ValueError(f"{source!r} is handled by the gateway and cannot be mapped")
            _check_bitrix_field(target)
        return value


def _check_bitrix_field(name: str) -> None:
    if not BITRIX_FIELD_RE.match(name):
        raise ValueError(f"{name!r} is not a Bitrix24 field code (like TITLE or UF_CRM_CITY)")
    if name in RESERVED_FIELDS:
        raise ValueError(f"{name!r} is set by the gateway itself")


@dataclass(frozen=True, slots=True)
class Form:
    """One declared form: what it creates, what it requires, how its fields map."""

    id: str
    entity: Entity = Entity.LEAD
    redirect_url: str | None = None
    title: str | None = None  # a template; None: the person's name and the form
    required: tuple[str, ...] = DEFAULT_REQUIRED
    honeypot: str | None = "_gotcha"
    contact: str = "find_or_create"
    company: str = "create_if_named"
    defaults: Mapping[str, Scalar | list[Scalar]] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)
    allowed_origins: tuple[str, ...] = ()
    error_redirect_url: str | None = None
    min_fill_seconds: float = 0
    captcha: bool = True
    captcha_action: str | None = None
    language: str = "en"
    texts: Mapping[str, str] = field(default_factory=dict)
    trace_ids: bool = False


BUILTIN_FORMS: dict[str, Form] = {"contact": Form(id="contact")}
_FORM_KEYS = tuple(_FormModel.model_fields)


def load_forms(path: Path | None) -> dict[str, Form]:
    """The forms the gateway serves: those of the file, or the built-in `contact` form."""
    if path is None:
        return dict(BUILTIN_FORMS)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FormsError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FormsError(f"{path}: not valid TOML: {exc}") from None
    unknown = set(data) - {"forms"}
    if unknown:
        first_unknown = sorted(unknown)[0]
        raise FormsError(f"{path}: unknown top-level key {first_unknown!r}; use [forms.<id>]")
    declared = data.get("forms")
    if not isinstance(declared, dict) or not declared:
        raise FormsError(f"{path}: declares no forms; add a [forms.<id>] table")
    forms: dict[str, Form] = {}
    for form_id, table in declared.items():
        where = f"{path}: [forms.{form_id}]"
        if not FORM_ID_RE.match(form_id):
            raise FormsError(f"{where}: the form id may use letters, digits, _ and - (1-64)")
        if not isinstance(table, dict):
            raise FormsError(f"{where}: must be a table")
        try:
            model = _FormModel.model_validate(table)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            key = ".".join(str(p) for p in err["loc"]) or "?"
            raise FormsError(f"{where} {key}: {_plain(err)}") from None
        forms[form_id] = Form(id=form_id, **model.model_dump())
    return forms


def _plain(err: ErrorDetails) -> str:
    """A validation error in plain words, with the text that was wrong and, for a misspelt
    key, the key that was probably meant."""
    kind, given = err["type"], err.get("input")
    shown = repr(given) if isinstance(given, str | int | float | bool) else None
    if kind == "extra_forbidden":
        name = str(err["loc"][-1])
        known = _FORM_KEYS if len(err["loc"]) == 1 else ()
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = f" (known keys: {', '.join(sorted(known))})" if known and not close else ""
        return f"unknown key{hint}{listing}"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"is {shown}; use one of {expected}"
    if kind in ("tuple_type", "list_type"):
        return f'must be a list like ["a", "b"], not {shown or type(given).__name__}'
    if kind in ("dict_type", "model_type"):
        return f"must be a table ([...] section or {{ key = value }}), not {shown or 'this'}"
    if kind.startswith(("string_", "int_", "float_", "bool_")) and shown is not None:
        return f"{err['msg'].lower()}, not {shown}"
    return err["msg"].removeprefix("Value error, ")


# --------------------------------------------------------------------------- the mapping

Values = Mapping[str, Sequence[str]]


def canonical_fields(form: Form, values: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The fields with standard names in their own spelling whatever the case (`Email`,
    `Name`), and `_replyto` as `email`, so forms written for another form backend work as they
    are. A name the form maps itself (`fields`) or uses as its honeypot keeps its spelling."""
    out: dict[str, list[str]] = {}
    for name, items in values.items():
        target = name
        if name not in form.fields and name != form.honeypot:
            lowered = name.lower()
            if lowered in STANDARD_FIELDS:
                target = lowered
            elif lowered in FIELD_ALIASES:
                target = FIELD_ALIASES[lowered]
        out.setdefault(target, []).extend(items)
    return out


def first(values: Values, name: str) -> str:
    """The first non-empty value of a field, stripped, or ''."""
    for value in values.get(name, ()):
        if value.strip():
            return value.strip()
    return ""


def non_empty(values: Values, name: str) -> list[str]:
    return [v.strip() for v in values.get(name, ()) if v.strip()]


def missing_required(form: Form, values: Values) -> dict[str, str]:
    """Field errors for required fields (or groups `a|b`) that have no value."""
    errors: dict[str, str] = {}
    for group in form.required:
        names = group.split("|")
        if not any(first(values, n) for n in names):
            if len(names) == 1:
                errors[group] = "this field is required"
            else:
                errors[group] = "one of " + ", ".join(names) + " is required"
    return errors


def render_title(form: Form, values: Values) -> str:
    """The form's title template, filled; without one, who wrote and through which form (the
    name, else the company, e-mail or phone), so that a list of records reads at a glance."""
    fallback = DEFAULT_TITLE.format(form=form.id)
    if form.title is None:
        name = " ".join(v for v in (first(values, "name"), first(values, "last_name")) if v)
        who = name or first(values, "company") or first(values, "email") or first(values, "phone")
        return f"{who} — {form.id}" if who else fallback

    class _Fields(dict[str, str]):
        def __missing__(self, key: str) -> str:
            return first(values, key)

    return form.title.format_map(_Fields(form=form.id)).strip() or fallback


def _source(form: Form) -> CrmFields:
    """SOURCE_ID for a new lead, deal or contact: the form's own default wins."""
    if "SOURCE_ID" in form.defaults or not DEFAULT_SOURCE_ID:
        return {}
    return {"SOURCE_ID": DEFAULT_SOURCE_ID}


def utm_of(values: Values, trace_utm: Mapping[str, str]) -> dict[str, str]:
    """The UTM tags, case kept, taken whole from one visit: the form's when it carries any,
    else the trace's. Mixing them would credit one visit's source with another's campaign."""
    from_form = {key: value for key in UTM_FIELDS if (value := first(values, key))}
    if from_form:
        return from_form
    return {key: value for key in UTM_FIELDS if (value := trace_utm.get(key, ""))}


def _utm_fields(utm: Mapping[str, str]) -> CrmFields:
    return {UTM_FIELDS[key]: value for key, value in utm.items()}


def _person(values: Values) -> CrmFields:
    crm: CrmFields = {}
    for name, code in PERSON_FIELDS.items():
        if value := first(values, name):
            crm[code] = value
    if phones := non_empty(values, "phone"):
        crm["PHONE"] = [{"VALUE": p, "VALUE_TYPE": "WORK"} for p in phones]
    if emails := non_empty(values, "email"):
        crm["EMAIL"] = [{"VALUE": e, "VALUE_TYPE": "WORK"} for e in emails]
    return crm


def _main_record(
    form: Form,
    values: Values,
    utm: Mapping[str, str],
    *,
    titled: bool,
    standard: CrmFields | None = None,
) -> CrmFields:
    """The form's own record (without ORIGIN_ID/TRACE: delivery adds those).

    Order of precedence, lowest first: the form's defaults, the standard fields (the title,
    `standard`, UTM), the form's own `fields` mapping. A field that is neither standard nor
    mapped goes to COMMENTS.
    """
    crm: CrmFields = dict(form.defaults)
    if titled:
        crm["TITLE"] = (
            first(values, "title") or first(values, SUBJECT_FIELD) or render_title(form, values)
        )
    crm.update(standard or {})
    crm.update(_utm_fields(utm))
    for source, target in form.fields.items():
        if value := first(values, source):
            crm[target] = value
    if comments := _comments(form, values):
        crm["COMMENTS"] = comments
    return crm


def map_lead(form: Form, values: Values, *, trace_utm: Mapping[str, str]) -> CrmFields:
    """The crm.lead.add fields: the person and the typed company name on the lead itself."""
    standard = _person(values)
    if company := first(values, "company"):
        standard["COMPANY_TITLE"] = company
    utm = utm_of(values, trace_utm)
    return _main_record(form, values, utm, titled=True, standard=standard)


def map_submission(
    form: Form, values: Values, *, trace_utm: Mapping[str, str]
) -> dict[str, object]:
    """Everything delivery needs to build the form's records, stored with the submission.

    `records` maps a role (lead, deal, contact, company, quote) to its CRM fields; `main` names
    the form's own record; `match` says how to find an existing contact or company; `utm` is
    kept for a UTM-only trace (docs/bitrix24.md §8.4). Stored at intake, so a later change of
    the forms file does not change what an accepted submission becomes.
    """
    utm = utm_of(values, trace_utm)
    entity = form.entity
    match: dict[str, str] = {}
    records: dict[str, CrmFields]
    source = _source(form)
    if entity is Entity.LEAD:
        records = {"lead": source | map_lead(form, values, trace_utm=trace_utm)}
    elif entity is Entity.CONTACT:
        person = _person(values)
        contact = _main_record(form, values, utm, titled=False, standard=person)
        records = {"contact": source | contact}
    elif entity is Entity.QUOTE:
        records = {"quote": _main_record(form, values, utm, titled=True)}
    else:
        records = {"deal": source | _main_record(form, values, utm, titled=True)}
        assigned = {k: v for k, v in form.defaults.items() if k == "ASSIGNED_BY_ID"}
        company = first(values, "company")
        if company and form.company != "none":
            records["company"] = {"TITLE": company, **assigned, **_utm_fields(utm)}
            if form.company == "find_or_create":
                match["company"] = "title"
        if form.contact != "none":
            person = _person(values)
            if not ("NAME" in person or "LAST_NAME" in person):
                # docs/bitrix24.md §6.2: a contact needs NAME or LAST_NAME on older portals.
                person["NAME"] = first(values, "email") or first(values, "phone") or "—"
            records["contact"] = {**source, **person, **assigned, **_utm_fields(utm)}
            if form.contact == "find_or_create" and ("PHONE" in person or "EMAIL" in person):
                match["contact"] = "phone_email"
    return {
        "entity": entity.value,
        "main": _main_role(entity),
        "records": records,
        "match": match,
        "utm": utm,
    }


def _main_role(entity: Entity) -> str:
    return entity.value


def _comments(form: Form, values: Values) -> str:
    parts: list[str] = []
    message = "\n".join(non_empty(values, "message")) if "message" not in form.fields else ""
    if message:
        parts.append(message)
    extra = [
        f"{name}: {', '.join(non_empty(values, name))}"
        for name in values
        if name not in STANDARD_FIELDS
        and name not in CONTROL_FIELDS
        and not name.startswith("_")
        and name not in form.fields
        and name != form.honeypot
        and non_empty(values, name)
    ]
    if extra:
        parts.append("\n".join(extra))
    return "\n\n".join(parts)
