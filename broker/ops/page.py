"""The operators' page as one self-contained HTML document. Pure: no I/O, no JavaScript.

Everything that comes from the database (filenames and owners are user input) goes through
`html.escape` on its way into the page; the chart is inline SVG, the styles inline CSS.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Protocol

from broker.domain.model import Upload
from broker.flows.admin import Stats
from broker.ops.formatting import format_age, format_bytes

STATUSES = ("pending", "finalized", "rejected", "expired", "deleted")
REFRESH_SECONDS = 30

# Chart geometry (SVG user units; the SVG scales to the width of the page).
CHART_WIDTH = 1000
CHART_HEIGHT = 230
PLOT_LEFT = 44
PLOT_RIGHT = 12
PLOT_TOP = 14
PLOT_BOTTOM = 34


class Row(Protocol):
    """An upload as asyncpg returns it (a Record) or as a test builds it (a dict)."""

    def __getitem__(self, key: str, /) -> Any: ...


def esc(value: object) -> str:
    """Any value as HTML text, quotes included (safe in text and in attribute values)."""
    return html.escape("" if value is None else str(value), quote=True)


def _utc(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(value: datetime | str | None) -> str:
    moment = _utc(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def _relative(moment: datetime, now: datetime) -> str:
    delta = (moment - now).total_seconds()
    return f"in {format_age(delta)}" if delta > 0 else f"{format_age(-delta)} ago"


def _time_cell(value: datetime | str | None, now: datetime) -> str:
    moment = _utc(value)
    if moment is None:
        return "<td>—</td>"
    return (
        f'<td class="when"><time datetime="{esc(moment.isoformat())}">'
        f"{esc(format_time(moment))}</time>"
        f'<div class="muted small">{esc(_relative(moment, now))}</div></td>'
    )


# ---------------------------------------------------------------- counts


def _totals(by_status_and_policy: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """(uploads, bytes) per status, summed over policies; every known status is present."""
    totals = {status: (0, 0) for status in STATUSES}
    for row in by_status_and_policy:
        count, size = totals.get(row["status"], (0, 0))
        totals[row["status"]] = (count + int(row["uploads"]), size + int(row["bytes"]))
    return totals


def _counts_section(stats: Mapping[str, Any]) -> str:
    rows = list(stats.get("by_status_and_policy") or [])
    totals = _totals(rows)
    stuck = int(stats.get("stuck") or 0)
    oldest = stats.get("oldest_pending_age_seconds")
    cards = []
    for status, (count, size) in totals.items():
        cards.append(
            f'<div class="card status-{esc(status)}" data-testid="count-{esc(status)}">'
            f'<div class="card-label">{esc(status)}</div>'
            f'<div class="card-value">{count:,}</div>'
            f'<div class="card-sub">{esc(format_bytes(size))}</div></div>'
        )
    cards.append(
        f'<div class="card{" alert" if stuck else ""}" data-testid="count-stuck">'
        f'<div class="card-label">stuck</div><div class="card-value">{stuck:,}</div>'
        f'<div class="card-sub">pending past deadline</div></div>'
    )
    cards.append(
        '<div class="card" data-testid="oldest-pending">'
        '<div class="card-label">oldest pending</div>'
        f'<div class="card-value">{esc(format_age(oldest) if oldest is not None else "—")}</div>'
        '<div class="card-sub">age</div></div>'
    )
    if rows:
        body = "".join(
            f'<tr><td><span class="badge status-{esc(row["status"])}">{esc(row["status"])}'
            f"</span></td><td>{esc(row['policy'])}</td>"
            f'<td class="num">{int(row["uploads"]):,}</td>'
            f'<td class="num">{esc(format_bytes(row["bytes"]))}</td></tr>'
            for row in rows
        )
    else:
        body = '<tr><td colspan="4" class="empty">No uploads yet.</td></tr>'
    return (
        '<section id="counts" aria-labelledby="counts-title">'
        '<h2 id="counts-title">Uploads by status</h2>'
        f'<div class="cards">{"".join(cards)}</div>'
        "<details open><summary>By status and policy</summary>"
        '<table id="by-status-policy"><thead><tr><th scope="col">Status</th>'
        '<th scope="col">Policy</th><th scope="col" class="num">Uploads</th>'
        f'<th scope="col" class="num">Bytes</th></tr></thead><tbody>{body}</tbody></table>'
        "</details></section>"
    )


# ---------------------------------------------------------------- pending


def _pending_section(pending: Sequence[Row], total_pending: int, now: datetime) -> str:
    rows = []
    stuck_count = 0
    for row in pending:
        created = _utc(row["created_at"])
        expires = _utc(row["expires_at"])
        stuck = expires is not None and expires <= now
        stuck_count += stuck
        age = format_age((now - created).total_seconds()) if created else "—"
        label = (
            '<span class="badge stuck-label" title="past its deadline">stuck</span>'
            if stuck
            else ""
        )
        rows.append(
            f'<tr class="{"stuck" if stuck else "waiting"}" data-upload-id="{esc(row["id"])}"'
            f"{' data-stuck' if stuck else ''}>"
            f'<td class="mono">{esc(row["id"])}{label}</td>'
            f"<td>{esc(row['owner'])}</td><td>{esc(row['policy'])}</td>"
            f'<td class="filename">{esc(row["filename"])}</td>'
            f'<td class="num">{esc(format_bytes(row["size"]))}</td>'
            f'<td class="num" data-testid="age">{esc(age)}</td>'
            f"{_time_cell(row['expires_at'], now)}</tr>"
        )
    if not rows:
        rows.append('<tr><td colspan="7" class="empty">Nothing is pending.</td></tr>')
    shown = len(pending)
    if total_pending > shown:
        note = f"The oldest {shown:,} of {total_pending:,} pending uploads, oldest first."
    elif shown:
        note = f"{shown:,} pending upload{'' if shown == 1 else 's'}, oldest first."
    else:
        note = "No pending uploads."
    if stuck_count:
        note += (
            " 1 is past its deadline, marked stuck."
            if stuck_count == 1
            else f" {stuck_count:,} are past their deadline, marked stuck."
        )
    return (
        '<section id="pending-section" aria-labelledby="pending-title">'
        '<h2 id="pending-title">Pending</h2>'
        f'<p class="note">{esc(note)}</p><div class="scroll">'
        '<table id="pending"><thead><tr><th scope="col">Upload</th><th scope="col">Owner</th>'
        '<th scope="col">Policy</th><th scope="col">Filename</th>'
        '<th scope="col" class="num">Size</th><th scope="col" class="num">Age</th>'
        f'<th scope="col">Expires</th></tr></thead><tbody>{"".join(rows)}</tbody></table>'
        "</div></section>"
    )


# ---------------------------------------------------------------- chart


def _axis_step(peak: int) -> int:
    """An integer tick step of 1, 2 or 5 times a power of ten giving about four ticks."""
    rough = max(1.0, peak / 4)
    power = 10 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if factor * power >= rough:
            return int(factor * power)
    raise AssertionError("unreachable")


def render_chart(hourly: Sequence[Mapping[str, Any]]) -> str:
    """Created and finalized uploads per hour as an SVG bar chart with a legend."""
    hours = list(hourly)
    peak = max([int(h["created"]) for h in hours] + [int(h["finalized"]) for h in hours] + [0])
    step = _axis_step(peak)
    top = max(step, step * math.ceil(peak / step))
    plot_width = CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT
    plot_height = CHART_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    base = PLOT_TOP + plot_height
    parts = []
    for tick in range(0, top + 1, step):
        y = base - plot_height * tick / top
        parts.append(
            f'<line class="grid" x1="{PLOT_LEFT}" x2="{CHART_WIDTH - PLOT_RIGHT}" '
            f'y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{PLOT_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{tick}</text>"
        )
    slot = plot_width / max(1, len(hours))
    bar = max(1.0, slot * 0.36)
    for index, hour in enumerate(hours):
        moment = _utc(hour["hour"])
        label = moment.strftime("%H:00") if moment else "?"
        when = moment.strftime("%Y-%m-%d %H:00 UTC") if moment else "?"
        created, finalized = int(hour["created"]), int(hour["finalized"])
        x = PLOT_LEFT + index * slot
        summary = f"{when}: {created} created, {finalized} finalized"
        group = [
            f'<g class="hour" data-hour="{esc(moment.isoformat() if moment else "")}" '
            f'role="listitem" aria-label="{esc(summary)}">',
            f'<rect class="slot" x="{x:.1f}" y="{PLOT_TOP}" width="{slot:.1f}" '
            f'height="{plot_height}"><title>{esc(summary)}</title></rect>',
        ]
        for offset, series, value in ((0, "created", created), (1, "finalized", finalized)):
            height = plot_height * value / top
            group.append(
                f'<rect class="bar {series}" x="{x + slot * 0.12 + offset * bar:.1f}" '
                f'y="{base - height:.1f}" width="{bar:.1f}" height="{height:.1f}">'
                f"<title>{esc(f'{when}: {value} {series}')}</title></rect>"
            )
        if index % 3 == 0 or index == len(hours) - 1:
            group.append(
                f'<text class="tick" x="{x + slot / 2:.1f}" y="{base + 16}" '
                f'text-anchor="middle">{esc(label)}</text>'
            )
        group.append("</g>")
        parts.append("".join(group))
    total_created = sum(int(h["created"]) for h in hours)
    total_finalized = sum(int(h["finalized"]) for h in hours)
    description = (
        f"Uploads created and finalized in each of the last {len(hours)} hours (UTC): "
        f"{total_created} created, {total_finalized} finalized in all."
    )
    return (
        f'<svg id="hourly-chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
        'xmlns="http://www.w3.org/2000/svg" role="group" '
        'aria-labelledby="chart-title chart-desc">'
        '<title id="chart-title">Uploads and finalizations per hour</title>'
        f'<desc id="chart-desc">{esc(description)}</desc>'
        f'<line class="axis" x1="{PLOT_LEFT}" x2="{CHART_WIDTH - PLOT_RIGHT}" '
        f'y1="{base}" y2="{base}"/>'
        f'<g role="list">{"".join(parts)}</g></svg>'
    )


def _chart_section(hourly: Sequence[Mapping[str, Any]]) -> str:
    created = sum(int(h["created"]) for h in hourly)
    finalized = sum(int(h["finalized"]) for h in hourly)
    return (
        '<section id="activity" aria-labelledby="activity-title">'
        '<h2 id="activity-title">Last 24 hours <span class="muted small">(UTC)</span></h2>'
        '<ul class="legend" aria-label="Legend">'
        f'<li><span class="swatch created"></span>created ({created:,})</li>'
        f'<li><span class="swatch finalized"></span>finalized ({finalized:,})</li></ul>'
        f'<div class="chart">{render_chart(hourly)}</div></section>'
    )


# ---------------------------------------------------------------- reconciler


def _counts_text(counts: Any) -> str:
    if not isinstance(counts, Mapping) or not counts:
        return "—"
    return " · ".join(f"{key} {value}" for key, value in sorted(counts.items()))


def _runs_section(runs: Sequence[Mapping[str, Any]], now: datetime) -> str:
    rows = []
    for run in runs:
        started, finished = _utc(run["started_at"]), _utc(run["finished_at"])
        took = f"{(finished - started).total_seconds():.2f} s" if started and finished else "—"
        rows.append(
            "<tr>"
            f"{_time_cell(run['started_at'], now)}"
            f'<td class="num">{esc(took)}</td>'
            f"<td>{esc(run['trigger'])}</td>"
            f"<td>{'dry run' if run['dry_run'] else 'applied'}</td>"
            f'<td class="counts">{esc(_counts_text(run["counts"]))}</td></tr>'
        )
    if not rows:
        rows.append('<tr><td colspan="5" class="empty">The reconciler has not run yet.</td></tr>')
    return (
        '<section id="reconciler" aria-labelledby="reconciler-title">'
        '<h2 id="reconciler-title">Last reconciler runs</h2><div class="scroll">'
        '<table id="reconciler-runs"><thead><tr><th scope="col">Started</th>'
        '<th scope="col" class="num">Took</th><th scope="col">Trigger</th>'
        '<th scope="col">Mode</th><th scope="col">Counts</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


# ---------------------------------------------------------------- page

STYLE = """
:root { --fg:#1f2933; --muted:#66737f; --line:#e3e8ee; --bg:#f6f8fa; --card:#fff;
  --created:#2f6fdb; --finalized:#e07b12; --stuck:#b42318; --stuck-bg:#fdecea; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
header { background:#17212b; color:#fff; padding:14px 28px; display:flex;
  align-items:baseline; gap:16px; flex-wrap:wrap; }
header h1 { font-size:18px; margin:0; font-weight:600; }
header .meta { color:#b8c4cf; font-size:13px; }
main { max-width:1200px; margin:0 auto; padding:20px 28px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:16px 20px; margin-bottom:20px; }
h2 { font-size:15px; margin:0 0 12px; }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(130px,1fr)); gap:10px;
  margin-bottom:14px; }
