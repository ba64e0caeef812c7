"""A server-rendered SVG chart of submissions received and delivered per hour, with the backlog.

Pure: data in, SVG text out. No script and nothing fetched, so it renders on hosts with no
internet access; every text is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 28, 30
RECEIVED, DELIVERED = "#7aa6d8", "#2f855a"


def activity_svg(
    buckets: Sequence[tuple[datetime, int, int]], *, backlog: int, failed: int, title: str
) -> str:
    """Bars: received (light) and delivered (dark) per bucket; the backlog in the caption."""
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    peak = max([1, *(max(r, d) for _, r, d in buckets)])
    slot = plot_w / max(len(buckets), 1)
    bar = max(slot / 2 - 1, 1)
    alarm = "#c53030" if failed else "#333"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{html.escape(title)}" '
        'font-family="system-ui,sans-serif" font-size="11">',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<text x="{WIDTH - RIGHT}" y="16" text-anchor="end" fill="{alarm}">'
        f"backlog {backlog} · failed {failed}</text>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#666">'
            f"{round(peak * fraction)}</text>"
        )
    for i, (start, received, delivered) in enumerate(buckets):
        x = LEFT + i * slot
        for offset, value, colour, name in (
            (0.0, received, RECEIVED, "received"),
            (bar + 1, delivered, DELIVERED, "delivered"),
        ):
            h = plot_h * value / peak
            parts.append(
                f'<rect x="{x + offset:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{start:%H:%M} {name} {value}'
                "</title></rect>"
            )
        if i % max(len(buckets) // 6, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 10}" fill="#666">{start:%H:%M}</text>')
    legend = WIDTH // 2 - 40
    parts.append(
        f'<rect x="{legend}" y="8" width="8" height="8" fill="{RECEIVED}"/>'
        f'<text x="{legend + 11}" y="16">received</text>'
        f'<rect x="{legend + 70}" y="8" width="8" height="8" fill="{DELIVERED}"/>'
        f'<text x="{legend + 81}" y="16">delivered</text>'
    )
    parts.append("</svg>")
    return "".join(parts)
