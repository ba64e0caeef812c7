"""Assembly: `create_app(settings)` wires the routes, the database, the Bitrix24 client and the
worker; `cli()` is the `b24-form-gateway` command. The only module that imports the sandbox.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import admin, check, httpserver, pages, retention
from app.admin.dashboard import dashboard_html
from app.admin.throttle import FailedLogins
from app.alerts import (
    Alerter,
    Backlog,
    BitrixChannel,
    Channel,
    ChannelError,
    EmailChannel,
    Failure,
    WebhookChannel,
)
from app.bitrix import BitrixClient, BitrixError
from app.delivery import RetryPolicy, Worker, WorkerConfig
from app.delivery.breaker import Breaker
from app.delivery.plan import preview
from app.embed import router as embed_router
from app.forms import Form, FormsError, load_forms
from app.intake import IntakeContext
from app.intake import router as intake_router
from app.intake.clientip import ClientResolver
from app.intake.origins import FormsCORS, OriginPolicy
from app.intake.routes import error_response
from app.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from app.metrics import Metrics
from app.netaddr import is_loopback_host
from app.observability import RequestIdMiddleware, configure_logging
from app.sandbox import Emulator, EmulatorConfig, SameOriginOnly, create_emulator_app
from app.secheaders import SecurityHeaders, under
from app.settings import Settings, SettingsError
from app.store import (
    DatabaseUnavailable,
    Outcome,
    Status,
    Store,
    Submission,
    create_engine,
    migrate,
)

log = logging.getLogger("app.main")

SANDBOX_SECRET = "sandbox"  # noqa: S105 - the in-process emulator's webhook code, not a secret
SANDBOX_WEBHOOK = f"http://sandbox.internal/rest/1/{SANDBOX_SECRET}/"
SANDBOX_PREFIX = "/sandbox"
# Answers that hold personal data or the admin's view: never kept by a browser or a proxy.
PRIVATE_PATHS = ("/admin", SANDBOX_PREFIX)
SHUTDOWN_GRACE_SECONDS = 10.0
ALERTS_DRAIN_SECONDS = 5.0
# The sandbox webhook may also send notifications (ALERT_BITRIX_USER_IDS in sandbox mode).
SANDBOX_SCOPES = ("crm", "user", "im", "basic")


@dataclass(slots=True)
class Runtime:
    """What the lifespan built that the probes read, at `app.state.runtime`."""

    store: Store
    client: BitrixClient
    breaker: Breaker | None = None  # the worker's, when this process runs one


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        originator_id=settings.ORIGINATOR_ID,
        batch_size=settings.WORKER_BATCH_SIZE,
        unknown_wait_seconds=settings.UNKNOWN_OUTCOME_WAIT_SECONDS,
        batch_max_bytes=settings.BATCH_MAX_BYTES,
        quote_field=settings.QUOTE_ORIGIN_FIELD,
        create_marker_fields=settings.CREATE_MARKER_FIELDS,
        poll_seconds=settings.WORKER_POLL_SECONDS,
        probe_max_seconds=settings.BREAKER_MAX_PROBE_SECONDS,
        policy=RetryPolicy(
            base_seconds=settings.RETRY_BASE_SECONDS,
            max_delay_seconds=settings.RETRY_MAX_DELAY_SECONDS,
            horizon_seconds=settings.RETRY_HORIZON_SECONDS,
            max_attempts=settings.RETRY_MAX_ATTEMPTS,
        ),
    )


def connection_limits(settings: Settings) -> httpserver.ConnectionLimits:
    return httpserver.ConnectionLimits(
        header_timeout_seconds=settings.HTTP_HEADER_TIMEOUT_SECONDS,
        body_timeout_seconds=settings.HTTP_BODY_TIMEOUT_SECONDS,
        max_header_bytes=settings.HTTP_MAX_HEADER_BYTES,
        max_connections=settings.HTTP_MAX_CONNECTIONS,
    )


def build_client(
    settings: Settings, emulator_app: ASGIApp | None, *, metrics: Metrics | None = None
) -> BitrixClient:
    transport: httpx.AsyncBaseTransport | None = None
    if settings.B24_WEBHOOK_URL is None:
        # Sandbox: calls go in-process to the emulator; no socket, so no real portal, ever.
        url = SANDBOX_WEBHOOK
        transport = httpx.ASGITransport(app=emulator_app)  # type: ignore[arg-type]
    else:
        url = settings.B24_WEBHOOK_URL.get_secret_value()
    return BitrixClient(
        url,
        timeout_seconds=settings.BITRIX_TIMEOUT_SECONDS,
        connect_timeout_seconds=settings.BITRIX_CONNECT_TIMEOUT_SECONDS,
        rate_per_second=settings.BITRIX_RATE_PER_SECOND,
        burst=settings.BITRIX_BURST,
        operating_budget_seconds=settings.BITRIX_OPERATING_BUDGET_SECONDS or None,
        transport=transport,
        observer=metrics,
    )


def alert_channels(settings: Settings, client: BitrixClient) -> list[Channel]:
    """The channels the settings turn on; none by default."""
    channels: list[Channel] = []
    if settings.ALERT_BITRIX_USER_IDS:
        channels.append(BitrixChannel(bitrix_notify(client), settings.ALERT_BITRIX_USER_IDS))
    if settings.ALERT_SMTP_HOST and settings.ALERT_SMTP_FROM:
        password = settings.ALERT_SMTP_PASSWORD
        channels.append(
            EmailChannel(
                host=settings.ALERT_SMTP_HOST,
                port=settings.ALERT_SMTP_PORT,
                sender=settings.ALERT_SMTP_FROM,
                recipients=settings.ALERT_SMTP_TO,
                username=settings.ALERT_SMTP_USER,
                password=password.get_secret_value() if password else None,
                starttls=settings.ALERT_SMTP_STARTTLS,
            )
        )
    if settings.ALERT_WEBHOOK_URL is not None:
        channels.append(
            WebhookChannel(
                settings.ALERT_WEBHOOK_URL.get_secret_value(),
                chat_id=settings.ALERT_WEBHOOK_CHAT_ID,
            )
        )
    return channels


def bitrix_notify(client: BitrixClient) -> Callable[[int, str], Awaitable[None]]:
    """im.notify.system.add through the gateway's client (docs/bitrix24.md §13)."""

    async def notify(user_id: int, message: str) -> None:
        try:
            result = await client.call(
                "im.notify.system.add", {"USER_ID": user_id, "MESSAGE": message}
            )
        except BitrixError as exc:
            hint = None
            if exc.code == "insufficient_scope":
                hint = "the webhook lacks the im scope that ALERT_BITRIX_USER_IDS needs"
            raise ChannelError(exc.label, hint=hint) from None
        if result is False or result is None:  # the portal made no notification
            raise ChannelError("not_created")

    return notify


