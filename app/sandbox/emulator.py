"""The Bitrix24 emulator without HTTP: configuration, state, and the dispatcher that checks
credentials, scopes, the leaky bucket and the operating budget before running a method
(docs/bitrix24.md §1, §2, §4, §11.1). It keeps a request log for tests.
"""

from __future__ import annotations

import hmac
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial

from app.sandbox import crm, notify, tracking, userfields
from app.sandbox.batch import commands_of, normalise_method, run_batch, split_command
from app.sandbox.entities import BY_OWNER, ENTITY_TYPES, EntityType
from app.sandbox.errors import (
    RestError,
    insufficient_scope,
    invalid_credentials,
    method_not_found,
    operation_time_limit,
    query_limit_exceeded,
)
from app.sandbox.faults import SQL_ERROR_BODY, SQL_ERROR_STATUS, FaultAnswer, Faults
from app.sandbox.limits import LeakyBucket, OperationMeter
from app.sandbox.listing import Page
from app.sandbox.params import Params
from app.sandbox.store import Store
from app.sandbox.userfields import UserField

REQUEST_LOG_SIZE = 10_000
Handler = Callable[[Params], object]


@dataclass
class EmulatorConfig:
    user_id: int = 1
    secret: str = "sandbox"  # noqa: S105 - the sandbox webhook code, public by design
    # The webhook's scopes; "basic" (profile, scope, batch) is always granted.
    scopes: tuple[str, ...] = ("crm", "user", "basic")
    rate_per_second: float = 2.0  # leaky bucket drain (§4.1); 0 turns the limit off
    burst: int = 50  # leaky bucket size (§4.1)
    operation_limit_seconds: float | None = None  # per-method budget over 10 min (§4.2); None = off
    operation_cost_seconds: float = 0.05  # simulated execution time each method call adds
    seed: int | None = None  # for the random failures of fault injection
    # Entity -> custom fields (UF_CRM_*) the portal has; crm.<entity>.fields lists them.
    user_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Entity -> fields an admin made required: an add without them is refused (§6.1).
    required_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Entity -> ids of records the webhook user may read but not edit: crm.<entity>.update answers
    # "Access denied." and crm.tracking.trace.add refuses to link them (docs/bitrix24.md §6.1,
    # §8.3; server: CCrm<Entity>RestProxy::innerUpdate, crm/lib/tracking/rest.php).
    readonly_records: dict[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Method:
    scope: str
    handler: Handler
    metered: bool = True  # counts against the operating budget (the outer batch does not, §4.2)


@dataclass(frozen=True)
class CallOutcome:
    """One REST request's answer; `executed` when a method actually ran (state may have changed)."""

    status: int
    body: dict[str, object]
    executed: bool
    late: LateRun | None = None  # cut off on arrival: the app drops the connection, runs it later


@dataclass(frozen=True)
class LateRun:
    """A request admitted and cut off on arrival, to run `delay` seconds later (fault "late")."""

    method: str
    params: Params
    delay: float
    entry: dict[str, object]  # its request-log entry, completed when it runs
    generation: int  # a reset in between forgets it


@dataclass
class _Activity:
    requests: deque[dict[str, object]] = field(
        default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE)
    )
    counts: Counter[str] = field(default_factory=Counter)


