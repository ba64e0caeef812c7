"""The record viewer page: created CRM records per type, newest first, with their raw TRACE and
linked traces, the traces table, and the notifications users were sent. Server-rendered HTML,
inline CSS, no script; every value is escaped (records hold visitors' input).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from html import escape

from app.sandbox.entities import MULTIFIELDS, TRACE_IDS, UTM_FIELDS

ROWS_PER_TYPE = 200
_TITLES = {
    "lead": "Leads",
    "deal": "Deals",
    "contact": "Contacts",
    "company": "Companies",
    "quote": "Quotes",
}
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1f2328}
h1{font-size:1.4rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.6rem 0 .4rem}
.note{color:#57606a;margin:.2rem 0}code{background:#f3f4f6;padding:0 .25rem;border-radius:3px}
nav a{margin-right:1rem}table{border-collapse:collapse;width:100%;table-layout:fixed}
th,td{border:1px solid #d0d7de;padding:.3rem .45rem;vertical-align:top;text-align:left;
overflow-wrap:anywhere}th{background:#f6f8fa}
pre{margin:0;white-space:pre-wrap;word-break:break-all;font-size:12px;max-height:12rem;overflow:auto}
.empty{color:#57606a;font-style:italic}
"""


def render_page(state: dict[str, object], *, base: str, webhook_path: str) -> str:
    records = state.get("records")
    traces = state.get("traces")
    by_type = records if isinstance(records, dict) else {}
    trace_list = traces if isinstance(traces, list) else []
    notifications = _dicts(state.get("notifications"))
    sections = [_records_section(name, _dicts(by_type.get(name))) for name in _TITLES]
    nav = " ".join(
        f'<a href="#{name}">{title} ({len(_dicts(by_type.get(name)))})</a>'
        for name, title in _TITLES.items()
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<title>Bitrix24 sandbox</title>"
        f"<style>{_CSS}</style></head><body>"
        "<h1>Bitrix24 sandbox</h1>"
        '<p class="note">An in-memory Bitrix24 emulator: nothing here reaches a real portal, '
        "and everything is forgotten on restart.</p>"
        f'<p class="note">Webhook: <code>{escape(base + webhook_path)}</code> · '
        f'<a href="{escape(base)}/_control/state">state as JSON</a></p>'
        f'<nav>{nav} <a href="#traces">Traces ({len(trace_list)})</a> '
        f'<a href="#notifications">Notifications ({len(notifications)})</a></nav>'
        + "".join(sections)
        + _traces_section(_dicts(trace_list))
        + _notifications_section(notifications)
        + "</body></html>"
    )


def _records_section(name: str, records: list[dict[str, object]]) -> str:
    head = (
        f'<h2 id="{name}">{_TITLES[name]}</h2>'
        "<table><colgroup><col style=width:4rem><col><col style=width:10rem><col>"
        "<col><col style=width:6rem><col style=width:30%></colgroup>"
        "<tr><th>ID</th><th>Title / name</th><th>ORIGIN_ID</th><th>UTM</th>"
        "<th>Phone / e-mail</th><th>Traces</th><th>TRACE as received</th></tr>"
    )
    if not records:
        return head + '<tr><td colspan=7 class="empty">none yet</td></tr></table>'
    newest = sorted(records, key=lambda r: _int(r.get("ID")), reverse=True)[:ROWS_PER_TYPE]
    rows = "".join(
        "<tr>"
        f"<td>{_text(r.get('ID'))}</td>"
        f"<td>{_text(_title(r))}</td>"
        f"<td>{_text(r.get('ORIGIN_ID'))}<br><small>{_text(r.get('ORIGINATOR_ID'))}</small></td>"
        f"<td>{_lines(f'{code}={r[code]}' for code in UTM_FIELDS if r.get(code))}</td>"
        f"<td>{_lines(_communications(r))}</td>"
        f"<td>{_text(', '.join(str(i) for i in _list(r.get(TRACE_IDS))))}</td>"
        f"<td>{_raw(r.get('TRACE')) if 'TRACE' in r else _empty('absent')}</td>"
        "</tr>"
        for r in newest
    )
    return head + rows + "</table>"


def _traces_section(traces: list[dict[str, object]]) -> str:
    head = (
        '<h2 id="traces">Traces</h2>'
        "<table><colgroup><col style=width:4rem><col style=width:14rem>"
        "<col style=width:12rem><col></colgroup>"
        "<tr><th>ID</th><th>Linked to</th><th>Created by</th><th>TRACE</th></tr>"
    )
    if not traces:
        return head + '<tr><td colspan=4 class="empty">none yet</td></tr></table>'
    newest = sorted(traces, key=lambda t: _int(t.get("ID")), reverse=True)
    rows = "".join(
        "<tr>"
        f"<td>{_text(t.get('ID'))}</td>"
        f"<td>{_lines(_entity_refs(t.get('ENTITIES')))}</td>"
        f"<td>{_text(t.get('CREATED_BY_METHOD'))}</td>"
        f"<td>{_raw(t.get('TRACE')) if t.get('TRACE') is not None else _empty('none')}</td>"
        "</tr>"
        for t in newest
    )
    return head + rows + "</table>"


def _notifications_section(notifications: list[dict[str, object]]) -> str:
    head = (
        '<h2 id="notifications">Notifications</h2>'
        '<p class="note">Sent with <code>im.notify.system.add</code> (the gateway\'s alerts).</p>'
        "<table><colgroup><col style=width:4rem><col style=width:5rem>"
        "<col style=width:12rem><col></colgroup>"
        "<tr><th>ID</th><th>To user</th><th>Sent</th><th>Message</th></tr>"
    )
    if not notifications:
        return head + '<tr><td colspan=4 class="empty">none yet</td></tr></table>'
    newest = sorted(notifications, key=lambda n: _int(n.get("ID")), reverse=True)
    rows = "".join(
        "<tr>"
        f"<td>{_text(n.get('ID'))}</td>"
        f"<td>{_text(n.get('USER_ID'))}</td>"
        f"<td>{_text(n.get('DATE_CREATE'))}</td>"
        f"<td>{_raw(n.get('MESSAGE'))}</td>"
        "</tr>"
        for n in newest[:ROWS_PER_TYPE]
    )
    return head + rows + "</table>"


def _title(record: dict[str, object]) -> str:
    if record.get("TITLE"):
        return str(record["TITLE"])
    names = (record.get(k) for k in ("NAME", "SECOND_NAME", "LAST_NAME"))
    return " ".join(str(n) for n in names if n)


def _communications(record: dict[str, object]) -> Iterable[str]:
    for code in MULTIFIELDS:
        for item in _dicts(record.get(code)):
            yield f"{code} {item.get('VALUE_TYPE')}: {item.get('VALUE')}"


def _entity_refs(value: object) -> Iterable[str]:
    for item in _dicts(value):
        yield f"{item.get('TYPE')} {item.get('ID')}"


def _raw(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"<pre>{escape(text)}</pre>"


def _lines(values: Iterable[str]) -> str:
    return "<br>".join(escape(v) for v in values)


def _text(value: object) -> str:
    return "" if value is None else escape(str(value))


def _empty(label: str) -> str:
    return f'<span class="empty">{label}</span>'


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _dicts(value: object) -> list[dict[str, object]]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
