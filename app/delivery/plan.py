"""Turns a stored submission into Bitrix24 commands. Pure: no I/O.

A submission becomes a *package*: its records in dependency order (company, contact, then the
form's own record), for a deal the step that sets its company, and for a package of several
records one `crm.tracking.trace.add` linking them all (§8.4). Delivery runs
in two phases, each shared by many submissions:

1. look-ups: records interrupted attempts may have created (by their identity marker, one
   list command for many submissions, §7.1), and the existing contact or company to reuse
   (§7.2);
2. creates: the records still missing, chained with `$result[...]` references (§5.2), then
   the company link and the trace step.

Every record carries its identity marker (delivery/marker.py): ORIGINATOR_ID + ORIGIN_ID
(`<id>` on the form's own record, `<id>:contact`, `<id>:company` on the others), or, on a quote,
the submission id in a custom field. A look-up reads the marker back and compares it: a filter
alone proves nothing (§0 fact 13).

§ numbers refer to the sections of docs/bitrix24.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.bitrix import Ref, command
from app.delivery.marker import DEFAULT_QUOTE_FIELD, Marker, marker_for
from app.store import Submission
from app.trace import utm_only_trace

# Creation order: what a record links to is created before it.
CREATE_ORDER = ("company", "contact", "deal", "lead", "quote")
METHOD_PREFIX = {role: f"crm.{role}" for role in CREATE_ORDER}
TRACE_TYPES = {role: role.upper() for role in CREATE_ORDER}
MAX_FINDBYCOMM_VALUES = 20  # §7.2
LIST_PAGE = 50  # rows a legacy list answers at most (§2.2)
# The step that sets a deal's company after the add; its progress entry holds the company id.
LINK = "deal_company"
TRACE = "trace"

# Trace-step flags kept in the submission's trace_problem (§8.3, §8.4).
TRACE_REJECTED = "trace_rejected"  # the portal refused the trace JSON: UTM-only trace sent
LINKS_DENIED = "links_denied:"  # + record types the webhook user may not edit: not linked
TRACE_REFUSED = "trace_refused"  # no trace could be linked; the records exist
# "You have no access to entity `CONTACT` with ID `123`." (crm/lib/tracking/rest.php)
_NO_ACCESS = re.compile(r"no access to entity `([A-Z]+)`")
# Back-references the portal substitutes inside batch values after decoding
# (CRestUtil::processBatchElement: /\$(result|next|total|error|time)([^\s]*)/i, the path in
# brackets; §0 fact 16, §5.2). A value that could match never travels in a batch.
_BACK_REFERENCE = re.compile(r"\$(?:result|next|total|error|time)\S*\[", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Identity:
    """How this gateway marks the records it creates."""

    originator_id: str = "b24-form-gateway"
    quote_field: str = DEFAULT_QUOTE_FIELD

    def marker(self, role: str) -> Marker:
        return marker_for(role, quote_field=self.quote_field)


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
    """One command: a look-up (`role` names what it looks for) or a create-phase step (`role`
    is a record role, LINK or TRACE). `params` may hold `Ref`s to earlier steps' results."""

    key: str
    role: str
    method: str
    params: Mapping[str, object]

    @property
    def command(self) -> str:
        """The step as a batch command, `method?query` (§5.1)."""
        return command(self.method, self.params)


@dataclass(slots=True)
class CreatePlan:
    steps: list[Step] = field(default_factory=list)
    trace_value: str | None = None  # the TRACE sent by the trace step, when there is one


@dataclass(frozen=True, slots=True)
class TraceState:
    """What earlier attempts learned about this package's trace step."""

    utm_only: bool = False
    denied: frozenset[str] = frozenset()
    refused: bool = False

    @classmethod
    def parse(cls, problem: str | None) -> TraceState:
        utm_only = denied = refused = None
        for part in (problem or "").split("+"):
            if part == TRACE_REJECTED:
                utm_only = True
            elif part == TRACE_REFUSED:
                refused = True
            elif part.startswith(LINKS_DENIED):
                denied = frozenset(t for t in part[len(LINKS_DENIED) :].split(",") if t)
        return cls(bool(utm_only), denied or frozenset(), bool(refused))

    def render(self) -> str | None:
        parts = []
        if self.utm_only:
            parts.append(TRACE_REJECTED)
        if self.denied:
            parts.append(LINKS_DENIED + ",".join(sorted(self.denied)))
        if self.refused:
            parts.append(TRACE_REFUSED)
        return "+".join(parts) or None


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