class Emulator:
    """State and REST methods of one emulated portal with one incoming webhook.

    Everything runs under one re-entrant lock, so tests may read the state from another thread.
    `clock` (monotonic) drives the leaky bucket; `wall_clock` the `time` objects and the budget.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config or EmulatorConfig()
        self._wall = wall_clock
        self._lock = threading.RLock()
        self._bucket = LeakyBucket(clock)
        self._meter = OperationMeter()
        self._activity = _Activity()
        self.store = Store()
        self.faults = Faults()
        self._rng = random.Random(self.config.seed)  # noqa: S311 - fault injection, not security
        self._generation = 0
        self._methods = self._method_table()

    # --- the REST surface ----------------------------------------------------------------------

    def handle(self, method: str, params: Params) -> tuple[int, dict[str, object]]:
        """Run one REST method with parsed params: (HTTP status, body before PHP-JSON shaping).

        Scopes and the operating budget apply; credentials and the leaky bucket do not (they
        belong to the HTTP request, see `http_call`).
        """
        with self._lock:
            status, body, _ = self._dispatch(normalise_method(method), params)
            return status, body

    def http_call(self, user_id: str, secret: str, method: str, params: Params) -> CallOutcome:
        """One HTTP request to `/rest/{user_id}/{secret}/{method}`: credentials, bucket, method.

        An admitted request that would run an add may be cut off instead (faults `late_*`): it
        is logged with fault "late" and comes back as `CallOutcome.late`, for `run_late`.
        """
        with self._lock:
            name = normalise_method(method)
            counts = self._activity.counts
            counts["requests"] += 1
            commands: list[str] = []
            if name == "batch":
                counts["batch"] += 1
                commands = [split_command(command)[0] for _, command in commands_of(params)]
            executed = False
            if not self._authorised(user_id, secret):
                counts["rejected_auth"] += 1
                status, body = _error(invalid_credentials())
            elif not self._bucket.admit(rate=self.config.rate_per_second, burst=self.config.burst):
                counts["rejected_rate_limit"] += 1
                status, body = _error(query_limit_exceeded())
            elif _adds(name, commands) and self.faults.take_late(self._rng):
                counts["fault_late"] += 1
                entry = self._log(name, None, commands=commands, fault="late")
                late = LateRun(name, params, self.faults.late_seconds, entry, self._generation)
                return CallOutcome(0, {}, False, late)
            else:
                status, body, executed = self._dispatch(name, params)
            if status != 200:
                counts["errors"] += 1
            self._log(name, status, error=body.get("error"), commands=commands)
            return CallOutcome(status, body, executed)

    def run_late(self, late: LateRun) -> None:
        """Run a request cut off on arrival, as PHP runs on after the client went away (§0 fact
        15): no limit applies again (it was admitted on arrival); its log entry gets the outcome.
        Nothing happens if the emulator was reset in between."""
        with self._lock:
            if late.generation != self._generation:
                return
            status, body, _ = self._dispatch(late.method, late.params)
            self._activity.counts["late_completions"] += 1
            if status != 200:
                self._activity.counts["errors"] += 1
            late.entry.update(status=status, error=body.get("error"), completed_at=self._wall())

    # --- fault injection -----------------------------------------------------------------------

    def injected_failure(self, method: str) -> FaultAnswer | None:
        """An outage or random failure answer for this request, logged; None to proceed."""
        with self._lock:
            answer = self.faults.rejection(self._rng)
            if answer is not None:
                self._activity.counts["requests"] += 1
                self._activity.counts[f"fault_{answer.kind}"] += 1
                self._log(normalise_method(method), answer.status, fault=answer.kind)
            return answer

    def redirect(self, method: str, host: str, path: str) -> str | None:
        """The Location of a renamed portal's 302 for this request (fault `moved_to`), logged;
        None to proceed (docs/bitrix24.md §0 fact 18, §1.4)."""
        with self._lock:
            location = self.faults.redirect(host, path)
            if location is not None:
                self._activity.counts["requests"] += 1
                self._activity.counts["fault_moved"] += 1
                self._log(normalise_method(method), 302, fault="moved")
            return location

    def take_lost_response(self) -> bool:
        """True when this executed call's answer must be lost: one of `lose_responses`, or by
        chance (`lose_add_rate`) when the call ran an add, alone or inside a batch."""
        with self._lock:
            if self.faults.lose_responses > 0:
                self.faults.lose_responses -= 1
            elif not (
                self.faults.lose_add_rate > 0
                and self._last_call_added()
                and self._rng.random() < self.faults.lose_add_rate
            ):
                return False
            self._activity.counts["lost_responses"] += 1
            if self._activity.requests:
                self._activity.requests[-1]["fault"] = "lost"
            return True

    def _last_call_added(self) -> bool:
        if not self._activity.requests:
            return False
        entry = self._activity.requests[-1]
        methods = [str(entry["method"]), *map(str, entry.get("commands") or [])]  # type: ignore[call-overload]
        return any(m.endswith(".add") for m in methods)

    def update_faults(self, changes: Mapping[str, object]) -> dict[str, object]:
        with self._lock:
            self.faults.update(changes)
            return self.faults.snapshot()

    # --- control -------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget records, traces, counters, the request log and faults; ids restart at 1."""
        with self._lock:
            self.store = Store()
            self.faults = Faults()
            self._generation += 1  # cut-off requests still pending never run
            self._activity = _Activity()
            self._bucket.empty()
            self._meter.clear()
            self._rng = random.Random(self.config.seed)  # noqa: S311 - as in __init__

    def fill_bucket(self) -> None:
        """Fill the leaky bucket to its burst now (§4.1): a portal whose other integrations keep
        it full, so only its drain admits requests (the next one is refused at once)."""
        with self._lock:
            self._bucket.fill(self.config.burst)

    def empty_bucket(self) -> None:
        with self._lock:
            self._bucket.empty()

    def bucket_snapshot(self) -> dict[str, object]:
        """The bucket's level now (drained up to this moment), its burst and drain rate."""
        with self._lock:
            rate = self.config.rate_per_second
            level = self._bucket.current(rate)
            return {"level": round(level, 3), "burst": self.config.burst, "rate_per_second": rate}

    def snapshot(self) -> dict[str, object]:
        """Everything a test may want to assert on, as plain JSON (no PHP-JSON shaping)."""
        with self._lock:
            state = self.store.snapshot()
            state["requests"] = [dict(entry) for entry in self._activity.requests]
            state["counts"] = dict(self._activity.counts)
            state["faults"] = self.faults.snapshot()
            return state

    def config_snapshot(self) -> dict[str, object]:
        with self._lock:
            out = asdict(self.config)
            out["scopes"] = list(self.config.scopes)
            for key in ("user_fields", "required_fields", "readonly_records"):
                out[key] = {k: list(v) for k, v in getattr(self.config, key).items()}
            return out

    def update_config(self, changes: Mapping[str, object]) -> dict[str, object]:
        """Change rate_per_second, burst, secret, scopes, the operating limits, user_fields,
        required_fields or readonly_records at run time (a given key replaces its whole value)."""
        with self._lock:
            validated = _config_changes(changes)
            config = replace(self.config)  # never mutate the object the caller passed in
            for key, value in validated.items():
                setattr(config, key, value)
            self.config = config
            return self.config_snapshot()

    # --- internals -----------------------------------------------------------------------------

    def _authorised(self, user_id: str, secret: str) -> bool:
        same_user = user_id.strip() == str(self.config.user_id)
        same_secret = hmac.compare_digest(secret.encode(), self.config.secret.encode())
        return same_user and same_secret

    def _dispatch(self, method: str, params: Params) -> tuple[int, dict[str, object], bool]:
        spec = self._methods.get(method)
        if spec is None:
            return (*_error(method_not_found()), False)
        if spec.scope != "basic" and spec.scope not in self.config.scopes:
            return (*_error(insufficient_scope()), False)
        start = self._wall()
        limit = self.config.operation_limit_seconds
        if spec.metered and limit is not None and self._meter.operating(method, start) > limit:
            self._activity.counts["operation_time_limited"] += 1
            return (*_error(operation_time_limit()), False)
        if (injected := self.faults.take_method_failure(method)) is not None:
            self._activity.counts["fault_method"] += 1
            return (*injected, False)
        self._activity.counts["calls"] += 1
        sql_error = _writes(method) and self.faults.take_sql_error(self._rng)
        if sql_error:
            self._activity.counts["fault_sql"] += 1
            if not self.faults.sql_error_commits:
                return SQL_ERROR_STATUS, dict(SQL_ERROR_BODY), False
        started = time.perf_counter()
        try:
            result = spec.handler(params)
        except RestError as exc:
            status, body = _error(exc)
        else:
            if sql_error:
                # Written, then reported as failed: the client cannot know (§0 fact 18).
                return SQL_ERROR_STATUS, dict(SQL_ERROR_BODY), True
            status, body = 200, {}
            if isinstance(result, Page):
                body["result"] = result.rows
                if result.next is not None:
                    body["next"] = result.next
                if result.total is not None:
                    body["total"] = result.total
            else:
                body["result"] = result
        processing = time.perf_counter() - started
        if spec.metered:
            self._meter.record(method, start, self.config.operation_cost_seconds)
        if status == 200:
            body["time"] = self._time(method, start, processing)
        return status, body, True

    def _time(self, method: str, start: float, processing: float) -> dict[str, object]:
        """The `time` object of a success (§2.1); the portal's timezone is UTC here."""
        finish = max(self._wall(), start)
        return {
            "start": start,
            "finish": finish,
            "duration": finish - start,
            "processing": processing,
            "date_start": crm.iso(start),
            "date_finish": crm.iso(finish),
            "operating_reset_at": self._meter.reset_at(method, finish),
            "operating": self._meter.operating(method, finish),
        }

    def _log(
        self,
        method: str,
        status: int | None,
        *,
        error: object = None,
        commands: list[str] | None = None,
        fault: str | None = None,
    ) -> dict[str, object]:
        entry: dict[str, object] = {
            "method": method,
            "status": status,
            "error": error,
            "commands": commands or [],
            "fault": fault,
            "at": self._wall(),
        }
        self._activity.requests.append(entry)
        return entry

    def _method_table(self) -> dict[str, _Method]:
        table: dict[str, _Method] = {
            "profile": _Method("basic", lambda _: crm.profile(self.config.user_id)),
            "scope": _Method("basic", lambda _: list(self.config.scopes)),
            "batch": _Method("basic", self._batch, metered=False),
            "crm.duplicate.findbycomm": _Method("crm", lambda p: crm.find_by_comm(self.store, p)),
            "crm.status.list": _Method("crm", crm.status_list),
            "crm.tracking.trace.add": _Method(
                "crm",
                lambda p: tracking.trace_add(
                    self.store, p, created_at=crm.iso(self._wall()), can_edit=self._can_edit
                ),
            ),
            "crm.tracking.trace.delete": _Method(
                "crm", lambda p: tracking.trace_delete(self.store, p)
            ),
            "im.notify.system.add": _Method("im", self._notify),
        }
        for entity in ENTITY_TYPES.values():
            prefix = f"crm.{entity.name}."
            table[prefix + "add"] = _Method("crm", partial(self._add, entity))
            table[prefix + "update"] = _Method("crm", partial(self._update, entity))
            table[prefix + "get"] = _Method("crm", partial(self._get, entity))
            table[prefix + "list"] = _Method("crm", partial(self._list, entity))
            table[prefix + "fields"] = _Method("crm", partial(self._fields, entity))
            table[prefix + "userfield.add"] = _Method("crm", partial(self._add_user_field, entity))
            table[prefix + "userfield.list"] = _Method(
                "crm", partial(self._list_user_fields, entity)
            )
        return table

    def _notify(self, params: Params) -> object:
        return notify.system_add(
            self.store.notifications,
            params,
            allocate_id=self.store.allocate_notification_id,
            created_at=crm.iso(self._wall()),
        )

    def _add(self, entity: EntityType, params: Params) -> object:
        return crm.add(
            self.store,
            entity,
            params,
            user_id=self.config.user_id,
            now=self._wall(),
            required=self.config.required_fields.get(entity.name, ()),
            user_fields=self._user_field_names(entity),
        )

    def _update(self, entity: EntityType, params: Params) -> object:
        return crm.update(
            self.store,
            entity,
            params,
            user_id=self.config.user_id,
            now=self._wall(),
            user_fields=self._user_field_names(entity),
            can_edit=self._can_edit,
        )

    def _get(self, entity: EntityType, params: Params) -> object:
        return crm.get(self.store, entity, params, self._user_field_names(entity))

    def _list(self, entity: EntityType, params: Params) -> object:
        return crm.list_records(self.store, entity, params, self._user_field_names(entity))

    def _fields(self, entity: EntityType, params: Params) -> object:
        return crm.describe_fields(
            entity,
            user_fields=self._user_fields(entity),
            required=self.config.required_fields.get(entity.name, ()),
        )

    def _add_user_field(self, entity: EntityType, params: Params) -> object:
        """crm.<entity>.userfield.add: the new field's id (docs: api-reference/crm/quote/
        user-field/crm-quote-user-field-add.md). It needs CRM admin rights, which the webhook
        user has here (`profile` says ADMIN)."""
        existing = self._user_fields(entity)
        field = userfields.add(entity, params, existing, new_id=self.store.allocate_user_field_id())
        self.store.user_fields.append(field)
        return field.id

    def _list_user_fields(self, entity: EntityType, params: Params) -> object:
        return userfields.list_fields(self._user_fields(entity), params)

    def _user_fields(self, entity: EntityType) -> list[UserField]:
        """The entity's custom fields: those of the configuration (kept in step with it, so they
        get ids too), then those made at run time."""
        configured = self.config.user_fields.get(entity.name, ())
        fields = self.store.user_fields
        fields[:] = [
            f
            for f in fields
            if f.origin != "config" or f.entity != entity.name or f.field_name in configured
        ]
        present = {f.field_name for f in fields if f.entity == entity.name}
        for name in configured:
            if name not in present:
                fields.append(
                    UserField(
                        id=self.store.allocate_user_field_id(),
                        entity=entity.name,
                        entity_id=entity.uf_entity_id,
                        field_name=name,
                        origin="config",
                    )
                )
        return [f for f in fields if f.entity == entity.name]

    def _user_field_names(self, entity: EntityType) -> set[str]:
        return {f.field_name for f in self._user_fields(entity)}

    def _can_edit(self, owner: str, entity_id: int) -> bool:
        entity = BY_OWNER.get(owner)
        if entity is None:
            return False
        return entity_id not in self.config.readonly_records.get(entity.name, ())

    def _batch(self, params: Params) -> object:
        def execute(method: str, command_params: Params) -> tuple[int, dict[str, object]]:
            status, body, _ = self._dispatch(method, command_params)
            return status, body

        return run_batch(params, execute)


