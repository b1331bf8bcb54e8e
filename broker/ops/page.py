"""The operators' pages, rendered from the Jinja2 templates in templates/. Pure: no I/O but
reading the package's own files, no JavaScript.

Autoescaping is on for every .html template, so filenames and owners (user input) are
escaped on their way into the page; no HTML is built in Python. The styles live in
static/ops.css, which the pages link, so their Content-Security-Policy can forbid inline
styles. The chart's geometry is computed here and drawn by the template as inline SVG.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

import jinja2

from broker.domain.downloads import DownloadRecord
from broker.domain.model import HourlyCount, StatusPolicyCount, Upload, UploadStatus
from broker.flows.admin import Stats
from broker.flows.app_webhooks import DeliveriesOverview
from broker.ops.formatting import format_age, format_bytes

REFRESH_SECONDS = 30
STYLESHEET = "ops.css"

# Chart geometry (SVG user units; the SVG scales to the width of the page).
CHART_WIDTH = 1000
CHART_HEIGHT = 230
PLOT_LEFT = 44
PLOT_RIGHT = 12
PLOT_TOP = 14
PLOT_BOTTOM = 34


# ---------------------------------------------------------------- formatting helpers


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def format_time(moment: datetime | None) -> str:
    """A moment as "2025-03-14 12:00:00 UTC", or a dash for none."""
    return _utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def format_relative(moment: datetime, now: datetime) -> str:
    """A moment seen from now: "in 10m 0s" or "5m 1s ago"."""
    delta = (_utc(moment) - now).total_seconds()
    return f"in {format_age(delta)}" if delta > 0 else f"{format_age(-delta)} ago"


def format_age_since(moment: datetime, now: datetime) -> str:
    """How long ago a moment was, in its two largest units."""
    return format_age((now - _utc(moment)).total_seconds())


def format_duration(started: datetime, finished: datetime) -> str:
    """How long a run took, in seconds: "0.12 s"."""
    return f"{(finished - started).total_seconds():.2f} s"


def format_counts(counts: Mapping[str, int]) -> str:
    """A reconciler run's counts by outcome: "expired 1 · finalized 2", or a dash for none."""
    if not counts:
        return "—"
    return " · ".join(f"{key} {value}" for key, value in sorted(counts.items()))


def _iso(moment: datetime) -> str:
    return _utc(moment).isoformat()


def _hour_label(moment: datetime) -> str:
    return _utc(moment).strftime("%H:00")


