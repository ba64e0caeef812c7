"""`b24-form-gateway submissions list|show|retry`: the admin operations run straight on the
database (DATABASE_URL), no server needed. `show` prints the admin API's JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.admin import service
from app.admin.service import MAX_LIMIT, AdminContext
from app.store import DatabaseUnavailable, Status, database_problem, missing_sqlite_file

Connect = Callable[[], AdminContext]
Handler = Callable[[AdminContext, argparse.Namespace], Awaitable[int]]

NEXT_POLL = "a running gateway's worker picks it up at its next poll (WORKER_POLL_SECONDS)"


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], *, connect: Connect
) -> None:
    """Register `submissions ...`; `connect` loads the settings and opens the database."""
    parser = subparsers.add_parser(
        "submissions", help="list, show or retry stored submissions (on the database directly)"
    )
    commands = parser.add_subparsers(dest="submissions_command", required=True)

    listing = commands.add_parser("list", help="a table of submissions, newest first")
    listing.add_argument("--status", choices=[s.value for s in Status])
    listing.add_argument("--form", help="form id")
    listing.add_argument("--limit", type=_limit, default=50, help=f"1..{MAX_LIMIT} (default 50)")
    listing.add_argument("--offset", type=_offset, default=0)
    listing.set_defaults(func=partial(_run, _list, connect))

    show = commands.add_parser("show", help="one submission as JSON (as GET /admin/...)")
    show.add_argument("id")
    show.set_defaults(func=partial(_run, _show, connect))

    retry = commands.add_parser("retry", help="requeue a failed submission, or all of them")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="the failed submission to requeue")
    which.add_argument("--failed", action="store_true", help="requeue every failed submission")
    retry.set_defaults(func=partial(_run, _retry, connect))


def _limit(value: str) -> int:
    number = int(value)
    if not 1 <= number <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_LIMIT}")
    return number


def _offset(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


# --------------------------------------------------------------------------- running


def _run(handler: Handler, connect: Connect, args: argparse.Namespace) -> int:
    """0 done, 1 not found / not failed, 2 no usable database (settings errors: main.cli)."""
    ctx = connect()
    if (problem := _missing_database(ctx)) is not None:
        print(f"b24-form-gateway: {problem}", file=sys.stderr)
        return 2
    return asyncio.run(_guarded(handler, ctx, args))


def _missing_database(ctx: AdminContext) -> str | None:
    """A SQLite file that does not exist is a wrong DATABASE_URL, not an empty queue."""
    url = ctx.store.engine.url
    if not missing_sqlite_file(url.render_as_string(hide_password=False)):
        return None
    return f"DATABASE_URL: no database at {url.database}; point it at the gateway's database"


async def _guarded(handler: Handler, ctx: AdminContext, args: argparse.Namespace) -> int:
    try:
        return await handler(ctx, args)
    except (OSError, SQLAlchemyError) as exc:
        # The driver's own words name the problem (no such table, refused connection); they
        # never hold the URL's password.
        url = ctx.store.engine.url.render_as_string(hide_password=True)
        problem = database_problem(exc, url)
        if problem is None:
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            reason = (str(cause).splitlines() or [""])[0][:200]
            problem = DatabaseUnavailable(f"cannot use the database at DATABASE_URL ({reason})")
        print(f"b24-form-gateway: {problem}", file=sys.stderr)
        return 2
    finally:
        await ctx.store.engine.dispose()


# --------------------------------------------------------------------------- commands


async def _list(ctx: AdminContext, args: argparse.Namespace) -> int:
    page = await service.search(
        ctx,
        status=Status(args.status) if args.status else None,
        form_id=args.form,
        limit=args.limit,
        offset=args.offset,
    )
    header = ("ID", "FORM", "STATUS", "ATTEMPTS", "CREATED (UTC)", "LAST ERROR")
    rows = [
        (
            str(item["id"]),
            str(item["form_id"]),
            str(item["status"]),
            str(item["attempts"]),
            str(item["created_at"])[:19].replace("T", " "),
            str(item["last_error_code"] or "-"),
        )
        for item in page["items"]
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    first = args.offset + 1 if rows else 0
    print(f"{first}-{args.offset + len(rows)} of {page['total']}")
    return 0


async def _show(ctx: AdminContext, args: argparse.Namespace) -> int:
    shown = await service.show(ctx, args.id)
    if shown is None:
        print(f"b24-form-gateway: no submission {args.id}", file=sys.stderr)
        return 1
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


async def _retry(ctx: AdminContext, args: argparse.Namespace) -> int:
    if args.failed:
        count = await service.retry_failed(ctx)
        print(f"requeued {count} failed submission(s); {NEXT_POLL}")
        return 0
    outcome = await service.retry(ctx, args.id)
    if outcome.result == "not_found":
        print(f"b24-form-gateway: no submission {args.id}", file=sys.stderr)
        return 1
    if outcome.result == "not_failed":
        status = outcome.status.value if outcome.status else "?"
        print(
            f"b24-form-gateway: submission {args.id} is {status}; only a failed one can be retried",
            file=sys.stderr,
        )
        return 1
    print(f"requeued {args.id}; {NEXT_POLL}")
    return 0