def origin_roles(pkg: Package, *, known: Mapping[str, int]) -> list[str]:
    """The records an interrupted attempt may have created, still to be looked up."""
    if not pkg.submission.outcome_unknown:
        return []
    return [role for role in pkg.roles if role not in known]


def origin_lookup(role: str, origin_ids: list[str], *, identity: Identity, key: str) -> Step:
    """One list command finding the records of many submissions by their marker (an IN
    filter), the marker selected so that every row can be checked (§0 fact 13)."""
    marker = identity.marker(role)
    filters: dict[str, object] = {f"@{marker.field}": list(origin_ids)}
    select = ["ID", marker.field]
    if marker.originator is not None:
        filters[f"={marker.originator}"] = identity.originator_id
        select.append(marker.originator)
    params = {"filter": filters, "select": select, "order": {"ID": "ASC"}, "start": -1}
    return Step(key, role, f"{METHOD_PREFIX[role]}.list", params)


@dataclass(frozen=True, slots=True)
class OriginRows:
    """What one origin look-up proved. `found`: origin id -> the lowest record id carrying it.
    `foreign`: a row carries none of the markers asked for, so the portal did not apply the
    filter and absence proves nothing. `complete`: the answer was not cut at a page (§2.2)."""

    found: dict[str, int]
    foreign: bool
    complete: bool


def origin_rows(
    role: str, result: object, origin_ids: list[str], *, identity: Identity
) -> OriginRows:
    marker = identity.marker(role)
    rows = _rows(result)
    found: dict[str, int] = {}
    foreign = False
    for row in rows:
        owner = next(
            (
                oid
                for oid in origin_ids
                if marker.matches(row, origin_id=oid, originator_id=identity.originator_id)
            ),
            None,
        )
        record_id = created_id(row.get("ID"))
        if owner is None or record_id is None:
            foreign = True
        elif owner not in found or record_id < found[owner]:
            found[owner] = record_id
    return OriginRows(found, foreign, complete=len(rows) < LIST_PAGE)


def lookups(pkg: Package, *, known: Mapping[str, int]) -> list[Step]:
    """The look-ups that find an existing contact or company to reuse (§7.2, §7.3), keyed
    `phone`, `email`, `company_title`."""
    steps: list[Step] = []
    if pkg.match.get("contact") == "phone_email" and "contact" not in known:
        contact = pkg.records["contact"]
        for kind, name in (("PHONE", "phone"), ("EMAIL", "email")):
            values = [item["VALUE"] for item in contact.get(kind, [])][:MAX_FINDBYCOMM_VALUES]
            if values:
                found_by = {"type": kind, "values": values, "entity_type": "CONTACT"}
                steps.append(Step(name, "contact", "crm.duplicate.findbycomm", found_by))
    if pkg.match.get("company") == "title" and "company" not in known:
        params: dict[str, object] = {
            "filter": {"=TITLE": pkg.records["company"]["TITLE"]},
            "select": ["ID", "TITLE"],
            "order": {"ID": "ASC"},
            "start": -1,
        }
        steps.append(Step("company_title", "company", "crm.company.list", params))
    return steps


MATCH_KEYS = ("phone", "email")  # look-ups that ask crm.duplicate.findbycomm (§7.2)


@dataclass(frozen=True, slots=True)
class MatchGroup:
    """One findbycomm command asking for the values of several submissions at once.

    Its answer names ids, not which value found them (§7.2): an empty answer proves that none
    of the members has a match; any hit sends each member back to ask on its own, so that no
    submission is tied to a contact another one's phone found.
    """

    step: Step
    members: tuple[int, ...]  # indexes into the list given to match_groups()


