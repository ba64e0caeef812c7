"""Turns a stored submission into Bitrix24 commands. Pure: no I/O.

A submission becomes a *package*: its records in dependency order (company, contact, then the
form's own record), and for a deal one `crm.tracking.trace.add` linking them all (§8.4).
Delivery runs in two phases, each one batch call shared by many submissions:

1. look-ups: records an interrupted attempt may have created (by ORIGIN_ID, §7.1), and the
   existing contact or company to reuse (§7.2); nothing is sent when nothing is needed;
2. creates: the records still missing, chained with `$result[...]` references (§5.2), then the
   trace step.

Every record carries ORIGINATOR_ID and ORIGIN_ID: `<id>` on the form's own record, `<id>:contact`
and `<id>:company` on the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.bitrix import Ref, command
from app.store import Submission
from app.trace import utm_only_trace

# Creation order: what a record links to is created before it.
CREATE_ORDER = ("company", "contact", "deal", "lead", "quote")
METHOD_PREFIX = {role: f"crm.{role}" for role in CREATE_ORDER}
TRACE_TYPES = {role: role.upper() for role in CREATE_ORDER}
MAX_FINDBYCOMM_VALUES = 20  # §7.2
TRACE_REJECTED = "trace_rejected"


@dataclass(frozen=True, slots=True)
class Package:
    """A submission as delivery sees it."""

    submission: Submission
    main: str
    records: Mapping[str, Mapping[str, Any]]
    match: Mapping[str, str]
    utm: Mapping[str, str]

    @property
    def id(self) -> str:
        return self.submission.id

    @property
    def roles(self) -> list[str]:
        return [role for role in CREATE_ORDER if role in self.records]

    def origin_id(self, role: str) -> str:
        return self.id if role == self.main else f"{self.id}:{role}"


@dataclass(frozen=True, slots=True)
class Step:
    """One command of the create phase; `role` is a record role or "trace"."""

    key: str
    role: str
    command: str


@dataclass(slots=True)
class CreatePlan:
    steps: list[Step] = field(default_factory=list)
    trace_value: str | None = None  # the TRACE sent by the trace step, when there is one


def package(submission: Submission) -> Package:
    crm = submission.crm
    return Package(
        submission=submission,
        main=str(crm["main"]),
        records=crm["records"],
        match=crm.get("match", {}),
        utm=crm.get("utm", {}),
    )


# --------------------------------------------------------------------------- phase 1


def lookups(pkg: Package, *, originator_id: str, known: Mapping[str, int]) -> dict[str, str]:
    """Look-up commands by name: `origin:<role>`, `phone`, `email`, `company_title`."""
    commands: dict[str, str] = {}
    if pkg.submission.outcome_unknown:
        for role in pkg.roles:
            if role not in known:
                commands[f"origin:{role}"] = _origin_lookup(pkg, role, originator_id)
    if pkg.match.get("contact") == "phone_email" and "contact" not in known:
        contact = pkg.records["contact"]
        for kind, name in (("PHONE", "phone"), ("EMAIL", "email")):
            values = [item["VALUE"] for item in contact.get(kind, [])][:MAX_FINDBYCOMM_VALUES]
            if values:
                commands[name] = command(
                    "crm.duplicate.findbycomm",
                    {"type": kind, "values": values, "entity_type": "CONTACT"},
                )
    if pkg.match.get("company") == "title" and "company" not in known:
        commands["company_title"] = command(
            "crm.company.list",
            {
                "filter": {"=TITLE": pkg.records["company"]["TITLE"]},
                "select": ["ID"],
                "order": {"ID": "ASC"},
                "start": -1,
            },
        )
    return commands


def _origin_lookup(pkg: Package, role: str, originator_id: str) -> str:
    return command(
        f"{METHOD_PREFIX[role]}.list",
        {
            "filter": {"=ORIGINATOR_ID": originator_id, "=ORIGIN_ID": pkg.origin_id(role)},
            "select": ["ID"],
            "order": {"ID": "ASC"},
            "start": -1,
        },
    )


def resolve(pkg: Package, results: Mapping[str, object]) -> dict[str, int]:
    """Record ids the look-ups found: ours first (by ORIGIN_ID), then a match to reuse."""
    found: dict[str, int] = {}
    for role in pkg.roles:
        if (record_id := found_id(results.get(f"origin:{role}"))) is not None:
            found[role] = record_id
    if "contact" not in found:
        for name in ("phone", "email"):
            if (contact_id := _duplicate_id(results.get(name), "CONTACT")) is not None:
                found["contact"] = contact_id
                break
    if "company" not in found and (company_id := found_id(results.get("company_title"))):
        found["company"] = company_id
    return found


def _duplicate_id(result: object, entity: str) -> int | None:
    """The lowest matching id of a findbycomm result; `[]` when nothing matched (§7.2)."""
    if not isinstance(result, dict):
        return None
    ids = [created_id(i) for i in result.get(entity, [])]
    valid = [i for i in ids if i is not None]
    return min(valid) if valid else None


# --------------------------------------------------------------------------- phase 2


def trace_value(pkg: Package) -> str | None:
    """The TRACE for the trace step: the original, or UTM-only after the portal rejected it."""
    submission = pkg.submission
    if submission.trace_problem == TRACE_REJECTED:
        return utm_only_trace(dict(pkg.utm)) if pkg.utm else None
    if submission.trace is None or submission.trace_is_id:
        return None
    return submission.trace


def creates(
    pkg: Package, *, originator_id: str, known: Mapping[str, int], prefix: str
) -> CreatePlan:
    """The commands still needed, in order, with `$result[...]` links between them."""
    plan = CreatePlan()
    ids: dict[str, int | Ref] = dict(known)
    submission = pkg.submission
    # A trace id is linked by passing it to every add (§8.2 step 1); a JSON trace goes in the
    # add of a lone record, or in one trace step for a package of several (§8.4).
    several = len(pkg.roles) > 1
    for role in pkg.roles:
        if role in known:
            continue
        fields: dict[str, object] = dict(pkg.records[role])
        fields["ORIGINATOR_ID"] = originator_id
        fields["ORIGIN_ID"] = pkg.origin_id(role)
        if role in ("contact", "deal") and "company" in ids:
            fields["COMPANY_ID"] = ids["company"]
        if role == "deal" and "contact" in ids:
            fields["CONTACT_ID"] = ids["contact"]
        if submission.trace is not None and (submission.trace_is_id or not several):
            fields["TRACE"] = submission.trace
        params: dict[str, object] = {"fields": fields}
        if role == pkg.main:
            params["params"] = {"REGISTER_SONET_EVENT": "Y"}
        key = f"{prefix}{role}"
        plan.steps.append(Step(key, role, command(f"{METHOD_PREFIX[role]}.add", params)))
        ids[role] = Ref(key)
    value = trace_value(pkg) if several else None
    if value is not None and "trace" not in known:
        entities = [
            {"TYPE": TRACE_TYPES[role], "ID": ids[role]}
            for role in (pkg.main, *[r for r in pkg.roles if r != pkg.main])
        ]
        key = f"{prefix}trace"
        step = command("crm.tracking.trace.add", {"TRACE": value, "ENTITIES": entities})
        plan.steps.append(Step(key, "trace", step))
        plan.trace_value = value
    return plan


# --------------------------------------------------------------------------- results


def found_id(result: object) -> int | None:
    """The lowest id in a list result (rows come back with string ids, §2.2), or None."""
    if isinstance(result, dict):
        rows = list(result.values())
    elif isinstance(result, list):
        rows = result
    else:
        rows = []
    ids = [created_id(row.get("ID")) for row in rows if isinstance(row, dict)]
    valid = [i for i in ids if i is not None]
    return min(valid) if valid else None


def created_id(result: object) -> int | None:
    """An id as the portal returns it (an integer from add, a string from list), else None."""
    if isinstance(result, bool):
        return None
    if isinstance(result, int):
        return result if result > 0 else None
    if isinstance(result, str) and result.isdigit():
        return int(result) or None
    return None


def preview(submission: Submission, *, originator_id: str) -> list[dict[str, str]]:
    """The commands the next attempt would send, for the admin API's show and dry run.

    Look-ups are listed as they would go out; creates assume the look-ups find nothing.
    """
    pkg = package(submission)
    known = dict(submission.bitrix_ids)
    rows = [
        {"phase": "look-up", "key": name, "command": text}
        for name, text in lookups(pkg, originator_id=originator_id, known=known).items()
    ]
    create_plan = creates(pkg, originator_id=originator_id, known=known, prefix="")
    rows.extend(
        {"phase": "create", "key": step.key, "command": step.command} for step in create_plan.steps
    )
    return rows
