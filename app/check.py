"""`b24-form-gateway check`: can this configuration deliver? Loads the settings and the forms, then
asks the portal (in sandbox mode, the built-in emulator) whether the webhook works, has the `crm`
scope, and has every field the forms write (bitrix24-api.md §6.1). Never prints the webhook URL.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from app.bitrix import BitrixClient, BitrixError, ConfigError
from app.forms import PERSON_FIELDS, Entity, Form, load_forms
from app.settings import Settings

ClientFactory = Callable[[Settings], BitrixClient]
Level = Literal["ok", "fail", "warn", "skip"]
MARKS: dict[Level, str] = {"ok": "[ok]  ", "fail": "[FAIL]", "warn": "[warn]", "skip": "[skip]"}
# Written by the gateway on every record; without them a retry cannot find what it created.
GATEWAY_FIELDS = ("ORIGINATOR_ID", "ORIGIN_ID")
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
    parser.set_defaults(func=lambda _args: run(client_for=client_for))


def run(*, client_for: ClientFactory) -> int:
    """0 when every check passes, 1 when one fails; bad settings or forms raise (exit 2)."""
    settings = Settings.load()
    forms = load_forms(settings.FORMS_FILE)
    report = Report()
    report.add("ok", "settings: loaded")
    source = f"from {settings.FORMS_FILE}" if settings.FORMS_FILE else "built-in; no FORMS_FILE"
    report.add("ok", f"forms: {', '.join(sorted(forms))} ({source})")
    if settings.sandbox:
        report.add(
            "ok",
            "target: the sandbox (built-in emulator; B24_WEBHOOK_URL is not set, "
            "no real portal is contacted)",
        )
    else:
        report.add("ok", f"target: the portal at {settings.webhook_host}")
    asyncio.run(_probe_and_close(report, client_for(settings), forms, sandbox=settings.sandbox))
    print(report.render())
    return 1 if report.failed else 0


async def _probe_and_close(
    report: Report, client: BitrixClient, forms: Mapping[str, Form], *, sandbox: bool
) -> None:
    try:
        await probe(report, client, forms, sandbox=sandbox)
    finally:
        await client.aclose()


async def probe(
    report: Report, client: BitrixClient, forms: Mapping[str, Form], *, sandbox: bool
) -> None:
    """Run the portal checks, adding one line each; later checks are skipped when one
    they depend on fails."""
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

    for form in (forms[form_id] for form_id in sorted(forms)):
        for role, written in roles(form).items():
            known = catalogue.get(role)
            if known is not None:
                _check_fields(report, form, role, written, known, sandbox=sandbox)


def roles(form: Form) -> dict[str, set[str]]:
    """The records a form creates, each with the fields its mapping writes there
    (the `defaults` keys and `fields` targets, and the gateway's own fields)."""
    main = form.entity.value
    out = {main: {*GATEWAY_FIELDS, *form.defaults, *form.fields.values()}}
    if form.entity is Entity.DEAL:
        assigned = {"ASSIGNED_BY_ID"} & set(form.defaults)
        if form.contact != "none":
            out["contact"] = {*GATEWAY_FIELDS, *assigned}
        if form.company != "none":
            out["company"] = {*GATEWAY_FIELDS, *assigned}
    return out


def always_sent(form: Form, role: str) -> set[str]:
    """Fields every record of this role gets, whatever the visitor fills in."""
    sent = set(GATEWAY_FIELDS)
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
        sent.add("NAME")  # a deal's contact always gets a name (§6.2)
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
    sandbox: bool,
) -> None:
    where = f"form {form.id} -> {role}"
    missing = sorted(written - set(known))
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
    if not missing:
        report.add("ok", f"{where}: the fields it maps exist ({len(written)} checked)")

    needed = sorted(
        code
        for code, spec in known.items()
        if isinstance(spec, dict) and spec.get("isRequired") and not spec.get("isReadOnly")
    )
    unsent = [code for code in needed if code not in always_sent(form, role)]
    for code in unsent:
        text = f"{where}: {code} is required on the portal, and not every submission sets it"
        if code.startswith("UF_"):
            # §6.1: required custom fields are enforced only if the portal's REST setting says so.
            report.add("warn", text + " (enforced if the portal requires custom fields in REST)")
        else:
            report.add("fail", text + " (such records would be refused)")


def _error(exc: BitrixError) -> str:
    return f"{exc.label}: {exc.description}" if exc.code else exc.description


def _hint(exc: BitrixError) -> str:
    if isinstance(exc, ConfigError):
        return "; check B24_WEBHOOK_URL (user id and secret) and that the webhook still exists"
    return ""


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")