def match_groups(asks: Sequence[Step], *, key: str) -> list[MatchGroup]:
    """Packs findbycomm look-ups of one kind into as few commands as the 20-value limit allows
    (§7.2), each submission's values kept together; keys are `<key>_<n>`."""
    groups: list[MatchGroup] = []
    values: list[str] = []
    members: list[int] = []

    def close() -> None:
        if members:
            first = asks[members[0]].params
            params = {"type": first["type"], "values": list(values), "entity_type": "CONTACT"}
            step = Step(f"{key}_{len(groups)}", "contact", "crm.duplicate.findbycomm", params)
            groups.append(MatchGroup(step, tuple(members)))
        values.clear()
        members.clear()

    for index, ask in enumerate(asks):
        own = [str(v) for v in _as_values(ask.params.get("values"))]
        fresh = [v for v in dict.fromkeys(own) if v not in values]
        if len(values) + len(fresh) > MAX_FINDBYCOMM_VALUES:
            close()
            fresh = list(dict.fromkeys(own))
        values.extend(fresh)
        members.append(index)
    close()
    return groups


def nobody_matched(result: object) -> bool:
    """Whether a findbycomm answer found no contact at all (`[]`, or no CONTACT ids)."""
    return _duplicate_id(result, "CONTACT") is None


def _as_values(raw: object) -> list[object]:
    return list(raw) if isinstance(raw, list | tuple) else []


def resolve(
    pkg: Package, results: Mapping[str, object], *, ours: Mapping[str, int]
) -> dict[str, int]:
    """Record ids the look-ups found: ours first (by marker), then a match to reuse."""
    found: dict[str, int] = {role: ours[role] for role in pkg.roles if role in ours}
    if "contact" not in found:
        for name in ("phone", "email"):
            if (contact_id := _duplicate_id(results.get(name), "CONTACT")) is not None:
                found["contact"] = contact_id
                break
    if "company" not in found and "company_title" in results:
        title = str(pkg.records["company"].get("TITLE", "")).strip().casefold()
        same = [
            row
            for row in _rows(results.get("company_title"))
            if str(row.get("TITLE") or "").strip().casefold() == title
        ]
        if (company_id := _lowest_id(same)) is not None:
            found["company"] = company_id
    return found


def _rows(result: object) -> list[dict[str, object]]:
    """List rows, whether the PHP array came back as a JSON list or a map (§5.3)."""
    if isinstance(result, dict):
        values = list(result.values())
    elif isinstance(result, list):
        values = result
    else:
        return []
    return [row for row in values if isinstance(row, dict)]


def _lowest_id(rows: list[dict[str, object]]) -> int | None:
    ids = [i for i in (created_id(row.get("ID")) for row in rows) if i is not None]
    return min(ids) if ids else None


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
    if TraceState.parse(submission.trace_problem).utm_only:
        return utm_only_trace(dict(pkg.utm)) if pkg.utm else None
    if submission.trace is None or submission.trace_is_id:
        return None
    return submission.trace


