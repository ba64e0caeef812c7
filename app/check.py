"""`b24-form-gateway check`: can this configuration deliver? Loads the settings and the forms, then
asks the portal (in sandbox mode, the built-in emulator) whether the webhook works, has the `crm`
scope, every field the forms write (docs/bitrix24.md §6.1) and each record's identity marker
(`--create-fields` creates a missing one), the `im` scope when alerts go to portal users, and
whether it moved. Never prints the webhook URL.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from app.bitrix import BitrixClient, BitrixError, ConfigError
from app.delivery.marker import DEFAULT_QUOTE_FIELD, Marker, marker_for, userfield_add_params
from app.forms import PERSON_FIELDS, Entity, Form, load_forms
from app.intake.origins import OriginPolicy, check_redirects
from app.netaddr import is_loopback_host
from app.settings import Settings
from app.store import DatabaseUnavailable, schema_state

ClientFactory = Callable[[Settings], BitrixClient]
Level = Literal["ok", "fail", "warn", "skip"]
MARKS: dict[Level, str] = {"ok": "[ok]  ", "fail": "[FAIL]", "warn": "[warn]", "skip": "[skip]"}
TITLED = frozenset({"lead", "deal", "quote", "company"})
# Standard form fields that go to a person record (lead, contact), and to any form's own record.
PERSON_TARGETS = {**PERSON_FIELDS, "phone": "PHONE", "email": "EMAIL"}


@dataclass(frozen=True, slots=True)
class Line:
    level: Level
    text: str


@dataclass(slots=True)
class Report:
    lines: list[Line] = field(default_factory=list)

    def add(self, level: Level, text: str) -> None:
        self.lines.append(Line(level, text))

    @property
    def failed(self) -> int:
        return sum(1 for line in self.lines if line.level == "fail")

    def render(self) -> str:
        out = [f"{MARKS[line.level]} {line.text}" for line in self.lines]
        out.append(("FAILED: " + _plural(self.failed, "check")) if self.failed else "all passed")
        return "\n".join(out)


def add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], *, client_for: ClientFactory
) -> None:
    """Register `check`; `client_for(settings)` gives the portal's client (or the sandbox's)."""
    parser = subparsers.add_parser(
        "check", help="check the settings, the forms file and the portal (webhook, scope, fields)"
    )
    parser.add_argument(
        "--create-fields",
        action="store_true",
        help="create the custom fields the gateway needs to recognise its records (the quote's "
        "identity marker, QUOTE_ORIGIN_FIELD) where the portal lacks them; needs CRM admin rights",
    )
    parser.set_defaults(
        func=lambda args: run(client_for=client_for, create_fields=args.create_fields)
    )


def run(*, client_for: ClientFactory, create_fields: bool = False) -> int:
    """0 when every check passes, 1 when one fails; bad settings or forms raise (exit 2)."""
    settings = Settings.load()
    forms = load_forms(settings.FORMS_FILE)
    # What `serve` refuses at start-up, check refuses the same way (FormsError, exit 2).
    check_redirects(forms, OriginPolicy(settings.ALLOWED_ORIGINS, forms))
    report = Report()
    report.add("ok", "settings: loaded")
    source = f"from {settings.FORMS_FILE}" if settings.FORMS_FILE else "built-in; no FORMS_FILE"
    report.add("ok", f"forms: {', '.join(sorted(forms))} ({source})")
    asyncio.run(check_database(report, settings.DATABASE_URL))
    if settings.sandbox:
        report.add(
            "ok",
            "target: the sandbox (built-in emulator; B24_WEBHOOK_URL is not set, "
            "no real portal is contacted)",
        )
        if settings.SANDBOX and not is_loopback_host(settings.HOST):
            report.add(
                "warn",
                f"sandbox: open to the network on HOST={settings.HOST} (SANDBOX=true): anyone "
                "reaching it can read the records at /sandbox",
            )
    else:
        report.add("ok", f"target: the portal at {settings.webhook_host}")
    webhook = settings.B24_WEBHOOK_URL.get_secret_value() if settings.B24_WEBHOOK_URL else None
    asyncio.run(
        _probe_and_close(
            report,
            client_for(settings),
            forms,
            sandbox=settings.sandbox,
            quote_field=settings.QUOTE_ORIGIN_FIELD,
            create_fields=create_fields,
            webhook=webhook,
            notify_users=settings.ALERT_BITRIX_USER_IDS,
        )
    )
    print(_redact(report.render(), webhook))
    return 1 if report.failed else 0


async def check_database(report: Report, url: str) -> None:
    """The database `serve` would use: reachable, and its schema (never changed here)."""
    where = make_url(url).render_as_string(hide_password=True)
    try:
        state = await schema_state(url)
    except DatabaseUnavailable as exc:
        report.add("fail", f"database: {exc}")
        return
    if state == "current":
        report.add("ok", f"database: {where}, schema up to date")
    else:
        # Normal before the first start or after an upgrade: `serve` migrates as it starts.
        missing = "no gateway schema yet" if state == "empty" else "an older schema"
        report.add(
            "ok",
            f"database: {where}, {missing}; `serve` or `b24-form-gateway migrate` brings it up "
            "to date",
        )


async def _probe_and_close(
    report: Report,
    client: BitrixClient,
    forms: Mapping[str, Form],
    *,
    sandbox: bool,
    quote_field: str,
    create_fields: bool,
    webhook: str | None,
    notify_users: Sequence[int] = (),
) -> None:
    try:
        await probe(
            report,
            client,
            forms,
            sandbox=sandbox,
            quote_field=quote_field,
            create_fields=create_fields,
            notify_users=notify_users,
        )
        if webhook is not None:
            check_moved(report, client, webhook)
    finally:
        await client.aclose()


async def probe(
    report: Report,
    client: BitrixClient,
    forms: Mapping[str, Form],
    *,
    sandbox: bool,
    quote_field: str = DEFAULT_QUOTE_FIELD,
    create_fields: bool = False,
    notify_users: Sequence[int] = (),
) -> None:
    """Run the portal checks, adding one line each; later checks are skipped when one
    they depend on fails. `create_fields`: create missing identity marker fields.
    `notify_users`: ALERT_BITRIX_USER_IDS, whose notifications need the `im` scope."""
    try:
        profile = await client.call("profile")
    except BitrixError as exc:
        report.add("fail", f"webhook: does not work ({_error(exc)}){_hint(exc)}")
        report.add("skip", "scope and fields: the webhook must work first")
        return
    user = profile.get("ID") if isinstance(profile, dict) else None
    report.add("ok", f"webhook: works (acts as user {user or '?'})")

    try:
        scopes = await client.call("scope")
    except BitrixError as exc:
        report.add("fail", f"scope: cannot be read ({_error(exc)})")
        return
    granted = [str(s) for s in scopes] if isinstance(scopes, list) else []
    if notify_users:
        _check_notify_scope(report, granted, notify_users)
    if "crm" not in granted:
        report.add(
            "fail",
            f"scope: the webhook lacks `crm` (has: {', '.join(granted) or 'none'}); "
            "edit the webhook in Bitrix24 and tick CRM",
        )
        report.add("skip", "fields: need the crm scope")
        return
    report.add("ok", "scope: crm granted")

    catalogue: dict[str, dict[str, object] | None] = {}
    for entity in sorted({role for form in forms.values() for role in roles(form)}):
        try:
            result = await client.call(f"crm.{entity}.fields")
        except BitrixError as exc:
            report.add("fail", f"crm.{entity}.fields: {_error(exc)}")
            catalogue[entity] = None
            continue
        fields = result if isinstance(result, dict) else {}
        catalogue[entity] = {str(k): v for k, v in fields.items()}
        report.add("ok", f"crm.{entity}.fields: {len(fields)} fields")

    markers = {role: marker_for(role, quote_field=quote_field) for role in catalogue}
    created: dict[str, str | None] = {}
    if create_fields:
        created = await create_marker_fields(client, catalogue, markers)

    for form in (forms[form_id] for form_id in sorted(forms)):
        for role, written in roles(form).items():
            known = catalogue.get(role)
            if known is None:
                continue
            marker = markers[role]
            _check_fields(report, form, role, written, known, marker=marker, sandbox=sandbox)
            _check_marker(report, form, role, known, marker, created=created, sandbox=sandbox)


def _check_notify_scope(report: Report, granted: Sequence[str], users: Sequence[int]) -> None:
    """Alerts to portal users go through im.notify.system.add (docs/bitrix24.md §13)."""
    ids = ", ".join(str(u) for u in users)
    if "im" in granted:
        report.add("ok", f"alerts: the webhook may notify users {ids} (im granted)")
    else:
        report.add(
            "fail",
            f"alerts: ALERT_BITRIX_USER_IDS ({ids}) needs the webhook's `im` scope, which it "
            "lacks; edit the webhook in Bitrix24 and tick Chat and Notifications (im)",
        )


def roles(form: Form) -> dict[str, set[str]]:
    """The records a form creates, each with the fields its mapping writes there (the
    `defaults` keys and `fields` targets); the identity marker is checked on its own."""
    main = form.entity.value
    out = {main: {*form.defaults, *form.fields.values()}}
    if form.entity is Entity.DEAL:
        assigned = {"ASSIGNED_BY_ID"} & set(form.defaults)
        if form.contact != "none":
            out["contact"] = set(assigned)
        if form.company != "none":
            out["company"] = set(assigned)
    return out


def marker_fields(marker: Marker) -> list[str]:
    """The fields of an identity marker, as the gateway writes them on every record."""
    return [marker.field] if marker.originator is None else [marker.originator, marker.field]


async def create_marker_fields(
    client: BitrixClient,
    catalogue: dict[str, dict[str, object] | None],
    markers: Mapping[str, Marker],
) -> dict[str, str | None]:
    """Create each custom marker field the portal lacks (crm.<role>.userfield.add), once.

    Returns field code -> None when created (it is then added to `catalogue`), or the
    portal's reason for refusing it.
    """
    outcome: dict[str, str | None] = {}
    for role, marker in sorted(markers.items()):
        known = catalogue.get(role)
        code = marker.field
        if known is None or code in known or not code.startswith("UF_") or code in outcome:
            continue
        try:
            await client.call(f"crm.{role}.userfield.add", userfield_add_params(code))
        except BitrixError as exc:
            outcome[code] = _error(exc)
            continue
        outcome[code] = None
        known[code] = {"type": "string", "isRequired": False, "isMultiple": False}
    return outcome


def check_moved(report: Report, client: BitrixClient, webhook: str) -> None:
    """Warn when the client followed a renamed portal's redirect (docs/bitrix24.md §1.4):
    B24_WEBHOOK_URL still names the old host. Prints hosts and the user id, never the secret."""
    moved_to = getattr(client, "moved_to", None)
    if not isinstance(moved_to, str) or not moved_to:
        return
    parts = urlsplit(webhook)
    old = parts.netloc.rpartition("@")[2]
    segments = [s for s in parts.path.split("/") if s]
    user = segments[1] if len(segments) > 1 else "<user id>"
    report.add(
        "warn",
        f"portal: {old} redirects to {moved_to} (the portal was renamed); update "
        f"B24_WEBHOOK_URL to {parts.scheme}://{moved_to}/rest/{user}/<secret>/",
    )


def always_sent(form: Form, role: str, *, marker: Marker | None = None) -> set[str]:
    """Fields every record of this role gets, whatever the visitor fills in (`marker`: the
    role's identity marker, by default with the default quote field)."""
    sent = set(marker_fields(marker or marker_for(role)))
    single = {group for group in form.required if "|" not in group}
    main = role == form.entity.value
    if main:
        sent |= set(form.defaults)
        sent |= {target for source, target in form.fields.items() if source in single}
        if "message" in single and "message" not in form.fields:
            sent.add("COMMENTS")
    elif "ASSIGNED_BY_ID" in form.defaults:
        sent.add("ASSIGNED_BY_ID")
    if role in TITLED:
        sent.add("TITLE")  # rendered from the form's title template; a company needs its name
    if role == "contact" and not main:
        sent.add("NAME")  # a deal's contact always gets a name (docs/bitrix24.md §6.2)
    if role in ("lead", "contact"):
        sent |= {target for source, target in PERSON_TARGETS.items() if source in single}
    return sent


def _check_fields(
    report: Report,
    form: Form,
    role: str,
    written: set[str],
    known: Mapping[str, object],
    *,
    marker: Marker,
    sandbox: bool,
) -> None:
    where = f"form {form.id} -> {role}"
    # The mapping must leave the identity marker to the gateway (ORIGIN_ID and the like are
    # refused by the forms file; the quote's custom field is a setting, so it is caught here).
    own = set(marker_fields(marker))
    taken = sorted(own & written)
    if taken:
        setting = " (QUOTE_ORIGIN_FIELD)" if marker.field.startswith("UF_") else ""
        report.add(
            "fail",
            f"{where}: the form's mapping writes {', '.join(taken)}, the field that identifies "
            f"the gateway's {role} records{setting}; map that value to another field",
        )
    missing = sorted(written - set(known) - own)
    custom = [code for code in missing if code.startswith("UF_")]
    standard = [code for code in missing if not code.startswith("UF_")]
    if standard:
        report.add("fail", f"{where}: no such field on the portal: {', '.join(standard)}")
    if custom and sandbox:
        report.add(
            "warn",
            f"{where}: custom fields {', '.join(custom)} cannot be checked in the sandbox "
            "(it has none); run check with B24_WEBHOOK_URL set",
        )
    elif custom:
        report.add(
            "fail",
            f"{where}: no such custom field on the portal: {', '.join(custom)} "
            "(the portal would drop the value silently)",
        )
    if written - own and not missing:
        report.add("ok", f"{where}: the fields it maps exist ({len(written - own)} checked)")

    needed = sorted(
        code
        for code, spec in known.items()
        if isinstance(spec, dict) and spec.get("isRequired") and not spec.get("isReadOnly")
    )
    sent = always_sent(form, role, marker=marker)
    unsent = [code for code in needed if code not in sent]
    for code in unsent:
        text = f"{where}: {code} is required on the portal, and not every submission sets it"
        if code.startswith("UF_"):
            # docs/bitrix24.md §6.1: required custom fields are enforced only if the portal's
            # REST setting says so.
            report.add("warn", text + " (enforced if the portal requires custom fields in REST)")
        else:
            report.add("fail", text + " (such records would be refused)")


def _check_marker(
    report: Report,
    form: Form,
    role: str,
    known: Mapping[str, object],
    marker: Marker,
    *,
    created: Mapping[str, str | None],
    sandbox: bool,
) -> None:
    """One line: whether the portal has the field(s) that recognise this role's records after a
    lost answer, so a retry finds what it created instead of creating it twice."""
    where = f"form {form.id} -> {role}"
    codes = marker_fields(marker)
    custom = marker.field.startswith("UF_")
    name = f"{marker.field} (custom field)" if custom else " + ".join(codes)
    missing = [code for code in codes if code not in known]
    if not missing:
        spec = known[marker.field]
        kind = spec.get("type") if isinstance(spec, dict) else None
        multiple = isinstance(spec, dict) and bool(spec.get("isMultiple"))
        if custom and (kind not in (None, "string") or multiple):
            shape = f"{'a multiple ' if multiple else 'a '}{kind or 'string'} field"
            report.add(
                "fail",
                f"{where}: identity marker {name} is {shape}; it must be a single string field "
                "(set QUOTE_ORIGIN_FIELD to another code, or recreate the field)",
            )
        elif marker.field in created:
            report.add("ok", f"{where}: identity marker {name} created")
        elif custom:
            report.add("ok", f"{where}: identity marker {name} exists")
        else:
            report.add("ok", f"{where}: identity marker {name}")
        return
    if custom and marker.field in created:
        report.add(
            "fail",
            f"{where}: identity marker {name} could not be created: {created[marker.field]}",
        )
    elif custom and sandbox:
        report.add(
            "warn",
            f"{where}: identity marker {name}: the built-in emulator starts without it; on a "
            "real portal, run `b24-form-gateway check --create-fields` (needs CRM admin rights)",
        )
    elif custom:
        report.add(
            "fail",
            f"{where}: cannot be delivered exactly once: the portal has no custom field "
            f"{marker.field} to recognise a {role} after a lost answer; run "
            "`b24-form-gateway check --create-fields` (needs CRM admin rights)",
        )
    else:
        report.add(
            "fail",
            f"{where}: cannot be delivered exactly once: the portal has no field "
            f"{', '.join(missing)} to recognise a {role} after a lost answer",
        )


def _redact(text: str, webhook: str | None) -> str:
    """The output without the webhook URL or its secret, whatever a message quoted."""
    if not webhook:
        return text
    text = text.replace(webhook, "B24_WEBHOOK_URL").replace(webhook.rstrip("/"), "B24_WEBHOOK_URL")
    segments = [s for s in urlsplit(webhook).path.split("/") if s]
    if len(segments) > 2 and len(segments[2]) >= 4:
        text = text.replace(segments[2], "<secret>")
    return text


def _error(exc: BitrixError) -> str:
    return f"{exc.label}: {exc.description}" if exc.code else exc.description


def _hint(exc: BitrixError) -> str:
    if isinstance(exc, ConfigError):
        return "; check B24_WEBHOOK_URL (user id and secret) and that the webhook still exists"
    return ""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
