"""How a record the gateway created is recognised later: its identity marker. Pure: no I/O.

Leads, deals, contacts and companies carry ORIGINATOR_ID and ORIGIN_ID. Quotes have neither
(docs/bitrix24.md §0 fact 14): the legacy add ignores them and the legacy list drops them from
its filter, so a quote carries the submission id in a custom string field of the portal's
instead (default `UF_CRM_B24FG_ORIGIN`), which `check` verifies and can create.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_QUOTE_FIELD = "UF_CRM_B24FG_ORIGIN"
# crm.quote.userfield.add: FIELD_NAME without the UF_CRM_ prefix, A-Z 0-9 _, at most 50
# characters with the prefix (docs/bitrix24.md §6.5).
QUOTE_FIELD_RE = re.compile(r"^UF_CRM_[A-Z0-9_]{1,43}$")
ORIGIN_ROLES = frozenset({"lead", "deal", "contact", "company"})


@dataclass(frozen=True, slots=True)
class Marker:
    """Where one role's identity lives: `field` holds the origin id; `originator` (when set)
    is a second field that must hold the gateway's ORIGINATOR_ID."""

    field: str
    originator: str | None = None

    def fields(self, *, origin_id: str, originator_id: str) -> dict[str, str]:
        """The values an add writes so the record can be found again."""
        out = {self.field: origin_id}
        if self.originator is not None:
            out[self.originator] = originator_id
        return out

    def matches(self, row: dict[str, object], *, origin_id: str, originator_id: str) -> bool:
        """Whether a list row is provably ours: the marker read back equals what we wrote.

        Never trust a filter alone: the legacy list drops filter keys it does not know
        (docs/bitrix24.md §0 fact 13) and then returns unrelated rows.
        """
        if str(row.get(self.field) or "") != origin_id:
            return False
        return self.originator is None or str(row.get(self.originator) or "") == originator_id


def marker_for(role: str, *, quote_field: str = DEFAULT_QUOTE_FIELD) -> Marker:
    if role in ORIGIN_ROLES:
        return Marker("ORIGIN_ID", originator="ORIGINATOR_ID")
    if role == "quote":
        return Marker(quote_field)
    raise ValueError(f"no identity marker for role {role!r}")


def userfield_add_params(
    field: str, *, label: str = "b24-form-gateway submission"
) -> dict[str, object]:
    """Parameters of crm.quote.userfield.add creating the quote marker field."""
    return {
        "fields": {
            "FIELD_NAME": field.removeprefix("UF_CRM_"),
            "USER_TYPE_ID": "string",
            "LABEL": label,
            "MULTIPLE": "N",
            "MANDATORY": "N",
            "SHOW_FILTER": "Y",
            "IS_SEARCHABLE": "Y",
            "EDIT_IN_LIST": "N",
        }
    }