def creates(
    pkg: Package, *, identity: Identity, known: Mapping[str, int], prefix: str
) -> CreatePlan:
    """The steps still needed, in order, with `$result[...]` links between them."""
    plan = CreatePlan()
    ids: dict[str, int | Ref] = {k: v for k, v in known.items() if k in CREATE_ORDER}
    submission = pkg.submission
    # A trace id is linked by passing it to every add (§8.2 step 1); a JSON trace goes in the
    # add of a lone record, or in one trace step for a package of several (§8.4).
    several = len(pkg.roles) > 1
    for role in pkg.roles:
        if role in known:
            continue
        fields: dict[str, object] = dict(pkg.records[role])
        fields.update(
            identity.marker(role).fields(
                origin_id=pkg.origin_id(role), originator_id=identity.originator_id
            )
        )
        if role == "contact" and "company" in ids:
            fields["COMPANY_ID"] = ids["company"]
        # A deal's COMPANY_ID is not sent with the add: the server links the deal's trace to
        # the CONTACT whose id equals COMPANY_ID (§0 fact 17); the LINK step sets it.
        if role == "deal" and "contact" in ids:
            fields["CONTACT_ID"] = ids["contact"]
        if submission.trace is not None and (submission.trace_is_id or not several):
            fields["TRACE"] = submission.trace
        params: dict[str, object] = {"fields": fields}
        if role == pkg.main:
            params["params"] = {"REGISTER_SONET_EVENT": "Y"}
        key = f"{prefix}{role}"
        plan.steps.append(Step(key, role, f"{METHOD_PREFIX[role]}.add", params))
        ids[role] = Ref(key)
    if "deal" in ids and "company" in ids and LINK not in known:
        # crm.deal.update makes no tracking link (only a REST add does, §8.2).
        update = {"id": ids["deal"], "fields": {"COMPANY_ID": ids["company"]}}
        plan.steps.append(Step(f"{prefix}{LINK}", LINK, "crm.deal.update", update))
    value = trace_value(pkg) if several else None
    state = TraceState.parse(submission.trace_problem)
    if value is not None and TRACE not in known and not state.refused:
        order = (pkg.main, *[r for r in pkg.roles if r != pkg.main])
        entities = [
            {"TYPE": TRACE_TYPES[role], "ID": ids[role]}
            for role in order
            if TRACE_TYPES[role] not in state.denied
        ]
        if entities:
            params = {"TRACE": value, "ENTITIES": entities}
            plan.steps.append(Step(f"{prefix}{TRACE}", TRACE, "crm.tracking.trace.add", params))
            plan.trace_value = value
    return plan


def after_trace_refusal(problem: str | None, description: str) -> str:
    """The trace_problem after the portal refused the trace step (§8.3).

    A record the webhook user may not edit is left out of the next try (the others are still
    linked); a refused JSON is replaced by a UTM-only trace once; after that, the records are
    delivered without the package trace (each keeps its automatic one, §8.2).
    """
    state = TraceState.parse(problem)
    if (denied := _NO_ACCESS.search(description)) is not None and denied[1] not in state.denied:
        state = TraceState(state.utm_only, state.denied | {denied[1]}, state.refused)
    elif not state.utm_only and not _NO_ACCESS.search(description):
        state = TraceState(True, state.denied, state.refused)
    else:
        state = TraceState(state.utm_only, state.denied, True)
    return state.render() or TRACE_REFUSED


def must_go_direct(steps: list[Step]) -> bool:
    """Whether a value in these steps could be read as a back-reference inside a batch (§0
    fact 16): such steps go as direct calls, where the portal takes values as they are."""
    return any(_has_back_reference(step.params) for step in steps)


def _has_back_reference(value: object) -> bool:
    if isinstance(value, str):
        return _BACK_REFERENCE.search(value) is not None
    if isinstance(value, Mapping):
        return any(_has_back_reference(k) or _has_back_reference(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_back_reference(item) for item in value)
    return False


def with_ids(params: Mapping[str, object], results: Mapping[str, object]) -> dict[str, object]:
    """`params` with each `Ref` replaced by the result of the step it names (direct calls)."""

    def walk(value: object) -> object:
        if isinstance(value, Ref):
            return results[value.command]
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    return {k: walk(v) for k, v in params.items()}


# --------------------------------------------------------------------------- results


def created_id(result: object) -> int | None:
    """An id as the portal returns it (an integer from add, a string from list), else None."""
    if isinstance(result, bool):
        return None
    if isinstance(result, int):
        return result if result > 0 else None
    if isinstance(result, str) and result.isdigit():
        return int(result) or None
    return None


def preview(submission: Submission, *, identity: Identity) -> list[dict[str, str]]:
    """The commands the next attempt would send, for the admin API's show and dry run.

    Look-ups are listed as they would go out; creates assume the look-ups find nothing.
    """
    pkg = package(submission)
    known = dict(submission.bitrix_ids)
    steps = [
        origin_lookup(role, [pkg.origin_id(role)], identity=identity, key=f"origin:{role}")
        for role in origin_roles(pkg, known=known)
    ]
    steps += lookups(pkg, known=known)
    rows = [{"phase": "look-up", "key": step.key, "command": step.command} for step in steps]
    create_plan = creates(pkg, identity=identity, known=known, prefix="")
    rows.extend(
        {"phase": "create", "key": step.key, "command": step.command} for step in create_plan.steps
    )
    return rows