def _error(exc: RestError) -> tuple[int, dict[str, object]]:
    return exc.status, exc.body()


def _config_changes(changes: Mapping[str, object]) -> dict[str, object]:
    """Validate a /_control/config body; raises ValueError naming the bad key."""
    allowed = {
        "rate_per_second",
        "burst",
        "secret",
        "scopes",
        "operation_limit_seconds",
        "operation_cost_seconds",
        "user_fields",
        "required_fields",
        "readonly_records",
    }
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    out: dict[str, object] = {}
    for key, value in changes.items():
        if key == "secret":
            if not isinstance(value, str) or not value:
                raise ValueError("secret must be a non-empty string")
            out[key] = value
        elif key == "scopes":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ValueError("scopes must be a list of strings")
            out[key] = tuple(value)
        elif key in ("user_fields", "required_fields"):
            out[key] = _fields_by_entity(key, value)
        elif key == "readonly_records":
            out[key] = _ids_by_entity(key, value)
        elif key == "burst":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError("burst must be a non-negative integer")
            out[key] = value
        elif value is None and key == "operation_limit_seconds":
            out[key] = None
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{key} must be a non-negative number")
        else:
            out[key] = float(value)
    return out


def _fields_by_entity(key: str, value: object) -> dict[str, tuple[str, ...]]:
    """`{"lead": ["UF_CRM_CITY"], ...}`: known entity names, lists of field codes."""
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object: entity -> list of field codes")
    out: dict[str, tuple[str, ...]] = {}
    for entity, codes in value.items():
        if entity not in ENTITY_TYPES:
            raise ValueError(f"{key}: unknown entity {entity!r}")
        if not isinstance(codes, list) or not all(isinstance(c, str) and c for c in codes):
            raise ValueError(f"{key}.{entity} must be a list of field codes")
        if key == "user_fields" and not all(c.startswith("UF_CRM_") for c in codes):
            raise ValueError(f"{key}.{entity}: custom field codes start with UF_CRM_")
        out[entity] = tuple(codes)
    return out


def _ids_by_entity(key: str, value: object) -> dict[str, tuple[int, ...]]:
    """`{"contact": [3, 7], ...}`: known entity names, lists of positive record ids."""
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object: entity -> list of record ids")
    out: dict[str, tuple[int, ...]] = {}
    for entity, ids in value.items():
        if entity not in ENTITY_TYPES:
            raise ValueError(f"{key}: unknown entity {entity!r}")
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids
        ):
            raise ValueError(f"{key}.{entity} must be a list of positive record ids")
        out[entity] = tuple(ids)
    return out


def _adds(method: str, commands: list[str]) -> bool:
    """Whether the request runs an add, itself or as a batch command."""
    return any(name.endswith(".add") for name in (method, *commands))


def _writes(method: str) -> bool:
    """crm.*.add and crm.*.update (and crm.tracking.trace.add, crm.*.userfield.add): the commands
    a failing SQL query can break."""
    return method.startswith("crm.") and method.rsplit(".", 1)[-1] in ("add", "update")