.card { border:1px solid var(--line); border-radius:6px; padding:10px 12px;
  border-top:3px solid #9aa5b1; }
.card.status-pending { border-top-color:#2f6fdb; }
.card.status-finalized { border-top-color:#1e8e3e; }
.card.status-rejected { border-top-color:#b42318; }
.card.status-expired { border-top-color:#8a6d00; }
.card.status-deleted { border-top-color:#6b7280; }
.card.alert { border-top-color:var(--stuck); background:var(--stuck-bg); }
.card-label { font-size:12px; text-transform:uppercase; letter-spacing:.04em;
  color:var(--muted); }
.card-value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.card-sub { font-size:12px; color:var(--muted); }
details summary { cursor:pointer; color:var(--muted); margin-bottom:8px; }
table { border-collapse:collapse; width:100%; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { font-size:12px; text-transform:uppercase; letter-spacing:.03em; color:var(--muted);
  font-weight:600; background:#fafbfc; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
td.mono { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px;
  white-space:nowrap; }
td.filename { overflow-wrap:anywhere; min-width:12em; }
td.when { white-space:nowrap; }
.small { font-size:12px; }
td.empty { color:var(--muted); text-align:center; padding:16px; }
.muted { color:var(--muted); }
.note { color:var(--muted); margin:-4px 0 10px; }
.scroll { overflow-x:auto; }
tr.stuck td { background:var(--stuck-bg); }
tr.stuck td:first-child { box-shadow:inset 4px 0 0 var(--stuck); }
.badge { display:inline-block; padding:0 7px; border-radius:9px; font-size:12px;
  background:#eef1f4; color:#374151; }
.badge.stuck-label { background:var(--stuck); color:#fff; font-weight:600; margin-left:8px;
  font-family:system-ui,sans-serif; text-transform:uppercase; letter-spacing:.04em;
  font-size:11px; }
.legend { list-style:none; padding:0; margin:0 0 6px; display:flex; gap:18px;
  font-size:13px; }
.swatch { display:inline-block; width:12px; height:12px; border-radius:2px;
  margin-right:6px; vertical-align:-1px; }
.swatch.created, .bar.created { background:var(--created); fill:var(--created); }
.swatch.finalized, .bar.finalized { background:var(--finalized); fill:var(--finalized); }
.chart { overflow-x:auto; }
.chart svg { width:100%; min-width:640px; height:auto; display:block; }
.chart .grid { stroke:var(--line); stroke-width:1; }
.chart .axis { stroke:#9aa5b1; stroke-width:1; }
.chart .tick { font-size:11px; fill:var(--muted); }
.chart .slot { fill:transparent; }
.chart .hour:hover .slot { fill:#eef3fb; }
td.counts { font-size:13px; }
.badge.status-pending { background:#e3ecfb; color:#1d4ea8; }
.badge.status-finalized { background:#e2f3e7; color:#166c30; }
.badge.status-rejected { background:#fdecea; color:#912018; }
.badge.status-expired { background:#fbf3d9; color:#6b5400; }
footer { color:var(--muted); font-size:12px; text-align:center; }
@media (max-width: 640px) { header, main { padding-left:12px; padding-right:12px; }
  section { padding:12px; } }
"""


def render_ops_page(stats: Stats, pending_uploads: Sequence[Upload], now: datetime) -> str:
    return _render_ops_page(_as_mapping(stats), [u._asdict() for u in pending_uploads], now)


def _as_mapping(stats: Stats) -> dict[str, Any]:
    return {
        "by_status_and_policy": [asdict(c) for c in stats.by_status_and_policy],
        "pending": stats.pending.pending,
        "stuck": stats.pending.stuck,
        "oldest_pending_age_seconds": stats.oldest_pending_age_seconds,
        "hourly": [asdict(h) for h in stats.hourly],
        "reconciler_runs": [asdict(r) for r in stats.reconciler_runs],
    }


def _render_ops_page(stats: Mapping[str, Any], pending: Sequence[Row], now: datetime) -> str:
    """The whole operators' page for `Admin.stats()` and the oldest pending uploads."""
    now = _utc(now) or datetime.now(UTC)
    total_pending = int(stats.get("pending") or 0)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>broker · operations</title><style>{STYLE}</style></head><body>"
        "<header><h1>broker · operations</h1>"
        f'<span class="meta" id="generated">as of <time datetime="{esc(now.isoformat())}">'
        f"{esc(format_time(now))}</time> · refreshes every {REFRESH_SECONDS} s</span></header>"
        "<main>"
        f"{_counts_section(stats)}"
        f"{_chart_section(list(stats.get('hourly') or []))}"
        f"{_pending_section(pending, max(total_pending, len(pending)), now)}"
        f"{_runs_section(list(stats.get('reconciler_runs') or []), now)}"
        "<footer>Data: <code>GET /v1/admin/stats</code> and "
        "<code>GET /v1/admin/uploads?status=pending&amp;sort=created_at</code>.</footer>"
        "</main></body></html>\n"
    )


def render_message_page(title: str, body: str, status: int) -> str:
    """A small page for 401/403: `body` is trusted HTML; the caller escapes what it puts in."""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex">'
        f"<title>{esc(title)} · broker operations</title><style>{STYLE}"
        "main { max-width:720px; } pre { background:#17212b; color:#e6edf3; padding:10px 12px;"
        " border-radius:6px; overflow-x:auto; }</style></head><body>"
        "<header><h1>broker · operations</h1></header><main>"
        f'<section id="message" data-status="{status}"><h2>{esc(title)}</h2>{body}</section>'
        "</main></body></html>\n"
    )
