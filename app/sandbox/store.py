"""The emulator's data: CRM records per entity type, Sales Intelligence traces with their links,
the custom fields made at run time, the notifications sent to users, and the id counters. In
memory only; callers hold the emulator's lock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from app.sandbox.entities import BY_OWNER, ENTITY_TYPES, TRACE_IDS, Record
from app.sandbox.notify import Notification
from app.sandbox.userfields import UserField


@dataclass
class Trace:
    """One Sales Intelligence trace (docs/bitrix24.md §8)."""

    id: int
    raw: str | None  # TRACE exactly as received; None for an add's automatic trace without one
    data: dict[str, object]  # the parsed object, the record's UTM_* merged into tags.list (§8.2)
    origin: str  # the method that created it
    created_at: str
    entities: list[tuple[str, int]] = field(default_factory=list)  # (owner type, id), in order
    channels: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, object]:
        return {
            "ID": self.id,
            "TRACE": self.raw,
            "DATA": copy.deepcopy(self.data),
            "ENTITIES": [{"TYPE": kind, "ID": entity_id} for kind, entity_id in self.entities],
            "CHANNELS": list(self.channels),
            "CREATED_BY_METHOD": self.origin,
            "DATE_CREATE": self.created_at,
        }


@dataclass
class Store:
    records: dict[str, dict[int, Record]] = field(
        default_factory=lambda: {name: {} for name in ENTITY_TYPES}
    )
    traces: dict[int, Trace] = field(default_factory=dict)
    # The portal's custom fields, of the configuration and made by crm.<entity>.userfield.add.
    user_fields: list[UserField] = field(default_factory=list)
    # im.notify.system.add: what the portal's users were told, oldest first.
    notifications: list[Notification] = field(default_factory=list)
    _next_notification_id: int = 1
    _next_user_field_id: int = 1
    _next_ids: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENTITY_TYPES, 1))
    _next_trace_id: int = 1
    _next_multifield_id: int = 1

    def allocate_id(self, entity: str) -> int:
        value = self._next_ids[entity]
        self._next_ids[entity] = value + 1
        return value

    def allocate_notification_id(self) -> int:
        value = self._next_notification_id
        self._next_notification_id += 1
        return value

    def allocate_user_field_id(self) -> int:
        value = self._next_user_field_id
        self._next_user_field_id += 1
        return value

    def allocate_multifield_id(self) -> int:
        # Multifield values share one table across entity types, so their ids are global.
        value = self._next_multifield_id
        self._next_multifield_id += 1
        return value

    def find(self, owner: str, entity_id: int) -> Record | None:
        """The record of a CCrmOwnerType name ("CONTACT") and id, if it exists."""
        entity = BY_OWNER.get(owner)
        return None if entity is None else self.records[entity.name].get(entity_id)

    def add_trace(
        self, *, raw: str | None, data: dict[str, object], origin: str, created_at: str
    ) -> Trace:
        trace = Trace(self._next_trace_id, raw, data, origin, created_at)
        self._next_trace_id += 1
        self.traces[trace.id] = trace
        return trace

    def link(self, trace: Trace, owner: str, entity_id: int) -> None:
        """Attach a trace to an entity; additive, one link per (trace, entity)."""
        if (owner, entity_id) not in trace.entities:
            trace.entities.append((owner, entity_id))
        record = self.find(owner, entity_id)
        if record is not None:
            linked = record.setdefault(TRACE_IDS, [])
            if isinstance(linked, list) and trace.id not in linked:
                linked.append(trace.id)

    def delete_trace(self, trace_id: int) -> None:
        trace = self.traces.pop(trace_id, None)
        if trace is None:
            return
        for owner, entity_id in trace.entities:
            record = self.find(owner, entity_id)
            linked = record.get(TRACE_IDS) if record is not None else None
            if isinstance(linked, list) and trace_id in linked:
                linked.remove(trace_id)

    def snapshot(self) -> dict[str, object]:
        return {
            "records": {
                name: [copy.deepcopy(by_id[i]) for i in sorted(by_id)]
                for name, by_id in self.records.items()
            },
            "traces": [self.traces[i].snapshot() for i in sorted(self.traces)],
            "user_fields": {
                name: [f.row() for f in self.user_fields if f.entity == name]
                for name in ENTITY_TYPES
            },
            "notifications": [n.snapshot() for n in self.notifications],
        }
