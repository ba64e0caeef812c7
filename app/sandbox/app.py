"""The emulator's HTTP face: the webhook endpoint `/rest/{user_id}/{secret}/{method}` with PHP-style
parameter decoding and fault injection, the `/_control/*` JSON API for tests, and the record viewer.
Works standalone or mounted under a prefix (links use the ASGI `root_path`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.sandbox.emulator import Emulator, EmulatorConfig, LateRun
from app.sandbox.errors import wrong_auth
from app.sandbox.faults import ResponseLost
from app.sandbox.phpjson import php_json
from app.sandbox.phpquery import parse_pairs, parse_str
from app.sandbox.viewer import render_page

_Updater = Callable[[Mapping[str, object]], dict[str, object]]
# Where the server's own `send` is kept, to reach the connection (see DroppedConnection).
_RAW_SEND = "sandbox.raw_send"
_BUCKET_BODY = 'body must be {"full": true} or {"full": false}'


class _EmulatorApp(Starlette):
    """Starlette that remembers the server's `send` before its middleware wraps it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault(_RAW_SEND, send)
        await super().__call__(scope, receive, send)


def create_emulator_app(
    emulator: Emulator | None = None, *, config: EmulatorConfig | None = None
) -> Starlette:
    """The emulator as an ASGI app; `app.state.emulator` is the Emulator it serves."""
    if emulator is not None and config is not None:
        raise ValueError("pass an emulator or a config, not both")
    emu = emulator if emulator is not None else Emulator(config)
    pending: set[asyncio.Task[None]] = set()  # late runs, referenced until they finish

    async def run_late(late: LateRun) -> None:
        await asyncio.sleep(late.delay)
        emu.run_late(late)

    async def rest(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        secret = request.path_params["secret"]
        method = request.path_params["method"]
        if emu.faults.latency_ms > 0:
            await asyncio.sleep(emu.faults.latency_ms / 1000)
        query = request.scope.get("query_string", b"").decode("latin-1")
        path = request.url.path + (f"?{query}" if query else "")
        location = emu.redirect(method, request.headers.get("host", ""), path)
        if location is not None:
            return RedirectResponse(location, status_code=302)
        failure = emu.injected_failure(method)
        if failure is not None:
            return Response(failure.body, failure.status, media_type=failure.content_type)
        params = await read_params(request)
        outcome = emu.http_call(user_id, secret, method, params)
        if outcome.late is not None:
            task = asyncio.create_task(run_late(outcome.late))
            pending.add(task)
            task.add_done_callback(pending.discard)
            return DroppedConnection()
        body = json.dumps(php_json(outcome.body), ensure_ascii=False, separators=(",", ":"))
        content = body.encode()
        if not outcome.executed:
            return Response(content, outcome.status, media_type="application/json")
        lost = emu.take_lost_response()  # before any await: it marks this request's log entry
        if emu.faults.hang_seconds > 0:
            await asyncio.sleep(emu.faults.hang_seconds)
        if lost:
            return DroppedResponse(content)
        return Response(content, outcome.status, media_type="application/json")

    async def rest_without_webhook(request: Request) -> Response:
        # `/rest/SECRET/method` (user id forgotten) and other shapes: no webhook matches (§1.1).
        error = wrong_auth()
        return JSONResponse(error.body(), error.status)

    async def viewer(request: Request) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        config = emu.config
        webhook_path = f"/rest/{config.user_id}/{config.secret}/"
        return HTMLResponse(render_page(emu.snapshot(), base=base, webhook_path=webhook_path))

    async def state(request: Request) -> Response:
        return JSONResponse(emu.snapshot())

    async def reset(request: Request) -> Response:
        emu.reset()
        return JSONResponse({"ok": True})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(emu.faults.snapshot())
        return await _apply(request, emu.update_faults)

    async def config_endpoint(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(emu.config_snapshot())
        return await _apply(request, emu.update_config)

    async def bucket(request: Request) -> Response:
        # {"full": true} fills the leaky bucket to its burst, {"full": false} empties it.
        if request.method == "POST":
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict) or set(body) != {"full"}:
                return JSONResponse({"error": _BUCKET_BODY}, 400)
            if body["full"] is True:
                emu.fill_bucket()
            elif body["full"] is False:
                emu.empty_bucket()
            else:
                return JSONResponse({"error": _BUCKET_BODY}, 400)
        return JSONResponse(emu.bucket_snapshot())

    app = _EmulatorApp(
        routes=[
            Route("/", viewer, methods=["GET"]),
            Route("/records.json", state, methods=["GET"]),
            Route("/rest/{user_id}/{secret}/{method}", rest, methods=["GET", "POST"]),
            Route("/rest/{rest:path}", rest_without_webhook, methods=["GET", "POST"]),
            Route("/_control/state", state, methods=["GET"]),
            Route("/_control/reset", reset, methods=["POST"]),
            Route("/_control/faults", faults, methods=["GET", "POST"]),
            Route("/_control/config", config_endpoint, methods=["GET", "POST"]),
            Route("/_control/bucket", bucket, methods=["GET", "POST"]),
        ]
    )
    app.state.emulator = emu
    return app


async def read_params(request: Request) -> dict[str, object]:
    """Query string and body merged (body wins), decoded as the PHP server would (§1.2).

    JSON bodies keep their types; form, multipart and query data go through `parse_str`.
    A body that cannot be decoded counts as no parameters (the method then says what is missing).
    """
    query = parse_str(request.scope.get("query_string", b"").decode("utf-8", "replace"))
    params: dict[str, object] = dict(query)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = json.loads(await request.body(), parse_constant=_reject_constant)
        except ValueError:
            body = None
        if isinstance(body, dict):
            params.update(body)
    elif content_type == "application/x-www-form-urlencoded":
        params.update(parse_str((await request.body()).decode("utf-8", "replace")))
    elif content_type == "multipart/form-data":
        try:
            form = await request.form()
        except (HTTPException, ValueError):
            return params
        pairs = [
            (name, value if isinstance(value, str) else (value.filename or ""))
            for name, value in form.multi_items()
        ]
        params.update(parse_pairs(pairs))
    return params


class DroppedResponse(Response):
    """Sends the status line and a Content-Length, then raises, so the server drops the connection
    mid-answer: the call is committed but the client never learns its outcome (§3)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(self.body)).encode()),
                ],
            }
        )
        raise ResponseLost("sandbox fault: answer dropped after the call was committed")


class DroppedConnection(Response):
    """Closes the connection before any answer, not even a status line: the request was cut off
    on arrival (fault "late"; docs/bitrix24.md §0 fact 15). Under uvicorn the server's own `send`
    is bound to the request cycle, which holds the transport; elsewhere (in-process ASGI) it
    raises ResponseLost before the response starts."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(scope.get(_RAW_SEND), "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None or not hasattr(transport, "close"):
            raise ResponseLost("sandbox fault: request cut off before any answer")
        transport.close()
        await asyncio.sleep(0)  # the server sees the disconnect and sends nothing


async def _apply(request: Request, update: _Updater) -> Response:
    try:
        changes = await request.json()
    except ValueError:
        return JSONResponse({"error": "body must be a JSON object"}, 400)
    if not isinstance(changes, dict):
        return JSONResponse({"error": "body must be a JSON object"}, 400)
    try:
        return JSONResponse(update(changes))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # NaN/Infinity would make the answer invalid JSON