def build_alerter(
    settings: Settings, store: Store, client: BitrixClient, worker: Worker, metrics: Metrics | None
) -> Alerter | None:
    """Alerts run beside a worker: it reports failures, and its leadership decides which
    process watches for stalls. None when no channel is configured."""
    channels = alert_channels(settings, client)
    if not channels:
        return None

    async def backlog(now: datetime) -> Backlog:
        counts = await store.count_by_status()
        return Backlog(
            oldest_due=await store.oldest_due(now=now),
            waiting=counts[Status.ACCEPTED] + counts[Status.DELIVERING],
            failed=counts[Status.FAILED],
        )

    alerter = Alerter(
        channels,
        backlog=backlog,
        stall_after=timedelta(minutes=settings.ALERT_STALL_MINUTES),
        max_per_hour=settings.ALERT_MAX_PER_HOUR,
        leading=lambda: worker.leading,
        metrics=metrics,
    )

    def on_failed(failed: Sequence[tuple[Submission, Outcome]]) -> None:
        alerter.failed(
            [
                Failure(s.id, s.form_id, outcome.attempt.error_code, outcome.attempt.attempt)
                for s, outcome in failed
            ]
        )

    worker.on_failed = on_failed
    return alerter


async def stop_alerts(alerter: Alerter, task: asyncio.Task[None]) -> None:
    """Stop watching; what is still queued (a failure of the last pass) gets a short while."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    try:
        await asyncio.wait_for(alerter.drain(), timeout=ALERTS_DRAIN_SECONDS)
    except TimeoutError:
        log.warning("alerts.shutdown_timeout")


def admin_context(settings: Settings, store: Store) -> admin.AdminContext:
    """What the admin API and the `submissions` CLI need; `on_requeued` is set by the lifespan."""
    return admin.AdminContext(
        store=store,
        token=settings.ADMIN_TOKEN,
        preview=functools.partial(preview, identity=worker_config(settings).identity),
        failures=FailedLogins(ClientResolver(settings.TRUSTED_PROXIES)),
        timezone=ZoneInfo(settings.ADMIN_TIMEZONE),
    )


def create_app(
    settings: Settings, *, forms: dict[str, Form] | None = None, migrated: bool = False
) -> FastAPI:
    """The gateway as an ASGI app. Raises FormsError for a bad forms file. `migrated`: the
    caller brought the schema up to date already (`serve`), so the start-up does not again."""
    forms = forms if forms is not None else load_forms(settings.FORMS_FILE)
    engine = create_engine(settings.DATABASE_URL)
    store = Store(engine)
    metrics = Metrics()
    # Without ADMIN_TOKEN the admin API is not mounted at all: every /admin path is a 404.
    admin_ctx = admin_context(settings, store) if settings.ADMIN_TOKEN else None
    emulator: Emulator | None = None
    emulator_app: ASGIApp | None = None
    if settings.sandbox:
        emulator = Emulator(EmulatorConfig(secret=SANDBOX_SECRET, scopes=SANDBOX_SCOPES))
        emulator_app = create_emulator_app(emulator)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.sandbox:
            log.warning(
                "sandbox.mode",
                extra={
                    "detail": "B24_WEBHOOK_URL is not set: delivering to the built-in "
                    "emulator at /sandbox, never to a real portal; its records are lost at "
                    "restart",
                    "open_to_network": settings.SANDBOX,
                },
            )
        else:
            log.info("portal.configured", extra={"portal_host": settings.webhook_host})
        if not migrated:
            await migrate(engine)
        client = build_client(settings, emulator_app, metrics=metrics)
        worker = (
            Worker(store, client, worker_config(settings), metrics=metrics)
            if settings.WORKER
            else None
        )
        alerter = build_alerter(settings, store, client, worker, metrics) if worker else None
        app.state.runtime = Runtime(store, client, worker.breaker if worker else None)
        app.state.intake.on_accepted = worker.wake if worker else (lambda: None)
        if admin_ctx is not None:  # a retry by hand is delivered at once, not at the next poll
            admin_ctx.on_requeued = worker.wake if worker else (lambda: None)
            if worker is not None:
                admin_ctx.portal_state = worker.breaker.snapshot
        task = asyncio.create_task(worker.run(), name="delivery-worker") if worker else None
        alerts_task = asyncio.create_task(alerter.run(), name="alerts") if alerter else None
        retention_task = (
            asyncio.create_task(
                retention.run(
                    store,
                    days=settings.RETENTION_DAYS,
                    horizon_seconds=settings.RETRY_HORIZON_SECONDS,
                    clock=lambda: datetime.now(UTC),
                ),
                name="retention",
            )
            if settings.RETENTION_DAYS > 0
            else None
        )
        log.info(
            "gateway.started", extra={"forms": ",".join(sorted(forms)), "worker": bool(worker)}
        )
        try:
            yield
        finally:
            if worker is not None and task is not None:
                worker.stop()
                try:
                    await asyncio.wait_for(task, timeout=SHUTDOWN_GRACE_SECONDS)
                except TimeoutError:
                    # Claims stay leased; after the lease they are retried with a look-up first.
                    log.warning("worker.shutdown_timeout")
            if alerter is not None and alerts_task is not None:
                await stop_alerts(alerter, alerts_task)
            if retention_task is not None:
                retention_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention_task
            await app.state.intake.aclose()
            await client.aclose()
            await engine.dispose()
            log.info("gateway.stopped")

    app = FastAPI(
        title="b24-form-gateway",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.intake = IntakeContext(settings=settings, forms=forms, store=store, metrics=metrics)
    # CORS per form: ALLOWED_ORIGINS plus the form's allowed_origins; none = echo any origin.
    # Never for the sandbox, which answers its own origin only.
    app.add_middleware(
        _CorsOutside,
        prefix=SANDBOX_PREFIX,
        policy=app.state.intake.origins,
        form_ids=tuple(forms),
    )
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(SecurityHeaders, no_store=under(*PRIVATE_PATHS))
    _add_error_handlers(app)
    app.include_router(intake_router)
    app.include_router(embed_router)
    if admin_ctx is not None:
        admin.install(app, admin_ctx)
    demo_form = "contact" if "contact" in forms else sorted(forms)[0]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        if settings.sandbox:
            return HTMLResponse(pages.demo_page(demo_form))
        return HTMLResponse(pages.status_page())

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: database, queue depth, portal state")
    async def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        body: dict[str, object] = {"sandbox": settings.sandbox}
        try:
            counts = await runtime.store.count_by_status()
        except Exception:
            log.exception("readyz.database_unreachable")
            return JSONResponse({**body, "status": "unavailable", "database": "error"}, 503)
        client = runtime.client
        body.update(
            status="ok",
            database="ok",
            queue={s.value: counts[s] for s in (Status.ACCEPTED, Status.DELIVERING)},
            failed=counts[Status.FAILED],
            portal={
                "last_success_at": client.last_success_at,
                "last_failure_at": client.last_failure_at,
                "last_error": client.last_error_code,
                # Whether, not where: this answer is public and must not name the portal
                # (`check` prints the new address).
                "moved": client.moved_to is not None,
                **({"breaker": runtime.breaker.snapshot()} if runtime.breaker else {}),
            },
        )
        return JSONResponse(body)

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        counts = await store.count_by_status()
        for status, count in counts.items():
            metrics.queue_depth.labels(status=status.value).set(count)
        oldest = await store.oldest_undelivered()
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        metrics.oldest_undelivered.set(max(age, 0.0))
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    if emulator_app is not None:

        @app.get("/status", response_class=HTMLResponse, include_in_schema=False)
        async def sandbox_status() -> HTMLResponse:
            # Sandbox only: a real deployment shows this at /admin/dashboard, behind the token.
            title = "b24-form-gateway (sandbox)"
            runtime: Runtime = app.state.runtime
            portal = runtime.breaker.snapshot() if runtime.breaker else None
            page = await dashboard_html(store, now=datetime.now(UTC), title=title, portal=portal)
            return HTMLResponse(page)

        @app.get(pages.DEMO_TRACKER_PATH, include_in_schema=False)
        async def demo_tracker() -> Response:
            return Response(pages.DEMO_TRACKER_JS, media_type="text/javascript; charset=utf-8")

        app.mount(
            SANDBOX_PREFIX, SameOriginOnly(emulator_app, local_only=settings.sandbox_local_only)
        )
    return app


class _CorsOutside:
    """FormsCORS for every path but those under `prefix`, which skip it entirely (a CORS
    middleware answers preflights itself, so a guard behind it would not see them)."""

    def __init__(
        self, app: ASGIApp, *, prefix: str, policy: OriginPolicy, form_ids: tuple[str, ...]
    ) -> None:
        self.app = app
        self.cors = FormsCORS(app, policy=policy, form_ids=form_ids)
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", "")) if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            await self.app(scope, receive, send)
        else:
            await self.cors(scope, receive, send)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        response = error_response(exc.status_code, str(exc.detail))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(422, "invalid request")

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # The client left, or the server cut off a body that came too slowly (app/httpserver.py):
        # routine on the open internet, not a fault; nothing stored, and this answer goes nowhere.
        log.info("http.client_disconnected", extra={"path": request.url.path})
        return error_response(400, "client disconnected")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        # A bug must not become a stack trace for the client; the log keeps the details.
        log.error("http.unexpected_error", exc_info=exc, extra={"path": request.url.path})
        return error_response(500, "internal error")


class _LazyApp:
    """`uvicorn app.main:app`: settings are read when the server starts, not at import. A bad
    setting, forms file or database fails the start-up in one line, and uvicorn stops."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._error: str | None = None

    def _build(self) -> ASGIApp | None:
        if self._app is None and self._error is None:
            try:
                settings = Settings.load()
                configure_logging(level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT)
                self._app = create_app(settings)
            except (SettingsError, FormsError) as exc:
                self._error = f"b24-form-gateway: {exc}"
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._build()
        if app is None:
            if scope["type"] == "lifespan":
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.failed", "message": self._error or ""})
            return
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def plain_failure(message: Message) -> None:
            # Starlette reports a failed start-up with the whole traceback; an unusable
            # database is the operator's to fix, and one line says how.
            if message["type"] == "lifespan.startup.failed":
                last = (str(message.get("message") or "").strip().splitlines() or [""])[-1]
                cause, _, text = last.partition(": ")
                if cause.endswith("DatabaseUnavailable"):
                    message = {**message, "message": f"b24-form-gateway: {text}"}
            await send(message)

        await app(scope, receive, plain_failure)