def _hour_utc(moment: datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%d %H:00 UTC")


def _thousands(value: int) -> str:
    return f"{value:,}"


def _coordinate(value: float) -> str:
    return f"{value:.1f}"


# ---------------------------------------------------------------- templates


@functools.cache
def _environment() -> jinja2.Environment:
    """The one template environment, made on first use: it caches compiled templates."""
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("broker.ops", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the render, not blanks out
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        age=format_age,
        age_since=format_age_since,
        bytes=format_bytes,
        coordinate=_coordinate,
        counts=format_counts,
        duration=format_duration,
        hour_label=_hour_label,
        hour_utc=_hour_utc,
        iso=_iso,
        relative=format_relative,
        thousands=_thousands,
        time=format_time,
    )
    environment.globals.update(refresh_seconds=REFRESH_SECONDS)
    return environment


@dataclass(frozen=True, slots=True)
class Stylesheet:
    """The pages' stylesheet and a short hash of it, which versions its URL."""

    text: str
    version: str


@functools.cache
def stylesheet() -> Stylesheet:
    """static/ops.css, read once."""
    text = (resources.files("broker.ops") / "static" / STYLESHEET).read_text("utf-8")
    return Stylesheet(text, hashlib.sha256(text.encode()).hexdigest()[:16])


def stylesheet_url(ops_path: str) -> str:
    """Where the pages link the stylesheet; the version changes with its content."""
    return f"{ops_path}/static/{STYLESHEET}?v={stylesheet().version}"


# ---------------------------------------------------------------- counts


@dataclass(frozen=True, slots=True)
class StatusTotal:
    status: UploadStatus
    uploads: int
    bytes: int


def status_totals(by_status_and_policy: Sequence[StatusPolicyCount]) -> list[StatusTotal]:
    """Uploads and bytes per status, summed over policies; every status is present."""
    totals = {status: (0, 0) for status in UploadStatus}
    for row in by_status_and_policy:
        count, size = totals[row.status]
        totals[row.status] = (count + row.uploads, size + row.bytes)
    return [StatusTotal(status, count, size) for status, (count, size) in totals.items()]


# ---------------------------------------------------------------- chart


@dataclass(frozen=True, slots=True)
class Tick:
    value: int
    y: float


@dataclass(frozen=True, slots=True)
class Bar:
    series: str  # "created" or "finalized": the bar's class and its legend entry
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class HourColumn:
    hour: datetime
    created: int
    finalized: int
    x: float
    width: float
    bars: list[Bar]
    label_x: float | None  # where the hour's label goes; None for unlabelled hours


@dataclass(frozen=True, slots=True)
class Chart:
    """Where everything in the hourly chart goes, in SVG user units."""

    width: int
    height: int
    left: int
    right: int
    top: int
    plot_height: int
    base: int
    ticks: list[Tick]
    columns: list[HourColumn]
    created: int
    finalized: int


def _axis_step(peak: int) -> int:
    """An integer tick step of 1, 2 or 5 times a power of ten giving about four ticks."""
    rough = max(1.0, peak / 4)
    power = 10 ** math.floor(math.log10(rough))
    for factor in (1, 2, 5, 10):
        if factor * power >= rough:
            return int(factor * power)
    raise AssertionError("unreachable")


def chart_geometry(hourly: Sequence[HourlyCount]) -> Chart:
    """Created and finalized uploads per hour as bars, with a y axis of round ticks."""
    peak = max([h.created for h in hourly] + [h.finalized for h in hourly] + [0])
    step = _axis_step(peak)
    top = max(step, step * math.ceil(peak / step))
    plot_width = CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT
    plot_height = CHART_HEIGHT - PLOT_TOP - PLOT_BOTTOM
    base = PLOT_TOP + plot_height
    ticks = [Tick(tick, base - plot_height * tick / top) for tick in range(0, top + 1, step)]
    slot = plot_width / max(1, len(hourly))
    bar_width = max(1.0, slot * 0.36)
    columns = []
    for index, hour in enumerate(hourly):
        x = PLOT_LEFT + index * slot
        series = (("created", hour.created), ("finalized", hour.finalized))
        bars = []
        for offset, (name, value) in enumerate(series):
            height = plot_height * value / top
            left = x + slot * 0.12 + offset * bar_width
            bars.append(Bar(name, value, left, base - height, bar_width, height))
        labelled = index % 3 == 0 or index == len(hourly) - 1
        columns.append(
            HourColumn(
                hour=hour.hour,
                created=hour.created,
                finalized=hour.finalized,
                x=x,
                width=slot,
                bars=bars,
                label_x=x + slot / 2 if labelled else None,
            )
        )
    return Chart(
        width=CHART_WIDTH,
        height=CHART_HEIGHT,
        left=PLOT_LEFT,
        right=CHART_WIDTH - PLOT_RIGHT,
        top=PLOT_TOP,
        plot_height=plot_height,
        base=base,
        ticks=ticks,
        columns=columns,
        created=sum(h.created for h in hourly),
        finalized=sum(h.finalized for h in hourly),
    )


# ---------------------------------------------------------------- pages


def _render(template: str, ops_path: str, **context: object) -> str:
    page = _environment().get_template(template)
    return page.render(context, stylesheet_url=stylesheet_url(ops_path), ops_path=ops_path)


@dataclass(frozen=True, slots=True)
class Search:
    """What the page's search box asked for, and the newest uploads it found."""

    text: str
    uploads: Sequence[Upload]
    more: bool  # more uploads match than are shown
    refused: bool = False  # the text cannot be searched for (domain.model.SEARCH_RULE)


def render_ops_page(
    stats: Stats,
    pending_uploads: Sequence[Upload],
    now: datetime,
    ops_path: str = "/ops",
    search: Search | None = None,
    deliveries: DeliveriesOverview | None = None,
    downloads: Sequence[DownloadRecord] | None = None,
) -> str:
    """The whole operators' page for `Admin.stats()` and the oldest pending uploads, with
    the results of a filename search when one was asked for, and the apps' webhook
    deliveries (`AppWebhooks.overview()`) and the latest downloads (`DownloadAudit.latest()`)
    when given.

    `ops_path` is where the page is served (under a proxy's root path, say): the page links
    its stylesheet there, and the search box sends its form there.
    """
    now = _utc(now)
    return _render(
        "ops.html",
        ops_path,
        now=now,
        stats=stats,
        totals=status_totals(stats.by_status_and_policy),
        pending_uploads=pending_uploads,
        total_pending=max(stats.pending.pending, len(pending_uploads)),
        stuck_shown=sum(upload.is_stuck(now) for upload in pending_uploads),
        chart=chart_geometry(stats.hourly),
        search=search,
        deliveries=deliveries,
        downloads=downloads,
    )


def render_sign_in_page(reason: str, ops_path: str = "/ops") -> str:
    """The 401 page: why the request was refused (plain text) and how to sign in."""
    return _render("sign_in.html", ops_path, reason=reason)


def render_admin_required_page(subject: str, ops_path: str = "/ops") -> str:
    """The 403 page: whose token was valid but not an admin's, and how to get one."""
    return _render("admin_required.html", ops_path, subject=subject)
