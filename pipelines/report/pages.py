"""The report's HTML: the index of sessions and one page per session.

Pages are static files with their data inline (a JSON ``<script>`` block: ``fetch`` of a
local file is refused under ``file://``) and one shared script and style sheet written
here (``static/``), so they open offline, from ``file://`` or any static host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

STATIC_DIR = "static"
STATIC_FILES = ("report.css", "report.js")
STATIC_SOURCE = Path(__file__).with_name("static")


@dataclass(frozen=True)
class Column:
    """One index column: its heading and how its cells sort (``num`` or ``text``)."""

    heading: str
    sort: str = "text"


INDEX_COLUMNS = (Column("Session"), Column("Participant"), Column("Study"),
                 Column("Tasks", "num"), Column("Duration", "num"), Column("Status"),
                 Column("Face coverage", "num"), Column("Speech coverage", "num"),
                 Column("Dominant emotion"), Column("Moments", "num"))


def _json_block(element_id: str, data) -> str:
    # "</" inside a script element would end it early.
    text = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    return f'<script id="{element_id}" type="application/json">{text}</script>'


def _head(title: str, prefix: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="{prefix}{STATIC_DIR}/report.css"></head>')


def _script(prefix: str) -> str:
    return f'<script src="{prefix}{STATIC_DIR}/report.js"></script>'


def index_page(out: str, rows: list[dict], notes: list[str], generated: str) -> str:
    """The sortable table of sessions.  Each row dict has ``cells`` (one per
    ``INDEX_COLUMNS``: ``(text, sort_key, href)``), ``status_ok`` and ``error``."""
    header = "".join(f'<th data-sort="{c.sort}" tabindex="0">{escape(c.heading)}</th>'
                     for c in INDEX_COLUMNS)
    body = []
    for row in rows:
        cells = []
        for text, key, href in row["cells"]:
            shown = f'<a href="{escape(href)}">{escape(text)}</a>' if href else escape(text)
            cells.append(f'<td data-key="{escape(str(key))}">{shown}</td>')
        if row["error"]:
            cells[5] = cells[5].replace("</td>", f'<div class="error">{escape(row["error"])}'
                                                 "</div></td>")
        body.append(f'<tr class="{"" if row["status_ok"] else "failed"}">{"".join(cells)}'
                    "</tr>")
    notices = "".join(f'<p class="notice">{escape(n)}</p>' for n in notes)
    table = (f'<table id="sessions" class="sortable"><thead><tr>{header}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table>' if rows else "")
    return (f"{_head('emoray sessions', '')}<body class='index'>"
            f"<header><h1>Sessions</h1><p class='source'>{escape(out)} · {len(rows)} "
            f"session(s) · made {escape(generated)} · "
            f'<a href="sessions.xlsx">sessions.xlsx</a></p></header>'
            f"{notices}{table}{_script('')}</body></html>")


def session_page(title: str, facts: list[tuple[str, str]], problems: list[str],
                 media_path: str | None, media_note: str, exports: list[str],
                 data: dict | None) -> str:
    """One session: its facts, the player (or why there is none), the timeline lanes the
    script draws from ``data`` (or why there is no timeline), its moments and exports."""
    prefix = "../"
    fact_list = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    notices = "".join(f'<p class="notice">{escape(p)}</p>' for p in problems)
    if media_path:
        player = (f'<video id="player" controls preload="auto" playsinline '
                  f'src="{escape(prefix + media_path)}"></video>'
                  f'<p class="media-note">{escape(media_note)}</p>')
    else:
        player = f'<p id="no-video" class="notice">No recording to play: {escape(media_note)}</p>'
    links = " · ".join(f'<a href="{escape(e)}">{escape(Path(e).name)}</a>' for e in exports)
    timeline = ('<section id="timeline" aria-label="timeline"></section>'
                '<section id="moments"></section>' if data else
                '<p id="no-timeline" class="notice">No timeline to show for this session.</p>')
    return (f"{_head(title, prefix)}<body class='session'>"
            f'<header><a href="{prefix}index.html">← all sessions</a><h1>{escape(title)}</h1>'
            f"</header>{notices}<div class='top'><section id='media'>{player}</section>"
            f"<aside><dl>{fact_list}</dl><p class='exports'>Exports: {links or 'none'}</p>"
            f"</aside></div>{timeline}"
            f"{_json_block('session-data', data) if data else ''}"
            f"<p class='keys'>Keys: space plays and pauses; n / p: next / previous moment; "
            f"click the timeline to seek.</p>{_script(prefix)}</body></html>")