app = _LazyApp()


# --------------------------------------------------------------------------- CLI


def _load_settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["HOST"] = args.host
    if getattr(args, "port", None):
        overrides["PORT"] = args.port
    return Settings.load(**overrides)


def _serve(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    configure_logging(level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT)
    # The address first: a second instance on a taken port stops here, before it migrates a
    # database or starts a worker beside the first one.
    sock = _bind(settings.HOST, settings.PORT)
    try:
        # The database next, so an unusable one is one plain line, not a startup traceback.
        asyncio.run(_prepare_database(settings.DATABASE_URL))
        gateway = create_app(settings, migrated=True)
        limits = connection_limits(settings)
        config = uvicorn.Config(
            gateway,
            http=httpserver.protocol_class(limits),
            limit_concurrency=httpserver.limit_concurrency(limits),
            log_config=None,
            access_log=False,  # client IPs and paths are not needed in the log
            proxy_headers=False,
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS),
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket for HOST:PORT, or a SettingsError saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise SettingsError(f"HOST: {host!r} is not an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SettingsError(
            f"HOST, PORT: cannot listen on {host}:{port} ({exc.strerror or exc}); another "
            "program (another gateway?) may hold it: stop it or choose another PORT"
        ) from None
    sock.set_inheritable(True)
    return sock


async def _prepare_database(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()


def standalone_emulator(*, host: str, secret: str) -> ASGIApp:
    """The emulator as `b24-form-gateway sandbox` serves it: its own origin only, on loopback
    only this machine (a wider `--host` is the caller's explicit choice), the pages' headers."""
    emulator = create_emulator_app(config=EmulatorConfig(secret=secret))
    guarded = SameOriginOnly(emulator, local_only=is_loopback_host(host))
    return SecurityHeaders(guarded, no_store=lambda _: True)


def _sandbox(args: argparse.Namespace) -> int:
    configure_logging()
    log.warning(
        "sandbox.standalone",
        extra={"webhook": f"http://{args.host}:{args.port}/rest/1/{args.secret}/"},
    )
    emulator = standalone_emulator(host=args.host, secret=args.secret)
    uvicorn.run(emulator, host=args.host, port=args.port, log_config=None)
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    configure_logging(level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT)
    if settings.sandbox:
        # A separate process cannot reach the emulator inside `serve`; refuse rather than
        # deliver into an emulator nobody sees.
        raise SettingsError(
            "B24_WEBHOOK_URL: the worker command needs a portal; in sandbox mode `serve` "
            "runs its own worker"
        )
    asyncio.run(_run_worker(settings))
    return 0


async def _run_worker(settings: Settings) -> None:
    """A delivery worker without HTTP, until SIGTERM or SIGINT (in-flight work finishes)."""
    engine = create_engine(settings.DATABASE_URL)
    await migrate(engine)
    client = build_client(settings, None)
    store = Store(engine)
    worker = Worker(store, client, worker_config(settings))
    alerter = build_alerter(settings, store, client, worker, None)
    alerts_task = asyncio.create_task(alerter.run(), name="alerts") if alerter else None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    log.info("portal.configured", extra={"portal_host": settings.webhook_host})
    try:
        await worker.run()
    finally:
        if alerter is not None and alerts_task is not None:
            await stop_alerts(alerter, alerts_task)
        await client.aclose()
        await engine.dispose()


def _migrate(args: argparse.Namespace) -> int:
    settings = _load_settings(args)
    configure_logging(level=settings.LOG_LEVEL, fmt=settings.LOG_FORMAT)

    async def run() -> None:
        engine = create_engine(settings.DATABASE_URL)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("b24-form-gateway: the database schema is up to date")
    return 0


def _admin_cli_context() -> admin.AdminContext:
    """`submissions ...`: the admin operations on DATABASE_URL, without a server."""
    settings = Settings.load()
    return admin_context(settings, Store(create_engine(settings.DATABASE_URL)))


def _check_client(settings: Settings) -> BitrixClient:
    """`check` talks to the portal, or in sandbox mode to a fresh emulator, as `serve` would."""
    if not settings.sandbox:
        return build_client(settings, None)
    emulator = Emulator(EmulatorConfig(secret=SANDBOX_SECRET, scopes=SANDBOX_SCOPES))
    return build_client(settings, create_emulator_app(emulator))


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="b24-form-gateway",
        description="Stores website form submissions and delivers them to Bitrix24 with "
        "their Sales Intelligence trace.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway (sandbox mode without a webhook)")
    serve.add_argument("--host", help="listen address (default HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default PORT or 8000)")
    serve.set_defaults(func=_serve)
    sandbox = commands.add_parser("sandbox", help="run only the Bitrix24 emulator")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8024)
    sandbox.add_argument("--secret", default=SANDBOX_SECRET, help="the webhook code it accepts")
    sandbox.set_defaults(func=_sandbox)
    worker = commands.add_parser(
        "worker", help="run only the delivery worker (several may run; one delivers at a time)"
    )
    worker.set_defaults(func=_worker)
    commands.add_parser(
        "migrate", help="create or upgrade the database schema, then exit"
    ).set_defaults(func=_migrate)
    admin.add_commands(commands, connect=_admin_cli_context)
    check.add_command(commands, client_for=_check_client)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (SettingsError, FormsError, DatabaseUnavailable) as exc:
        print(f"b24-form-gateway: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
